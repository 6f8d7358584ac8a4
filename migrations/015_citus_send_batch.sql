-- 015_citus_send_batch.sql — the send batch in the shape a Citus cluster runs (issue 12).
--
-- natter_send_batch_set (007) and natter_send_batch (004) lock the batch's chat rows with
-- one ordered SELECT … FOR NO KEY UPDATE over several chats, and write several chats in
-- one statement. Citus refuses row locks that span shards, and the chats of a batch live
-- on different shards. natter-api uses these functions instead when it runs on Citus
-- (db_citus(), api/chat/sends.c); on a single PostgreSQL the older ones stay (fewer
-- statements). The results are the same rows, in the same lock order: chat rows in
-- ascending id order, one chat at a time, then each chat's senders' member rows in user
-- order. Every statement below names one chat, so Citus routes it to that chat's shard;
-- a statement over several chats or users says `= ANY (their ids)`, so that Citus visits
-- only their shards rather than all of them.
-- Each function plans its statements with their parameters' values (force_custom_plan):
-- Citus cannot plan most of them generically, and PL/pgSQL would switch to generic plans
-- after five calls.

-- natter_send_chat: natter_send_batch_set for the sends of one chat (every element's
-- chat_id is chat; others are ignored and get no row). Same statuses: 'existing',
-- 'not_member' (also when the chat does not exist), 'new'.
CREATE FUNCTION natter_send_chat(chat bigint, batch jsonb)
RETURNS TABLE (i integer, status text, seq bigint, body_sha256 text)
LANGUAGE plpgsql SET plan_cache_mode TO force_custom_plan AS $$
#variable_conflict use_column
DECLARE
    top bigint;
    r_i integer[];
    r_status text[];
    r_seq bigint[];
    r_hash text[];
    n_i integer[];
    n_sender bigint[];
    n_seq bigint[];
BEGIN
    SELECT c.last_seq INTO top FROM chats c WHERE c.id = chat FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT x.i, 'not_member'::text, NULL::bigint, NULL::text
                       FROM jsonb_to_recordset(batch) AS x(i integer, chat_id bigint) WHERE x.chat_id = chat;
        RETURN;
    END IF;

    -- a new statement: its snapshot sees every batch that committed before our lock was granted
    WITH x AS (SELECT * FROM jsonb_to_recordset(batch)
                 AS x(i integer, chat_id bigint, sender_id bigint, client_msg_id uuid, hash text)
                WHERE x.chat_id = chat),
         cls AS (SELECT x.i, x.sender_id, x.client_msg_id, x.hash, m.seq AS stored_seq, m.body_sha256 AS stored_hash,
                        cm.user_id IS NOT NULL AS member,
                        row_number() OVER (PARTITION BY x.sender_id, x.client_msg_id ORDER BY x.i) AS nth
                   FROM x
                   LEFT JOIN messages m
                     ON m.chat_id = chat AND m.sender_id = x.sender_id AND m.client_msg_id = x.client_msg_id
                   LEFT JOIN chat_members cm ON cm.chat_id = chat AND cm.user_id = x.sender_id),
         nw AS (SELECT cls.i, cls.sender_id, cls.client_msg_id, cls.hash,
                       top + row_number() OVER (ORDER BY cls.i) AS new_seq
                  FROM cls WHERE cls.stored_seq IS NULL AND cls.member AND cls.nth = 1),
         res AS (SELECT cls.i,
                        CASE WHEN cls.stored_seq IS NOT NULL THEN 'existing'
                             WHEN NOT cls.member THEN 'not_member'
                             WHEN cls.nth = 1 THEN 'new'
                             ELSE 'existing' END AS st,
                        coalesce(cls.stored_seq, f.new_seq) AS sq,
                        coalesce(cls.stored_hash, f.hash) AS hs
                   FROM cls LEFT JOIN nw f ON f.sender_id = cls.sender_id AND f.client_msg_id = cls.client_msg_id)
    SELECT array_agg(res.i ORDER BY res.i), array_agg(res.st ORDER BY res.i), array_agg(res.sq ORDER BY res.i),
           array_agg(res.hs ORDER BY res.i),
           (SELECT array_agg(nw.i ORDER BY nw.i) FROM nw), (SELECT array_agg(nw.sender_id ORDER BY nw.i) FROM nw),
           (SELECT array_agg(nw.new_seq ORDER BY nw.i) FROM nw)
      INTO r_i, r_status, r_seq, r_hash, n_i, n_sender, n_seq
      FROM res;

    IF n_i IS NOT NULL THEN
        UPDATE chats c SET last_seq = top + cardinality(n_i), last_message_at = now() WHERE c.id = chat;
        INSERT INTO messages (chat_id, seq, sender_id, client_msg_id, kind, body, mentions, reply_to_seq,
                              attachment_ids, body_sha256)
        SELECT chat, n.seq, x.sender_id, x.client_msg_id, 'text', x.body, coalesce(x.mentions, '{}'),
               x.reply_to_seq, coalesce(x.attachment_ids, '{}'), x.hash
          FROM unnest(n_i, n_seq) AS n(i, seq)
          JOIN jsonb_to_recordset(batch) AS x(i integer, sender_id bigint, client_msg_id uuid, body text,
                                              mentions bigint[], reply_to_seq bigint, attachment_ids uuid[],
                                              hash text) ON x.i = n.i
         ORDER BY n.seq;
        INSERT INTO push_outbox (chat_id, seq, due_at)
        SELECT chat, n.seq, now() + interval '10 seconds' FROM unnest(n_seq) AS n(seq);
        -- the senders have read their messages (natter_senders_read, one chat)
        PERFORM 1 FROM chat_members cm WHERE cm.chat_id = chat AND cm.user_id = ANY (n_sender)
          ORDER BY cm.user_id FOR NO KEY UPDATE;
        UPDATE chat_members cm
           SET last_read_seq = GREATEST(cm.last_read_seq, s.top), last_delivered_seq = GREATEST(cm.last_delivered_seq, s.top)
          FROM (SELECT v.u, max(v.q) AS top FROM unnest(n_sender, n_seq) AS v(u, q) GROUP BY v.u) s
         WHERE cm.chat_id = chat AND cm.user_id = s.u;
    END IF;
    RETURN QUERY SELECT * FROM unnest(r_i, r_status, r_seq, r_hash);
