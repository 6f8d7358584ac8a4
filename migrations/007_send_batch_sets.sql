-- 007_send_batch_sets.sql — the send batch with set-based statements.
--
-- natter_send_batch (004) handles a batch one message at a time, each in a
-- subtransaction, so that one failing message cannot fail the others. That
-- costs ~160 µs of PostgreSQL time per message and caps the pipeline. This
-- function does the same work for the whole batch in a few statements, with
-- the same result rows and the same lock order (chat rows in ascending id
-- order, then the senders' member rows in (chat, user) order); natter-api
-- calls it first and falls back to natter_send_batch, in a new transaction,
-- only when it raises (a message the database refuses).
--
-- Per message, in arrival order ("i"): a (chat, sender, client_msg_id) that
-- is stored already, or that an earlier message of the same batch takes, is
-- 'existing' (its seq and content hash: the retry's answer is 200 or 409); a
-- sender who is not a member 'not_member'; otherwise 'new', with the chat's
-- next seq (gap-free, in arrival order), its message row and push outbox row.
CREATE FUNCTION natter_send_batch_set(batch jsonb)
RETURNS TABLE (i integer, status text, seq bigint, body_sha256 text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r_i integer[];
    r_status text[];
    r_seq bigint[];
    r_hash text[];
    new_chat bigint[];
    new_sender bigint[];
    new_seq bigint[];
BEGIN
    PERFORM 1 FROM chats c
      WHERE c.id IN (SELECT DISTINCT (e ->> 'chat_id')::bigint FROM jsonb_array_elements(batch) e)
      ORDER BY c.id FOR NO KEY UPDATE;

    -- a new statement: its snapshot sees every batch that committed before our locks were granted
    WITH x AS (SELECT * FROM jsonb_to_recordset(batch)
                 AS x(i integer, chat_id bigint, sender_id bigint, client_msg_id uuid, body text,
                      mentions bigint[], reply_to_seq bigint, attachment_ids uuid[], hash text)),
         cls AS (SELECT x.*, m.seq AS stored_seq, m.body_sha256 AS stored_hash,
                        EXISTS (SELECT 1 FROM chat_members cm
                                 WHERE cm.chat_id = x.chat_id AND cm.user_id = x.sender_id) AS member,
                        row_number() OVER (PARTITION BY x.chat_id, x.sender_id, x.client_msg_id
                                           ORDER BY x.i) AS nth
                   FROM x LEFT JOIN messages m
                     ON m.chat_id = x.chat_id AND m.sender_id = x.sender_id AND m.client_msg_id = x.client_msg_id),
         nw AS (SELECT cls.*, ch.last_seq + row_number() OVER (PARTITION BY cls.chat_id ORDER BY cls.i) AS new_seq
                  FROM cls JOIN chats ch ON ch.id = cls.chat_id
                 WHERE cls.stored_seq IS NULL AND cls.member AND cls.nth = 1),
         bump AS (UPDATE chats ch SET last_seq = t.top, last_message_at = now()
                    FROM (SELECT nw.chat_id, max(nw.new_seq) AS top FROM nw GROUP BY nw.chat_id) t
                   WHERE ch.id = t.chat_id),
         ins AS (INSERT INTO messages (chat_id, seq, sender_id, client_msg_id, kind, body, mentions, reply_to_seq,
                                       attachment_ids, body_sha256)
                 SELECT nw.chat_id, nw.new_seq, nw.sender_id, nw.client_msg_id, 'text', nw.body,
                        coalesce(nw.mentions, '{}'), nw.reply_to_seq, coalesce(nw.attachment_ids, '{}'), nw.hash
                   FROM nw ORDER BY nw.chat_id, nw.new_seq
                 RETURNING messages.chat_id, messages.seq),
         ob AS (INSERT INTO push_outbox (chat_id, seq, due_at)
                SELECT ins.chat_id, ins.seq, now() + interval '10 seconds' FROM ins),
         res AS (SELECT cls.i,
                        CASE WHEN cls.stored_seq IS NOT NULL THEN 'existing'
                             WHEN NOT cls.member THEN 'not_member'
                             WHEN cls.nth = 1 THEN 'new'
                             ELSE 'existing' END AS st,
                        coalesce(cls.stored_seq, f.new_seq) AS sq,
                        coalesce(cls.stored_hash, f.hash) AS hs
                   FROM cls LEFT JOIN nw f
                     ON f.chat_id = cls.chat_id AND f.sender_id = cls.sender_id
                    AND f.client_msg_id = cls.client_msg_id)
    SELECT array_agg(res.i ORDER BY res.i), array_agg(res.st ORDER BY res.i), array_agg(res.sq ORDER BY res.i),
           array_agg(res.hs ORDER BY res.i),
           (SELECT array_agg(nw.chat_id) FROM nw), (SELECT array_agg(nw.sender_id) FROM nw),
           (SELECT array_agg(nw.new_seq) FROM nw)
      INTO r_i, r_status, r_seq, r_hash, new_chat, new_sender, new_seq
      FROM res;

    IF new_chat IS NOT NULL THEN
        PERFORM natter_senders_read(new_chat, new_sender, new_seq); /* migrations/004 */
    END IF;
    RETURN QUERY SELECT * FROM unnest(r_i, r_status, r_seq, r_hash);
END
$$;
