-- How natter's tables are spread over a Citus cluster: run once on the coordinator after
-- `natter-api migrate` (scripts/citus.sh does). Every table is listed: distributed by its
-- shard key, or a reference table. tests/api/test_citus_rules.py reads this file and checks
-- the migrated schema against it in every `make test` (every primary key and unique index
-- holds the distribution column; foreign keys only between co-located tables on both
-- distribution columns, or to a reference table), so a migration cannot break it unseen.
--
-- Two co-location groups carry the data: chats (chat_id) and users (user_id); the lookup
-- tables usernames and direct_chats are distributed by their own key, each its own group.

-- chat-keyed: one chat's rows on one shard
SELECT create_distributed_table('chats', 'id', colocate_with => 'none');
SELECT create_distributed_table('chat_members', 'chat_id', colocate_with => 'chats');
SELECT create_distributed_table('messages', 'chat_id', colocate_with => 'chats');
SELECT create_distributed_table('reactions', 'chat_id', colocate_with => 'chats');
SELECT create_distributed_table('attachments', 'chat_id', colocate_with => 'chats');
SELECT create_distributed_table('push_outbox', 'chat_id', colocate_with => 'chats');

-- user-keyed: one user's rows on one shard
SELECT create_distributed_table('users', 'id', colocate_with => 'none');
SELECT create_distributed_table('devices', 'user_id', colocate_with => 'users');
SELECT create_distributed_table('refresh_tokens', 'user_id', colocate_with => 'users');
SELECT create_distributed_table('inbox', 'user_id', colocate_with => 'users');
SELECT create_distributed_table('push_covers', 'user_id', colocate_with => 'users');

-- lookup tables, keyed by what must be unique
SELECT create_distributed_table('usernames', 'name_lower', colocate_with => 'none');
SELECT create_distributed_table('direct_chats', 'user_lo', colocate_with => 'none');

-- the migration bookkeeping stays a local table of the coordinator
-- natter:local schema_migrations