END
$$;

-- natter_send_batch_chats: the whole batch, natter_send_chat per chat in ascending chat
-- id order (the global lock order). With one_by_one, every message runs alone in a
-- subtransaction, so that one the database refuses is 'failed' (its SQLSTATE in
-- body_sha256) and leaves the others intact — natter_send_batch's fallback.
CREATE FUNCTION natter_send_batch_chats(batch jsonb, one_by_one boolean)
RETURNS TABLE (i integer, status text, seq bigint, body_sha256 text)
LANGUAGE plpgsql SET plan_cache_mode TO force_custom_plan AS $$
#variable_conflict use_column
DECLARE
    c bigint;
    e jsonb;
BEGIN
    FOR c IN SELECT DISTINCT (b ->> 'chat_id')::bigint AS id FROM jsonb_array_elements(batch) b ORDER BY id LOOP
        IF NOT one_by_one THEN
            RETURN QUERY SELECT * FROM natter_send_chat(c, batch);
            CONTINUE;
        END IF;
        FOR e IN SELECT b FROM jsonb_array_elements(batch) b WHERE (b ->> 'chat_id')::bigint = c
                  ORDER BY (b ->> 'i')::integer LOOP
            BEGIN
                RETURN QUERY SELECT * FROM natter_send_chat(c, jsonb_build_array(e));
            EXCEPTION WHEN OTHERS THEN
                RETURN QUERY SELECT (e ->> 'i')::integer, 'failed'::text, NULL::bigint, SQLSTATE::text;
            END;
        END LOOP;
    END LOOP;
END
$$;

-- Row locks on Citus: one row at a time, each a statement Citus routes to the row's shard,
-- in the global lock order (users by id; members by (chat, user); devices by (user, id)).
-- A statement that then writes many of these rows at once may visit the shards in any
-- order: the rows are held already.
CREATE FUNCTION natter_lock_users(ids bigint[]) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode TO force_custom_plan AS $$
DECLARE
    x bigint;
