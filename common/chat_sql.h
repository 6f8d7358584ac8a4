/*
 * chat_sql.h — SQL fragments of the chat domain that natter-api and
 * natter-worker both need, so that "unread" means one thing everywhere (the
 * chat list, the read marker's answer, the push badge).
 *
 * Each expects the member's row as `cm` (chat_members) in the enclosing query.
 */
#ifndef NATTER_CHAT_SQL_H
#define NATTER_CHAT_SQL_H

/* a message m that cm has not read: visible to cm (after they joined), a live
 * text message, from someone else */
#define CHAT_SQL_UNREAD_WHERE                                                                           \
    "m.chat_id = cm.chat_id AND m.seq > cm.last_read_seq AND m.seq > cm.joined_seq AND m.kind = 'text'" \
    " AND m.deleted_at IS NULL AND m.sender_id <> cm.user_id"

/* cm's unread messages in its chat */
#define CHAT_SQL_UNREAD "(SELECT count(*) FROM messages m WHERE " CHAT_SQL_UNREAD_WHERE ")"
/* those of them that mention cm's user */
#define CHAT_SQL_UNREAD_MENTIONS \
    "(SELECT count(*) FROM messages m WHERE " CHAT_SQL_UNREAD_WHERE " AND cm.user_id = ANY (m.mentions))"

#endif
