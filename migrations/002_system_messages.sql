-- 002_system_messages.sql — structured data of system messages (membership
-- changes, renames): {event, actor_id, user_ids?, title?, role?}. Clients
-- render system messages from this rather than from the English body text.
ALTER TABLE messages ADD COLUMN system jsonb;

-- chat list: a user's chats by last activity
CREATE INDEX chats_last_message_idx ON chats (last_message_at DESC, id DESC);
