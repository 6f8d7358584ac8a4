-- 013_push_providers.sql — what each push covered, and push acks.
--
-- push_covers: one row per push flush of a user (the worker writes it before
-- the flush's first provider call): for each chat the push counted, the
-- newest message seq it covered. A push id is "<flush_id>-<device id>"; a
-- phone that got the push acknowledges it with
-- POST /v1/devices/{id}/push-ack, and natter-api moves the user's delivered
-- markers over exactly these messages (natter_push_ack_batch). Silent badge
-- updates have a row with empty arrays (their ack delivers nothing). Keyed by
-- user_id (its future shard key); the worker deletes rows older than
-- NATTER_PUSH_TTL plus a day. New table only: nothing existing changes.
CREATE TABLE push_covers (
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    flush_id   text        NOT NULL CHECK (flush_id ~ '^[0-9a-f]{1,64}$'),
    chat_ids   bigint[]    NOT NULL,
    seqs       bigint[]    NOT NULL CHECK (cardinality(seqs) = cardinality(chat_ids) AND cardinality(seqs) <= 256),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, flush_id)
);
CREATE INDEX push_covers_created_idx ON push_covers (created_at);

-- natter_push_ack_batch: the acks of pushes, one call per flush of natter-api's
-- ack flusher (api/chat/acks.c), in a transaction of its own after the poll
-- acks' one. Per (chat, member): the member's last_delivered_seq moves forward
-- to the newest seq an acked push covered (capped at the chat's last_seq;
-- chat_members rows locked in (chat, user) order, only rows that move), and
-- ONE `receipt` (kind delivered) per (chat, sender) whose messages a moved
-- marker newly covers — the same event natter_ack_batch writes for a poll ack
-- (migrations/005), written by natter_inbox_append (senders locked in
-- ascending id order). Returns the inbox rows written, for the wake-ups.
CREATE FUNCTION natter_push_ack_batch(p_user bigint[], p_chat bigint[], p_upto bigint[])
RETURNS TABLE (woken_user bigint, woken_seq bigint, woken_chat bigint, woken_data text, woken_at text)
LANGUAGE plpgsql AS $$
DECLARE
    dl_chat bigint[];
    dl_user bigint[];
    dl_from bigint[];
    dl_to bigint[];
    out_user bigint[];
    out_chat bigint[];
    out_payload jsonb[];
BEGIN
    WITH rr AS (SELECT x.chat_id, x.user_id, max(x.upto) AS upto
                  FROM unnest(p_chat, p_user, p_upto) AS x(chat_id, user_id, upto)
                 GROUP BY x.chat_id, x.user_id),
         old AS MATERIALIZED (
             SELECT cm.chat_id, cm.user_id, cm.last_delivered_seq AS f, least(rr.upto, c.last_seq) AS upto
               FROM chat_members cm
               JOIN rr ON cm.chat_id = rr.chat_id AND cm.user_id = rr.user_id
               JOIN chats c ON c.id = cm.chat_id
              WHERE cm.last_delivered_seq < least(rr.upto, c.last_seq)
              ORDER BY cm.chat_id, cm.user_id FOR NO KEY UPDATE OF cm),
         up AS (UPDATE chat_members cm SET last_delivered_seq = old.upto FROM old
                 WHERE cm.chat_id = old.chat_id AND cm.user_id = old.user_id AND old.f < old.upto
                RETURNING cm.chat_id, cm.user_id, old.f, old.upto)
    SELECT array_agg(up.chat_id), array_agg(up.user_id), array_agg(up.f), array_agg(up.upto)
      INTO dl_chat, dl_user, dl_from, dl_to FROM up;
    IF dl_chat IS NULL THEN
        RETURN;
    END IF;

    WITH mv AS (SELECT * FROM unnest(dl_chat, dl_user, dl_from, dl_to) AS x(chat_id, member, f, t)),
         s AS (SELECT DISTINCT mv.chat_id, mv.member, mv.t, msg.sender_id
                 FROM mv JOIN messages msg ON msg.chat_id = mv.chat_id AND msg.seq > mv.f AND msg.seq <= mv.t
                WHERE msg.kind = 'text' AND msg.sender_id IS NOT NULL AND msg.sender_id <> mv.member),
         g AS (SELECT s.chat_id, s.sender_id, max(s.t) AS top,
                      (array_agg(s.member ORDER BY s.t DESC, s.member))[1] AS top_member,
                      jsonb_agg(jsonb_build_object('user_id', s.member, 'seq', s.t) ORDER BY s.member) AS members
                 FROM s GROUP BY s.chat_id, s.sender_id),
         r AS (SELECT g.sender_id, g.chat_id,
                      jsonb_build_object('chat_id', g.chat_id, 'user_id', g.top_member, 'kind', 'delivered',
                                         'seq', g.top, 'members', g.members) AS payload
                 FROM g)
    SELECT array_agg(r.sender_id ORDER BY r.sender_id, r.chat_id), array_agg(r.chat_id ORDER BY r.sender_id, r.chat_id),
           array_agg(r.payload ORDER BY r.sender_id, r.chat_id)
      INTO out_user, out_chat, out_payload FROM r;
    IF out_user IS NOT NULL THEN
        RETURN QUERY SELECT * FROM natter_inbox_append(out_user, out_chat, out_payload, 'receipt');
    END IF;
END
$$;
