-- 005_ack_batch.sql — poll acks and delivered receipts, one call per flush.
--
-- natter-api records each poll's `since` in memory (api/chat/acks.c) and
-- flushes every device that moved in ONE transaction that calls this
-- function once:
--   1. each device's acked_seq moves forward to its newest `since` (rows
--      locked in (user, device) order);
--   2. per (chat, member) the newest message that the acked inbox ranges
--      cover moves the member's last_delivered_seq forward (chat_members rows
--      locked in (chat, user) order, as every writer of chat_members does;
--      only rows that move are locked);
--   3. ONE `receipt` (kind delivered) per (chat, sender) whose messages a
--      moved marker newly covers: `seq` the highest delivered seq, `user_id`
--      the member who reached it, `members` every member whose marker moved
--      over the sender's messages in this flush with their new seq, written
--      by natter_inbox_append (senders locked in ascending id order).
-- What the acked ranges hold usually comes from natter-api's memory (the
-- events its polls answered, api/realtime/hub.h): per device, hint_from says
-- that the hints list every message event of the user's inbox in
-- (hint_from, since] as (user, inbox seq, chat, message seq, sender; sender 0
-- for a system message); -1 when it has none. A device whose acked_seq is
-- below hint_from (an ack that was lost) and every device without hints read
-- their range from the inbox and the messages instead.
-- Returns the inbox rows written, for the wake-ups that carry them: user, seq,
-- chat, the event's data and its created_at (RFC 3339, UTC, milliseconds).
-- natter_inbox_append: appends events to users' inboxes — the arrays hold,
-- per event, its recipient, chat and payload; every event gets the type
-- etype. The recipients are locked in ascending id order (the global lock
-- order) and each one's events numbered on top of its inbox_seq, in array
-- order. Returns the rows written, for the wake-ups that carry them: user,
-- seq, chat, the event's data and its created_at (RFC 3339, UTC, ms).
CREATE FUNCTION natter_inbox_append(to_user bigint[], to_chat bigint[], payloads jsonb[], etype text)
RETURNS TABLE (woken_user bigint, woken_seq bigint, woken_chat bigint, woken_data text, woken_at text)
LANGUAGE sql AS $$
    WITH e AS (SELECT * FROM unnest(to_user, to_chat, payloads) WITH ORDINALITY AS e(u, chat, payload, k)),
         l AS MATERIALIZED (SELECT u.id, u.inbox_seq FROM users u WHERE u.id IN (SELECT e.u FROM e)
                             ORDER BY u.id FOR NO KEY UPDATE),
         n AS (SELECT e.u, e.chat, e.payload, l.inbox_seq + row_number() OVER (PARTITION BY e.u ORDER BY e.k) AS seq
                 FROM e JOIN l ON l.id = e.u),
         bump AS (UPDATE users u SET inbox_seq = t.top
                    FROM (SELECT n.u, max(n.seq) AS top FROM n GROUP BY n.u) t WHERE u.id = t.u),
         ins AS (INSERT INTO inbox (user_id, seq, type, chat_id, payload)
                 SELECT n.u, n.seq, etype, n.chat, n.payload FROM n
                 RETURNING inbox.user_id, inbox.seq, inbox.chat_id, inbox.payload::text AS data,
                           to_char(inbox.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS at)
    SELECT ins.user_id, ins.seq, ins.chat_id, ins.data, ins.at FROM ins
$$;

CREATE FUNCTION natter_ack_batch(acks_user bigint[], acks_device bigint[], acks_since bigint[],
                                 acks_hint_from bigint[], h_user bigint[], h_seq bigint[], h_chat bigint[],
                                 h_mseq bigint[], h_sender bigint[])
RETURNS TABLE (woken_user bigint, woken_seq bigint, woken_chat bigint, woken_data text, woken_at text)
LANGUAGE plpgsql AS $$
DECLARE
    mv_user bigint[];
    mv_from bigint[];
    mv_to bigint[];
    mv_hint bigint[];
    dl_chat bigint[];
    dl_user bigint[];
    dl_from bigint[];
    dl_to bigint[];
    dl_hinted boolean[];
    out_user bigint[];
    out_chat bigint[];
    out_payload jsonb[];
BEGIN
    WITH a AS (SELECT x.u, x.d, max(x.s) AS s, max(x.hf) AS hf
                 FROM unnest(acks_user, acks_device, acks_since, acks_hint_from) AS x(u, d, s, hf)
                GROUP BY x.u, x.d),
         old AS MATERIALIZED (
             SELECT dv.user_id, dv.id, dv.acked_seq, a.s, a.hf FROM devices dv JOIN a ON dv.user_id = a.u AND dv.id = a.d
              ORDER BY dv.user_id, dv.id FOR NO KEY UPDATE OF dv),
         up AS (UPDATE devices dv SET acked_seq = old.s FROM old
                 WHERE dv.user_id = old.user_id AND dv.id = old.id AND old.acked_seq < old.s
                RETURNING dv.user_id, old.acked_seq AS f, old.s AS t, old.hf)
    SELECT array_agg(up.user_id), array_agg(up.f), array_agg(up.t), array_agg(up.hf)
      INTO mv_user, mv_from, mv_to, mv_hint FROM up;
    IF mv_user IS NULL THEN
        RETURN;
    END IF;

    WITH m AS (SELECT x.u, x.f, x.t, x.hf >= 0 AND x.f >= x.hf AS hinted
                 FROM unnest(mv_user, mv_from, mv_to, mv_hint) AS x(u, f, t, hf)),
         h AS (SELECT * FROM unnest(h_user, h_seq, h_chat, h_mseq, h_sender) AS h(u, s, chat, mseq, sender)),
         r AS (SELECT h.chat AS chat_id, m.u AS user_id, max(h.mseq) AS upto
                 FROM m JOIN h ON h.u = m.u AND h.s > m.f AND h.s <= m.t
                WHERE m.hinted
                GROUP BY h.chat, m.u
               UNION ALL
               SELECT i.chat_id, i.user_id, max((i.payload -> 'message' ->> 'seq')::bigint)
                 FROM m JOIN inbox i ON i.user_id = m.u AND i.seq > m.f AND i.seq <= m.t
                WHERE NOT m.hinted AND i.type = 'message' AND i.chat_id IS NOT NULL
                GROUP BY i.chat_id, i.user_id),
         rr AS (SELECT r.chat_id, r.user_id, max(r.upto) AS upto FROM r GROUP BY r.chat_id, r.user_id),
         old AS MATERIALIZED (
             SELECT cm.chat_id, cm.user_id, cm.last_delivered_seq AS f, rr.upto
               FROM chat_members cm JOIN rr ON cm.chat_id = rr.chat_id AND cm.user_id = rr.user_id
              WHERE cm.last_delivered_seq < rr.upto
              ORDER BY cm.chat_id, cm.user_id FOR NO KEY UPDATE OF cm),
         up AS (UPDATE chat_members cm SET last_delivered_seq = old.upto FROM old
                 WHERE cm.chat_id = old.chat_id AND cm.user_id = old.user_id AND old.f < old.upto
                RETURNING cm.chat_id, cm.user_id, old.f, old.upto)
    SELECT array_agg(up.chat_id), array_agg(up.user_id), array_agg(up.f), array_agg(up.upto),
           array_agg(NOT EXISTS (SELECT 1 FROM m WHERE m.u = up.user_id AND NOT m.hinted))
      INTO dl_chat, dl_user, dl_from, dl_to, dl_hinted FROM up;
    IF dl_chat IS NULL THEN
        RETURN;
    END IF;

    -- the senders of the newly delivered messages: from the hints when every
    -- acked range of the member came with them (they then hold every message
    -- the move covers), else from the messages
    WITH mv AS (SELECT * FROM unnest(dl_chat, dl_user, dl_from, dl_to, dl_hinted) AS x(chat_id, member, f, t, hinted)),
         h AS (SELECT * FROM unnest(h_user, h_seq, h_chat, h_mseq, h_sender) AS h(u, s, chat, mseq, sender)),
         s AS (SELECT DISTINCT mv.chat_id, mv.member, mv.t, h.sender AS sender_id
                 FROM mv JOIN h ON h.u = mv.member AND h.chat = mv.chat_id AND h.mseq > mv.f AND h.mseq <= mv.t
                WHERE mv.hinted AND h.sender > 0 AND h.sender <> mv.member
               UNION
               SELECT DISTINCT mv.chat_id, mv.member, mv.t, msg.sender_id
                 FROM mv JOIN messages msg ON msg.chat_id = mv.chat_id AND msg.seq > mv.f AND msg.seq <= mv.t
                WHERE NOT mv.hinted AND msg.kind = 'text' AND msg.sender_id IS NOT NULL
                  AND msg.sender_id <> mv.member),
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
