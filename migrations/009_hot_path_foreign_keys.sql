-- 009_hot_path_foreign_keys.sql — no foreign-key check on users per event.
--
-- Every inbox row and every message checked its user against `users` with a
-- FOR KEY SHARE lock on that row — the very row the same transactions lock
-- FOR NO KEY UPDATE (in ascending id order) to number the user's inbox. Two
-- batches committing at once (send committers, the ack flusher, read-marker
-- batches) could then deadlock: one queued for a user row the other had
-- updated, while the other's foreign-key check re-locked that row behind the
-- queued one (seen with four send committers under the bench's load). Users
-- are never deleted, and every writer of these rows takes the user id from an
-- authenticated session or from a row it has locked, so the checks protect
-- nothing; they also cost a lookup per row. (Citus, issue 12, cannot keep
-- foreign keys from chat-keyed tables to users either.)
ALTER TABLE inbox DROP CONSTRAINT IF EXISTS inbox_user_id_fkey;
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_sender_id_fkey;