BEGIN
    FOR x IN SELECT DISTINCT u FROM unnest(ids) AS u ORDER BY u LOOP
        PERFORM 1 FROM users WHERE id = x FOR NO KEY UPDATE;
    END LOOP;
END
$$;

-- natter_inbox_append on Citus: the same rows written and returned.
CREATE FUNCTION natter_inbox_append_citus(to_user bigint[], to_chat bigint[], payloads jsonb[], etype text)
RETURNS TABLE (woken_user bigint, woken_seq bigint, woken_chat bigint, woken_data text, woken_at text)
LANGUAGE plpgsql SET plan_cache_mode TO force_custom_plan AS $$
DECLARE
    us bigint[];
    cs bigint[];
BEGIN
    SELECT array_agg(t.u ORDER BY t.u), array_agg(t.n ORDER BY t.u) INTO us, cs
      FROM (SELECT x.u, count(*) AS n FROM unnest(to_user) AS x(u) GROUP BY x.u) t;
    IF us IS NULL THEN
        RETURN;
    END IF;
    PERFORM natter_lock_users(us);
    -- EXECUTE: planned with the ids known, so Citus visits only their shards
    RETURN QUERY EXECUTE
        'WITH up AS (UPDATE users SET inbox_seq = inbox_seq + ($2::bigint[])[array_position($1::bigint[], id)]'
        '             WHERE id = ANY ($1::bigint[]) RETURNING id, inbox_seq),'
        '     e AS (SELECT * FROM unnest($3::bigint[], $4::bigint[], $5::jsonb[]) WITH ORDINALITY AS e(u, chat, payload, k)),'
        '     n AS (SELECT e.u, e.chat, e.payload,'
        '                  up.inbox_seq - ($2::bigint[])[array_position($1::bigint[], e.u)]'
        '                  + row_number() OVER (PARTITION BY e.u ORDER BY e.k) AS seq'
        '             FROM e JOIN up ON up.id = e.u)'
        'INSERT INTO inbox (user_id, seq, type, chat_id, payload)'
        ' SELECT n.u, n.seq, $6, n.chat, n.payload FROM n'
        ' RETURNING user_id, seq, chat_id, payload::text, natter_ts(created_at)'
        USING us, cs, to_user, to_chat, payloads, etype;
END
$$;

-- The inbox fan-out of a send batch on Citus (api/chat/sends.c's statement on a single
-- PostgreSQL): one `message` event per member per new message, each member's events in
-- the batch's order. chats[k] and ords[k] name payloads[k]'s chat and position. Returns
-- user, inbox seq, chat, the message's seq and created_at.
CREATE FUNCTION natter_fanout_citus(chats bigint[], ords integer[], payloads jsonb)
RETURNS TABLE (woken_user bigint, woken_seq bigint, woken_chat bigint, woken_mseq bigint, woken_at text)
LANGUAGE plpgsql SET plan_cache_mode TO force_custom_plan AS $$
DECLARE
    to_user bigint[];
    to_chat bigint[];
    to_payload jsonb[];
BEGIN
    EXECUTE
        'WITH b AS (SELECT c.chat_id, c.ord, p.payload'
        '             FROM unnest($1::bigint[], $2::integer[]) WITH ORDINALITY AS c(chat_id, ord, k)'
        '             JOIN jsonb_array_elements($3::jsonb) WITH ORDINALITY AS p(payload, k) USING (k)),'
        '     cm AS (SELECT chat_id, user_id FROM chat_members WHERE chat_id = ANY ($1::bigint[]))'
        'SELECT array_agg(cm.user_id ORDER BY b.ord, cm.user_id), array_agg(b.chat_id ORDER BY b.ord, cm.user_id),'
        '       array_agg(b.payload ORDER BY b.ord, cm.user_id)'
        '  FROM b JOIN cm ON cm.chat_id = b.chat_id'
        INTO to_user, to_chat, to_payload USING chats, ords, payloads;
    IF to_user IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT w.woken_user, w.woken_seq, w.woken_chat, (w.woken_data::jsonb -> 'message' ->> 'seq')::bigint,
                        w.woken_at
                   FROM natter_inbox_append_citus(to_user, to_chat, to_payload, 'message') w;
