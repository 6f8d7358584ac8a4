-- 006_read_batch.sql — read markers, one call per batch.
--
-- natter-api's read-marker pipeline (api/chat/readmarks.c) writes every
-- POST /v1/chats/{id}/read that queued while its previous batch committed in
-- ONE transaction that calls this function once (then reads the unread
-- counts of the batch in one query, then COMMIT):
--   1. per request (chat, user, seq), in arrival order, its status:
--      'not_member' (no such member row), 'beyond' (seq past the chat's
--      newest message) or 'ok';
--   2. per (chat, user) of the 'ok' requests the read marker moves forward to
--      the highest seq asked (and the delivered marker with it); member rows
--      are locked in (chat, user) order, as every writer of chat_members does;
--   3. per marker that moved, one `receipt` (kind read) to the reader (their
--      other devices) and to the senders of the messages the move newly
--      covers, written by natter_inbox_append (migrations/005: users locked
--      in ascending id order).
-- Returns one row per request (i = its 1-based position, status) and one row
-- per inbox row written (i NULL; user, seq, chat, data, created_at as
-- RFC 3339): the wake-ups, which carry the events.
CREATE FUNCTION natter_read_batch(r_chat bigint[], r_user bigint[], r_seq bigint[])
RETURNS TABLE (i integer, status text, w_user bigint, w_seq bigint, w_chat bigint, w_data text, w_at text)
LANGUAGE plpgsql AS $$
DECLARE
    st_i integer[];
    st_s text[];
    ok_chat bigint[];
    ok_user bigint[];
    ok_seq bigint[];
    mv_chat bigint[];
    mv_user bigint[];
    mv_from bigint[];
    mv_to bigint[];
    out_user bigint[];
    out_chat bigint[];
    out_payload jsonb[];
BEGIN
    WITH x AS (SELECT v.k::integer AS k, v.c, v.u, v.s,
                      CASE WHEN cm.user_id IS NULL THEN 'not_member'
                           WHEN v.s > ch.last_seq THEN 'beyond'
                           ELSE 'ok' END AS st
                 FROM unnest(r_chat, r_user, r_seq) WITH ORDINALITY AS v(c, u, s, k)
                 LEFT JOIN chat_members cm ON cm.chat_id = v.c AND cm.user_id = v.u
                 LEFT JOIN chats ch ON ch.id = v.c)
    SELECT array_agg(x.k ORDER BY x.k), array_agg(x.st ORDER BY x.k),
           array_agg(x.c) FILTER (WHERE x.st = 'ok'), array_agg(x.u) FILTER (WHERE x.st = 'ok'),
           array_agg(x.s) FILTER (WHERE x.st = 'ok')
      INTO st_i, st_s, ok_chat, ok_user, ok_seq FROM x;
    RETURN QUERY SELECT t.k, t.st, NULL::bigint, NULL::bigint, NULL::bigint, NULL::text, NULL::text
                   FROM unnest(st_i, st_s) AS t(k, st);
    IF ok_chat IS NULL THEN
        RETURN;
    END IF;

    WITH a AS (SELECT v.c, v.u, max(v.s) AS s FROM unnest(ok_chat, ok_user, ok_seq) AS v(c, u, s)
                GROUP BY v.c, v.u),
         old AS MATERIALIZED (
             SELECT cm.chat_id, cm.user_id, cm.last_read_seq AS f, a.s
               FROM chat_members cm JOIN a ON cm.chat_id = a.c AND cm.user_id = a.u
              ORDER BY cm.chat_id, cm.user_id FOR NO KEY UPDATE OF cm),
         up AS (UPDATE chat_members cm
                   SET last_read_seq = old.s, last_delivered_seq = GREATEST(cm.last_delivered_seq, old.s)
                  FROM old
                 WHERE cm.chat_id = old.chat_id AND cm.user_id = old.user_id AND old.f < old.s
                RETURNING cm.chat_id, cm.user_id, old.f, old.s)
    SELECT array_agg(up.chat_id), array_agg(up.user_id), array_agg(up.f), array_agg(up.s)
      INTO mv_chat, mv_user, mv_from, mv_to FROM up;
    IF mv_chat IS NULL THEN
        RETURN;
    END IF;

    WITH mv AS (SELECT * FROM unnest(mv_chat, mv_user, mv_from, mv_to) AS x(chat_id, reader, f, t)),
         rcpt AS (SELECT mv.chat_id, mv.reader, mv.t, mv.reader AS to_user FROM mv
                  UNION
                  SELECT mv.chat_id, mv.reader, mv.t, msg.sender_id
                    FROM mv JOIN messages msg ON msg.chat_id = mv.chat_id AND msg.seq > mv.f AND msg.seq <= mv.t
                   WHERE msg.kind = 'text' AND msg.sender_id IS NOT NULL AND msg.sender_id <> mv.reader),
         r AS (SELECT rcpt.to_user, rcpt.chat_id,
                      jsonb_build_object('chat_id', rcpt.chat_id, 'user_id', rcpt.reader, 'kind', 'read',
                                         'seq', rcpt.t) AS payload,
                      rcpt.reader
                 FROM rcpt)
    SELECT array_agg(r.to_user ORDER BY r.to_user, r.chat_id, r.reader),
           array_agg(r.chat_id ORDER BY r.to_user, r.chat_id, r.reader),
           array_agg(r.payload ORDER BY r.to_user, r.chat_id, r.reader)
      INTO out_user, out_chat, out_payload FROM r;
    IF out_user IS NOT NULL THEN
        RETURN QUERY SELECT NULL::integer, NULL::text, w.woken_user, w.woken_seq, w.woken_chat, w.woken_data,
                            w.woken_at
                       FROM natter_inbox_append(out_user, out_chat, out_payload, 'receipt') w;
    END IF;
END
$$;
