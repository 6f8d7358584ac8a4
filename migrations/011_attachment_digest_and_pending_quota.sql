-- 011_attachment_digest_and_pending_quota.sql — immutable uploads and a quota
-- on pending ones (issue 11, items 5 and 6).
--
-- sha256: the hex SHA-256 the client declared when it asked for the upload
-- URL. It is signed into that URL (x-amz-checksum-sha256), so the store
-- accepts those bytes and no others, and a completed attachment's bytes never
-- change. NULL for attachments created before this migration.
--
-- The index serves the quota check at upload-request time (a user's pending
-- attachments: count and bytes) and stays small: rows leave it when they are
-- completed or reclaimed. attachments is distributed by chat_id, so with Citus
-- this check is one multi-shard index scan per upload request (documented in
-- the README next to the setting).
ALTER TABLE attachments ADD COLUMN sha256 text;
ALTER TABLE attachments ADD CONSTRAINT attachments_sha256 CHECK (sha256 IS NULL OR sha256 ~ '^[0-9a-f]{64}$');
CREATE INDEX attachments_pending_by_uploader ON attachments (uploader_id, created_at) WHERE status = 'pending';
