-- 008_hot_path_indexes.sql — fewer index writes on the hot path.
--
-- Every send updates its chat row (last_seq, last_message_at) and every
-- inbox event its user row (inbox_seq). Measured with the bench's chat mesh
-- (bench/README.md, 2026-12-06): btree maintenance led PostgreSQL's profile.
--   * chats_last_message_idx made every chat update a non-HOT update (three
--     index inserts per send). No query uses it: the chat list starts from the
--     user's memberships (chat_members_user_idx) and sorts their chats.
--   * messages_mentions_idx (GIN) was written on every message and used by
--     nothing: unread mentions are counted inside one chat's seq range, where
--     `user_id = ANY (mentions)` filters rows the primary key already found.
-- Room left in the pages of the rows updated on every event lets those
-- updates stay on their page (HOT) instead of writing every index again
-- (it applies to pages written from now on).
DROP INDEX IF EXISTS chats_last_message_idx;
DROP INDEX IF EXISTS messages_mentions_idx;
ALTER TABLE chats SET (fillfactor = 80);
ALTER TABLE users SET (fillfactor = 80);
ALTER TABLE chat_members SET (fillfactor = 80);
ALTER TABLE devices SET (fillfactor = 80);