END
$$;

-- The `delivered` receipts of member markers that moved (natter_ack_batch's and
-- natter_push_ack_batch's last step, on Citus): ONE per (chat, sender) whose messages a
-- moved marker newly covers. A move is `hinted` when the hints (h_*) list every message
-- it covers; the others read their senders from the messages.
CREATE FUNCTION natter_delivered_receipts_citus(dl_chat bigint[], dl_user bigint[], dl_from bigint[], dl_to bigint[],
                                                dl_hinted boolean[], h_user bigint[], h_seq bigint[], h_chat bigint[],
                                                h_mseq bigint[], h_sender bigint[])
RETURNS TABLE (woken_user bigint, woken_seq bigint, woken_chat bigint, woken_data text, woken_at text)
LANGUAGE plpgsql SET plan_cache_mode TO force_custom_plan AS $$
DECLARE
    out_user bigint[];
    out_chat bigint[];
    out_payload jsonb[];
BEGIN
    WITH mv AS (SELECT * FROM unnest(dl_chat, dl_user, dl_from, dl_to, dl_hinted) AS x(chat_id, member, f, t, hinted)),
         h AS (SELECT * FROM unnest(h_user, h_seq, h_chat, h_mseq, h_sender) AS h(u, s, chat, mseq, sender)),
         s AS (SELECT DISTINCT mv.chat_id, mv.member, mv.t, h.sender AS sender_id
                 FROM mv JOIN h ON h.u = mv.member AND h.chat = mv.chat_id AND h.mseq > mv.f AND h.mseq <= mv.t
                WHERE mv.hinted AND h.sender > 0 AND h.sender <> mv.member
               UNION
               SELECT DISTINCT mv.chat_id, mv.member, mv.t, msg.sender_id
                 FROM mv JOIN messages msg ON msg.chat_id = mv.chat_id AND msg.seq > mv.f AND msg.seq <= mv.t
                WHERE NOT mv.hinted AND msg.kind = 'text' AND msg.sender_id IS NOT NULL
                  AND msg.sender_id <> mv.member AND msg.chat_id = ANY (dl_chat)),
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
        RETURN QUERY SELECT * FROM natter_inbox_append_citus(out_user, out_chat, out_payload, 'receipt');
    END IF;
END
$$;

-- natter_ack_batch (migrations/005) on Citus: the same steps and result; the device rows
-- and then the member rows locked one at a time in their global order, as they move.
CREATE FUNCTION natter_ack_batch_citus(acks_user bigint[], acks_device bigint[], acks_since bigint[],
                                       acks_hint_from bigint[], h_user bigint[], h_seq bigint[], h_chat bigint[],
                                       h_mseq bigint[], h_sender bigint[])
RETURNS TABLE (woken_user bigint, woken_seq bigint, woken_chat bigint, woken_data text, woken_at text)
LANGUAGE plpgsql SET plan_cache_mode TO force_custom_plan AS $$
DECLARE
    a record;
    f bigint;
    mv_user bigint[] := '{}';
    mv_from bigint[] := '{}';
    mv_to bigint[] := '{}';
    mv_hint bigint[] := '{}';
    dl_chat bigint[] := '{}';
    dl_user bigint[] := '{}';
    dl_from bigint[] := '{}';
    dl_to bigint[] := '{}';
    dl_hinted boolean[];
BEGIN
    FOR a IN SELECT x.u, x.d, max(x.s) AS s, max(x.hf) AS hf
               FROM unnest(acks_user, acks_device, acks_since, acks_hint_from) AS x(u, d, s, hf)
              GROUP BY x.u, x.d ORDER BY x.u, x.d LOOP
        SELECT dv.acked_seq INTO f FROM devices dv WHERE dv.user_id = a.u AND dv.id = a.d FOR NO KEY UPDATE;
        CONTINUE WHEN NOT FOUND OR f >= a.s;
        UPDATE devices dv SET acked_seq = a.s WHERE dv.user_id = a.u AND dv.id = a.d;
        mv_user := mv_user || a.u;
        mv_from := mv_from || f;
        mv_to := mv_to || a.s;
        mv_hint := mv_hint || a.hf;
    END LOOP;
    IF cardinality(mv_user) = 0 THEN
        RETURN;
    END IF;

    FOR a IN
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
                      AND i.user_id = ANY (mv_user)
                    GROUP BY i.chat_id, i.user_id)
        SELECT r.chat_id, r.user_id, max(r.upto) AS upto FROM r GROUP BY r.chat_id, r.user_id
         ORDER BY r.chat_id, r.user_id
    LOOP
        SELECT cm.last_delivered_seq INTO f FROM chat_members cm
         WHERE cm.chat_id = a.chat_id AND cm.user_id = a.user_id FOR NO KEY UPDATE;
        CONTINUE WHEN NOT FOUND OR f >= a.upto;
        UPDATE chat_members cm SET last_delivered_seq = a.upto WHERE cm.chat_id = a.chat_id AND cm.user_id = a.user_id;
        dl_chat := dl_chat || a.chat_id;
        dl_user := dl_user || a.user_id;
        dl_from := dl_from || f;
        dl_to := dl_to || a.upto;
    END LOOP;
    IF cardinality(dl_chat) = 0 THEN
        RETURN;
    END IF;
    SELECT array_agg(NOT EXISTS (SELECT 1 FROM unnest(mv_user, mv_from, mv_hint) AS m(u, f, hf)
                                  WHERE m.u = d.u AND NOT (m.hf >= 0 AND m.f >= m.hf)) ORDER BY d.k)
      INTO dl_hinted FROM unnest(dl_user) WITH ORDINALITY AS d(u, k);

    RETURN QUERY SELECT * FROM natter_delivered_receipts_citus(dl_chat, dl_user, dl_from, dl_to, dl_hinted, h_user,
                                                               h_seq, h_chat, h_mseq, h_sender);
