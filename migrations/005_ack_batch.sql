-- 005_ack_batch.sql — poll acks and delivered receipts, one call per flush.
--
-- natter-api records each poll's `since` in memory (api/chat/acks.c) and
-- flushes every device that moved in ONE transaction that calls this
-- function once:
--   1. each device's acked_seq moves forward to its newest `since` (rows
--      locked in (user, device) order);
--   2. per (chat, member) the newest message that the acked inbox ranges
--      cover moves the member's last_delivered_seq forward (chat_members rows
--      locked in (chat, user) order, as every writer of chat_members does);
--   3. ONE `receipt` (kind delivered) per (chat, sender) whose messages a
--      moved marker newly covers: `seq` the highest delivered seq, `user_id`
--      the member who reached it, `members` every member whose marker moved
--      over the sender's messages in this flush with their new seq. The
--      senders are locked in ascending id order (the global order) and their
--      inbox rows numbered on top of inbox_seq.
-- Returns the inbox rows written, for the wake-ups that carry them: user, seq,
-- chat, the event's data and its created_at (RFC 3339, UTC, milliseconds).
CREATE FUNCTION natter_ack_batch(acks_user bigint[], acks_device bigint[], acks_since bigint[])
RETURNS TABLE (woken_user bigint, woken_seq bigint, woken_chat bigint, woken_data text, woken_at text)
LANGUAGE plpgsql AS $$
DECLARE
    mv_user bigint[];
    mv_from bigint[];
    mv_to bigint[];
    dl_chat bigint[];
    dl_user bigint[];
    dl_from bigint[];
    dl_to bigint[];
    out_user bigint[];
    out_seq bigint[];
    out_chat bigint[];
    out_data text[];
    out_at text[];
BEGIN
    WITH a AS (SELECT x.u, x.d, max(x.s) AS s FROM unnest(acks_user, acks_device, acks_since) AS x(u, d, s)
                GROUP BY x.u, x.d),
         old AS MATERIALIZED (
             SELECT dv.user_id, dv.id, dv.acked_seq, a.s FROM devices dv JOIN a ON dv.user_id = a.u AND dv.id = a.d
              ORDER BY dv.user_id, dv.id FOR NO KEY UPDATE OF dv),
         up AS (UPDATE devices dv SET acked_seq = old.s FROM old
                 WHERE dv.user_id = old.user_id AND dv.id = old.id AND old.acked_seq < old.s
                RETURNING dv.user_id, old.acked_seq AS f, old.s AS t)
    SELECT array_agg(up.user_id), array_agg(up.f), array_agg(up.t) INTO mv_user, mv_from, mv_to FROM up;
    IF mv_user IS NULL THEN
        RETURN;
    END IF;

    WITH r AS (SELECT i.chat_id, i.user_id, max((i.payload -> 'message' ->> 'seq')::bigint) AS upto
                 FROM unnest(mv_user, mv_from, mv_to) AS m(u, f, t)
                 JOIN inbox i ON i.user_id = m.u AND i.seq > m.f AND i.seq <= m.t
                WHERE i.type = 'message' AND i.chat_id IS NOT NULL
                GROUP BY i.chat_id, i.user_id),
         old AS MATERIALIZED (
             SELECT cm.chat_id, cm.user_id, cm.last_delivered_seq AS f, r.upto
               FROM chat_members cm JOIN r ON cm.chat_id = r.chat_id AND cm.user_id = r.user_id
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
         l AS MATERIALIZED (SELECT u.id, u.inbox_seq FROM users u WHERE u.id IN (SELECT g.sender_id FROM g)
                             ORDER BY u.id FOR NO KEY UPDATE),
         n AS (SELECT g.chat_id, g.sender_id, g.top, g.top_member, g.members,
                      l.inbox_seq + row_number() OVER (PARTITION BY g.sender_id ORDER BY g.chat_id) AS seq
                 FROM g JOIN l ON l.id = g.sender_id),
         bump AS (UPDATE users u SET inbox_seq = t.top
                    FROM (SELECT n.sender_id, max(n.seq) AS top FROM n GROUP BY n.sender_id) t
                   WHERE u.id = t.sender_id),
         ins AS (INSERT INTO inbox (user_id, seq, type, chat_id, payload)
                 SELECT n.sender_id, n.seq, 'receipt', n.chat_id,
                        jsonb_build_object('chat_id', n.chat_id, 'user_id', n.top_member, 'kind', 'delivered',
                                           'seq', n.top, 'members', n.members)
                   FROM n
                 RETURNING inbox.user_id, inbox.seq, inbox.chat_id, inbox.payload::text AS data,
                           to_char(inbox.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS at)
    SELECT array_agg(ins.user_id), array_agg(ins.seq), array_agg(ins.chat_id), array_agg(ins.data),
           array_agg(ins.at)
      INTO out_user, out_seq, out_chat, out_data, out_at FROM ins;
    IF out_user IS NOT NULL THEN
        RETURN QUERY SELECT * FROM unnest(out_user, out_seq, out_chat, out_data, out_at);
    END IF;
END
$$;
