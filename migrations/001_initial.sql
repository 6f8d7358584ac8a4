-- 001_initial.sql — the whole schema of DESIGN.md.
--
-- Every table that grows with traffic leads its primary key with its future
-- shard key: chat_id for chats, members, messages, reactions and attachments;
-- user_id for users' devices, refresh tokens and the inbox. Applied inside one
-- transaction by `natter-api migrate`; do not add BEGIN/COMMIT here.

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text        NOT NULL,
    display_name  text        NOT NULL,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz,
    inbox_seq     bigint      NOT NULL DEFAULT 0,  -- last seq handed out in this user's inbox
    CONSTRAINT users_username_len CHECK (char_length(username) BETWEEN 3 AND 32),
    CONSTRAINT users_display_name_len CHECK (char_length(display_name) BETWEEN 1 AND 64)
);
-- usernames are unique case-insensitively
CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));

CREATE TABLE devices (
    user_id        bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    id             bigint      GENERATED ALWAYS AS IDENTITY,
    name           text        NOT NULL,
    platform       text        NOT NULL,
    push_provider  text,
    push_token     text,
    push_updated_at timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_active_at timestamptz NOT NULL DEFAULT now(),
    acked_seq      bigint      NOT NULL DEFAULT 0,   -- highest inbox seq this device confirmed
    revoked_at     timestamptz,
    PRIMARY KEY (user_id, id),
    CONSTRAINT devices_platform CHECK (platform IN ('ios', 'android', 'web', 'desktop', 'other')),
    CONSTRAINT devices_push CHECK ((push_provider IS NULL) = (push_token IS NULL))
);
CREATE INDEX devices_active_idx ON devices (user_id) WHERE revoked_at IS NULL;

CREATE TABLE refresh_tokens (
    user_id     bigint      NOT NULL,
    token_hash  text        NOT NULL,           -- hex SHA-256 of the opaque token
    device_id   bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    rotated_at  timestamptz,                    -- set when exchanged; reuse after that revokes the device
    PRIMARY KEY (user_id, token_hash),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_device_idx ON refresh_tokens (user_id, device_id);
CREATE INDEX refresh_tokens_expires_idx ON refresh_tokens (expires_at);

CREATE TABLE chats (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text        NOT NULL,
    title           text,
    creator_id      bigint      NOT NULL REFERENCES users (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seq        bigint      NOT NULL DEFAULT 0,   -- last message seq; bumped under the row lock
    last_message_at timestamptz NOT NULL DEFAULT now(),
    -- a direct chat is unique per unordered pair: (lo, hi) with lo < hi
    direct_lo       bigint,
    direct_hi       bigint,
    CONSTRAINT chats_kind CHECK (kind IN ('direct', 'group')),
    CONSTRAINT chats_direct_pair CHECK (
        (kind = 'direct' AND direct_lo IS NOT NULL AND direct_hi IS NOT NULL AND direct_lo < direct_hi)
        OR (kind = 'group' AND direct_lo IS NULL AND direct_hi IS NULL)),
    CONSTRAINT chats_title_len CHECK (title IS NULL OR char_length(title) BETWEEN 1 AND 200)
);
CREATE UNIQUE INDEX chats_direct_pair_key ON chats (direct_lo, direct_hi) WHERE kind = 'direct';

CREATE TABLE chat_members (
    chat_id            bigint      NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id            bigint      NOT NULL REFERENCES users (id),
    role               text        NOT NULL DEFAULT 'member',
    joined_seq         bigint      NOT NULL DEFAULT 0,  -- members see messages with seq > joined_seq
    joined_at          timestamptz NOT NULL DEFAULT now(),
    last_read_seq      bigint      NOT NULL DEFAULT 0,  -- only moves forward
    last_delivered_seq bigint      NOT NULL DEFAULT 0,  -- only moves forward
    muted              boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (chat_id, user_id),
    CONSTRAINT chat_members_role CHECK (role IN ('owner', 'admin', 'member'))
);
-- "my chats": the member rows of one user
CREATE INDEX chat_members_user_idx ON chat_members (user_id, chat_id);

CREATE TABLE messages (
    chat_id        bigint      NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    seq            bigint      NOT NULL,
    sender_id      bigint      REFERENCES users (id),     -- NULL for some system messages
    client_msg_id  uuid,
    kind           text        NOT NULL DEFAULT 'text',
    body           text,                                   -- NULL once deleted (tombstone)
    mentions       bigint[]    NOT NULL DEFAULT '{}',
    reply_to_seq   bigint,
    attachment_ids uuid[]      NOT NULL DEFAULT '{}',
    body_sha256    text,                                   -- idempotency: same id, other content -> 409
    created_at     timestamptz NOT NULL DEFAULT now(),
    edited_at      timestamptz,
    deleted_at     timestamptz,
    PRIMARY KEY (chat_id, seq),
    CONSTRAINT messages_kind CHECK (kind IN ('text', 'system')),
    CONSTRAINT messages_body_len CHECK (body IS NULL OR char_length(body) <= 100000)
);
-- idempotent send: one message per (chat, sender, client_msg_id), kept forever
CREATE UNIQUE INDEX messages_client_msg_key ON messages (chat_id, sender_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
-- unread mentions: messages that mention a user
CREATE INDEX messages_mentions_idx ON messages USING gin (mentions);

CREATE TABLE reactions (
    chat_id    bigint      NOT NULL,
    seq        bigint      NOT NULL,
    user_id    bigint      NOT NULL REFERENCES users (id),
    emoji      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chat_id, seq, user_id, emoji),
    FOREIGN KEY (chat_id, seq) REFERENCES messages (chat_id, seq) ON DELETE CASCADE,
    CONSTRAINT reactions_emoji_len CHECK (char_length(emoji) BETWEEN 1 AND 32)
);

CREATE TABLE inbox (
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq        bigint      NOT NULL,           -- gap-free per user, from users.inbox_seq
    type       text        NOT NULL,           -- message, edit, delete, reaction, receipt, membership, ...
    chat_id    bigint,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, seq)
);
-- retention cleanup scans by age
CREATE INDEX inbox_created_idx ON inbox (created_at);

CREATE TABLE attachments (
    chat_id      bigint      NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    id           uuid        NOT NULL DEFAULT gen_random_uuid(),
    uploader_id  bigint      NOT NULL REFERENCES users (id),
    object_key   text        NOT NULL,
    filename     text        NOT NULL,
    content_type text        NOT NULL,
    size         bigint      NOT NULL,
    status       text        NOT NULL DEFAULT 'pending',
    created_at   timestamptz NOT NULL DEFAULT now(),
    uploaded_at  timestamptz,
    PRIMARY KEY (chat_id, id),
    CONSTRAINT attachments_status CHECK (status IN ('pending', 'uploaded')),
    CONSTRAINT attachments_size CHECK (size >= 0)
);
CREATE UNIQUE INDEX attachments_id_key ON attachments (id);
CREATE INDEX attachments_pending_idx ON attachments (created_at) WHERE status = 'pending';
