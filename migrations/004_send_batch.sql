-- 004_send_batch.sql — the first half of a batch of sends, in one call.
--
-- natter-api's commit pipeline (api/chat/pipeline.c) writes every send that
-- queued while its previous batch committed in ONE transaction:
--   1. natter_send_batch(batch) — this function: locks the batch's chat rows
--      in ascending id order (the global lock order, api/chat/membership.h),
--      then per message in arrival order: a known (chat, sender,
--      client_msg_id) is reported 'existing' (with its seq and content hash:
--      the retry's answer is 200 or 409), a sender who is not a member
--      'not_member'; otherwise the next seq of the chat, the message row and
--      its push outbox row ('new'). Each message runs in its own
--      subtransaction: one that fails ('failed', with its SQLSTATE) leaves
--      the others of the batch intact. Last, the senders' own read markers,
--      their chat_members rows locked in (chat, user) order.
--   2. the inbox fan-out of the new messages (one statement, users locked in
--      ascending id order), then COMMIT.
--
-- batch: a JSON array of {"i", "chat_id", "sender_id", "client_msg_id", "body",
-- "mentions": [ids], "reply_to_seq": id|null, "attachment_ids": [uuids],
-- "hash"}, "i" in arrival order.
-- natter_senders_read: the senders of new messages have read them: their
-- member rows are locked in (chat, user) order, as every writer of
-- chat_members does, and their read and delivered markers move forward to
-- their newest message of the chat.
CREATE FUNCTION natter_senders_read(new_chat bigint[], new_sender bigint[], new_seq bigint[])
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM chat_members cm
      WHERE (cm.chat_id, cm.user_id) IN (SELECT * FROM unnest(new_chat, new_sender))
      ORDER BY cm.chat_id, cm.user_id FOR NO KEY UPDATE;
    UPDATE chat_members cm
       SET last_read_seq = GREATEST(cm.last_read_seq, n.top),
           last_delivered_seq = GREATEST(cm.last_delivered_seq, n.top)
      FROM (SELECT v.c, v.u, max(v.q) AS top FROM unnest(new_chat, new_sender, new_seq) AS v(c, u, q)
             GROUP BY v.c, v.u) n
     WHERE cm.chat_id = n.c AND cm.user_id = n.u;
END
$$;

CREATE FUNCTION natter_send_batch(batch jsonb)
RETURNS TABLE (i integer, status text, seq bigint, body_sha256 text)
LANGUAGE plpgsql AS $$
DECLARE
    m record;
    s bigint;
    h text;
    new_chat bigint[] := '{}';
    new_sender bigint[] := '{}';
    new_seq bigint[] := '{}';
BEGIN
    PERFORM 1 FROM chats c
      WHERE c.id IN (SELECT DISTINCT (e ->> 'chat_id')::bigint FROM jsonb_array_elements(batch) e)
      ORDER BY c.id FOR NO KEY UPDATE;
    FOR m IN
        SELECT (e ->> 'i')::integer AS i, (e ->> 'chat_id')::bigint AS chat_id,
               (e ->> 'sender_id')::bigint AS sender_id, (e ->> 'client_msg_id')::uuid AS cmid,
               e ->> 'body' AS body,
               ARRAY(SELECT jsonb_array_elements_text(e -> 'mentions'))::bigint[] AS mentions,
               (e ->> 'reply_to_seq')::bigint AS reply_to,
               ARRAY(SELECT jsonb_array_elements_text(e -> 'attachment_ids'))::uuid[] AS atts,
               e ->> 'hash' AS hash
          FROM jsonb_array_elements(batch) e
         ORDER BY (e ->> 'i')::integer
    LOOP
        i := m.i;
        SELECT x.seq, x.body_sha256 INTO s, h FROM messages x
         WHERE x.chat_id = m.chat_id AND x.sender_id = m.sender_id AND x.client_msg_id = m.cmid;
        IF FOUND THEN
            status := 'existing';
            seq := s;
            body_sha256 := h;
            RETURN NEXT;
            CONTINUE;
        END IF;
        PERFORM 1 FROM chat_members cm WHERE cm.chat_id = m.chat_id AND cm.user_id = m.sender_id;
        IF NOT FOUND THEN
            status := 'not_member';
            seq := NULL;
            body_sha256 := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        BEGIN
            UPDATE chats SET last_seq = last_seq + 1, last_message_at = now()
             WHERE id = m.chat_id RETURNING last_seq INTO s;
            INSERT INTO messages (chat_id, seq, sender_id, client_msg_id, kind, body, mentions, reply_to_seq,
                                  attachment_ids, body_sha256)
            VALUES (m.chat_id, s, m.sender_id, m.cmid, 'text', m.body, m.mentions, m.reply_to, m.atts, m.hash);
            INSERT INTO push_outbox (chat_id, seq, due_at) VALUES (m.chat_id, s, now() + interval '10 seconds');
            status := 'new';
            seq := s;
            body_sha256 := m.hash;
        EXCEPTION WHEN OTHERS THEN
            status := 'failed';
            seq := NULL;
            body_sha256 := SQLSTATE;
        END;
        IF status = 'new' THEN
            new_chat := new_chat || m.chat_id;
            new_sender := new_sender || m.sender_id;
            new_seq := new_seq || s;
        END IF;
        RETURN NEXT;
    END LOOP;
    PERFORM natter_senders_read(new_chat, new_sender, new_seq);
END
$$;