END
$$;

-- natter_read_batch (migrations/006) on Citus: the same rows; member rows locked one at a
-- time in (chat, user) order as they move.
CREATE FUNCTION natter_read_batch_citus(r_chat bigint[], r_user bigint[], r_seq bigint[])
RETURNS TABLE (i integer, status text, w_user bigint, w_seq bigint, w_chat bigint, w_data text, w_at text)
LANGUAGE plpgsql SET plan_cache_mode TO force_custom_plan AS $$
#variable_conflict use_column
DECLARE
    a record;
    f bigint;
    st_i integer[];
    st_s text[];
    ok_chat bigint[];
    ok_user bigint[];
    ok_seq bigint[];
    mv_chat bigint[] := '{}';
    mv_user bigint[] := '{}';
    mv_from bigint[] := '{}';
    mv_to bigint[] := '{}';
    out_user bigint[];
    out_chat bigint[];
    out_payload jsonb[];
BEGIN
    WITH v AS (SELECT v.k::integer AS k, v.c, v.u, v.s FROM unnest(r_chat, r_user, r_seq) WITH ORDINALITY AS v(c, u, s, k)),
         cm AS (SELECT cm.chat_id, cm.user_id FROM chat_members cm JOIN v ON cm.chat_id = v.c AND cm.user_id = v.u
                 WHERE cm.chat_id = ANY (r_chat)),
         ch AS (SELECT ch.id, ch.last_seq FROM chats ch WHERE ch.id = ANY (r_chat)),
         x AS (SELECT v.k, v.c, v.u, v.s,
                      CASE WHEN NOT EXISTS (SELECT 1 FROM cm WHERE cm.chat_id = v.c AND cm.user_id = v.u) THEN 'not_member'
                           WHEN v.s > (SELECT ch.last_seq FROM ch WHERE ch.id = v.c) THEN 'beyond'
                           ELSE 'ok' END AS st
                 FROM v)
    SELECT array_agg(x.k ORDER BY x.k), array_agg(x.st ORDER BY x.k),
           array_agg(x.c) FILTER (WHERE x.st = 'ok'), array_agg(x.u) FILTER (WHERE x.st = 'ok'),
           array_agg(x.s) FILTER (WHERE x.st = 'ok')
      INTO st_i, st_s, ok_chat, ok_user, ok_seq FROM x;
    RETURN QUERY SELECT t.k, t.st, NULL::bigint, NULL::bigint, NULL::bigint, NULL::text, NULL::text
                   FROM unnest(st_i, st_s) AS t(k, st);
    IF ok_chat IS NULL THEN
        RETURN;
    END IF;

    FOR a IN SELECT v.c, v.u, max(v.s) AS s FROM unnest(ok_chat, ok_user, ok_seq) AS v(c, u, s)
              GROUP BY v.c, v.u ORDER BY v.c, v.u LOOP
        SELECT cm.last_read_seq INTO f FROM chat_members cm WHERE cm.chat_id = a.c AND cm.user_id = a.u FOR NO KEY UPDATE;
        CONTINUE WHEN NOT FOUND OR f >= a.s;
        UPDATE chat_members cm SET last_read_seq = a.s, last_delivered_seq = GREATEST(cm.last_delivered_seq, a.s)
         WHERE cm.chat_id = a.c AND cm.user_id = a.u;
        mv_chat := mv_chat || a.c;
        mv_user := mv_user || a.u;
        mv_from := mv_from || f;
        mv_to := mv_to || a.s;
    END LOOP;
    IF cardinality(mv_chat) = 0 THEN
        RETURN;
    END IF;

    WITH mv AS (SELECT * FROM unnest(mv_chat, mv_user, mv_from, mv_to) AS x(chat_id, reader, f, t)),
         rcpt AS (SELECT mv.chat_id, mv.reader, mv.t, mv.reader AS to_user FROM mv
                  UNION
                  SELECT mv.chat_id, mv.reader, mv.t, msg.sender_id
                    FROM mv JOIN messages msg ON msg.chat_id = mv.chat_id AND msg.seq > mv.f AND msg.seq <= mv.t
                   WHERE msg.kind = 'text' AND msg.sender_id IS NOT NULL AND msg.sender_id <> mv.reader
                     AND msg.chat_id = ANY (mv_chat)),
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
                       FROM natter_inbox_append_citus(out_user, out_chat, out_payload, 'receipt') w;
    END IF;
