/*
 * chat_sql.h — SQL fragments of the chat domain that natter-api and
 * natter-worker both need, so that "unread" means one thing everywhere (the
 * chat list, the read marker's answer, the push badge).
 *
 * Each expects the member's row as `cm` (chat_members) in the enclosing query.
 */
#ifndef NATTER_CHAT_SQL_H
#define NATTER_CHAT_SQL_H

/* a message m of chat CHAT that cm has not read: visible to cm (after they joined), a
 * live text message, from someone else. CHAT is cm.chat_id, or in a statement about
 * one chat the parameter holding its id: then with Citus the subqueries below, and
 * the statement, stay on that chat's shard (a subquery that reaches the distribution
 * column only through the outer row makes Citus run the statement on every shard). */
#define CHAT_SQL_UNREAD_WHERE_IN(CHAT)                                            \
    "m.chat_id = " CHAT                                                           \
    " AND m.seq > cm.last_read_seq AND m.seq > cm.joined_seq AND m.kind = 'text'" \
    " AND m.deleted_at IS NULL AND m.sender_id <> cm.user_id"
#define CHAT_SQL_UNREAD_WHERE CHAT_SQL_UNREAD_WHERE_IN("cm.chat_id")

/* cm's unread messages in its chat */
#define CHAT_SQL_UNREAD_IN(CHAT) "(SELECT count(*) FROM messages m WHERE " CHAT_SQL_UNREAD_WHERE_IN(CHAT) ")"
#define CHAT_SQL_UNREAD CHAT_SQL_UNREAD_IN("cm.chat_id")
/* those of them that mention cm's user */
#define CHAT_SQL_UNREAD_MENTIONS_IN(CHAT) \
    "(SELECT count(*) FROM messages m WHERE " CHAT_SQL_UNREAD_WHERE_IN(CHAT) " AND cm.user_id = ANY (m.mentions))"
#define CHAT_SQL_UNREAD_MENTIONS CHAT_SQL_UNREAD_MENTIONS_IN("cm.chat_id")

#endif
