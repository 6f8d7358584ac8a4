-- 003_push_outbox.sql — transactional outbox for push notifications.
--
-- The send transaction inserts one row per message; natter-api enqueues the
-- job after COMMIT and the worker deletes the row once the message is counted
-- into its recipients' pending pushes. A row whose due_at passes was never
-- enqueued (Redis down) or its job was lost: the worker's reconciler enqueues
-- it again. Keyed by chat_id, the shard key of messages.
CREATE TABLE push_outbox (
    chat_id    bigint      NOT NULL,
    seq        bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    due_at     timestamptz NOT NULL,
    PRIMARY KEY (chat_id, seq),
    FOREIGN KEY (chat_id, seq) REFERENCES messages (chat_id, seq) ON DELETE CASCADE
);
CREATE INDEX push_outbox_due_idx ON push_outbox (due_at);

-- cleanup of acked inbox rows walks users' active devices
CREATE INDEX devices_push_idx ON devices (user_id) WHERE push_token IS NOT NULL AND revoked_at IS NULL;