END
$$;

-- natter_push_ack_batch (migrations/013) on Citus: the same rows; member rows locked one
-- at a time in (chat, user) order as they move.
CREATE FUNCTION natter_push_ack_batch_citus(p_user bigint[], p_chat bigint[], p_upto bigint[])
RETURNS TABLE (woken_user bigint, woken_seq bigint, woken_chat bigint, woken_data text, woken_at text)
LANGUAGE plpgsql SET plan_cache_mode TO force_custom_plan AS $$
DECLARE
    a record;
    f bigint;
    top bigint;
    dl_chat bigint[] := '{}';
    dl_user bigint[] := '{}';
    dl_from bigint[] := '{}';
    dl_to bigint[] := '{}';
BEGIN
    FOR a IN SELECT x.chat_id, x.user_id, max(x.upto) AS upto
               FROM unnest(p_chat, p_user, p_upto) AS x(chat_id, user_id, upto)
              GROUP BY x.chat_id, x.user_id ORDER BY x.chat_id, x.user_id LOOP
        SELECT cm.last_delivered_seq INTO f FROM chat_members cm
         WHERE cm.chat_id = a.chat_id AND cm.user_id = a.user_id FOR NO KEY UPDATE;
        CONTINUE WHEN NOT FOUND;
        SELECT least(a.upto, c.last_seq) INTO top FROM chats c WHERE c.id = a.chat_id;
        CONTINUE WHEN f >= top;
        UPDATE chat_members cm SET last_delivered_seq = top WHERE cm.chat_id = a.chat_id AND cm.user_id = a.user_id;
        dl_chat := dl_chat || a.chat_id;
        dl_user := dl_user || a.user_id;
        dl_from := dl_from || f;
        dl_to := dl_to || top;
    END LOOP;
    IF cardinality(dl_chat) = 0 THEN
        RETURN;
    END IF;

    RETURN QUERY SELECT * FROM natter_delivered_receipts_citus(dl_chat, dl_user, dl_from, dl_to,
                                                               array_fill(false, ARRAY[cardinality(dl_chat)]),
                                                               '{}', '{}', '{}', '{}', '{}');
END
$$;
