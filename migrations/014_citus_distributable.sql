-- 014_citus_distributable.sql — a schema Citus can distribute (issue 12, item 5).
--
-- Every table is distributed by its shard key: chat_id for chats (id), chat_members,
-- messages, reactions, attachments, push_outbox; user_id for users (id), devices,
-- refresh_tokens, inbox; and the two lookup tables below by their own key. The
-- declaration is scripts/citus-distribute.sql; tests/api/test_citus_rules.py checks the
-- migrated schema against it in every `make test`.
--
-- Citus can only enforce a unique index or a primary key that contains the table's
-- distribution column, and a foreign key between distributed tables only when both are
-- co-located and the key contains both distribution columns. Three unique indexes and four
-- foreign keys broke those rules; they go, and what they guaranteed is kept this way:
--
-- * Usernames are unique, case-insensitively: the lookup table usernames, keyed (and
--   distributed) by the lowered name. Registration inserts the user and the name in one
--   statement; a taken name fails on usernames' primary key. users.username keeps the
--   name as it was typed.
-- * A direct chat is unique per unordered pair: the lookup table direct_chats, keyed (and
--   distributed) by the pair's lower user id. Creating a direct chat inserts the pair first
--   (ON CONFLICT DO NOTHING waits for a concurrent creator, then finds its chat).
--   chats.direct_lo/direct_hi stay as a record of the pair.
-- * Attachment ids are random UUIDs made by natter-api (gen_random_uuid); the primary
--   key is (chat_id, id). The index on id alone stays for GET /v1/attachments/{id}, no
--   longer unique (on Citus that lookup is a multi-shard index scan).
-- * chats.creator_id, chat_members.user_id, reactions.user_id and attachments.uploader_id
--   name users, whose rows are never deleted; natter-api writes them only with the id of
--   an authenticated user or of a user it has just checked exists (the member and
--   direct-chat endpoints answer 404 user_not_found first). Integrity kept by the code.
-- Citus allows only IMMUTABLE functions in a RETURNING clause; to_char is STABLE because
-- some of its fields follow the locale, but this format has none of them and a fixed zone.
CREATE FUNCTION natter_ts(t timestamptz) RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;

CREATE TABLE usernames (
    name_lower text PRIMARY KEY,
    user_id bigint NOT NULL
);
COMMENT ON TABLE usernames IS
    'lowered username -> user id; the one place usernames are unique (distributed by name_lower)';
INSERT INTO usernames (name_lower, user_id) SELECT lower(username), id FROM users;
DROP INDEX users_username_lower_key;

CREATE TABLE direct_chats (
    user_lo bigint NOT NULL,
    user_hi bigint NOT NULL,
    chat_id bigint NOT NULL,
    PRIMARY KEY (user_lo, user_hi),
    CHECK (user_lo < user_hi)
);
COMMENT ON TABLE direct_chats IS
    'the direct chat of each unordered pair of users (distributed by user_lo)';
INSERT INTO direct_chats (user_lo, user_hi, chat_id)
    SELECT direct_lo, direct_hi, id FROM chats WHERE kind = 'direct';
DROP INDEX chats_direct_pair_key;

DROP INDEX attachments_id_key;
CREATE INDEX attachments_id ON attachments (id);

ALTER TABLE chats DROP CONSTRAINT chats_creator_id_fkey;
ALTER TABLE chat_members DROP CONSTRAINT chat_members_user_id_fkey;
ALTER TABLE reactions DROP CONSTRAINT reactions_user_id_fkey;
ALTER TABLE attachments DROP CONSTRAINT attachments_uploader_id_fkey;
COMMENT ON COLUMN chat_members.user_id IS 'a users.id; no foreign key (different shard key), kept by natter-api';
COMMENT ON COLUMN chats.creator_id IS 'a users.id; no foreign key (different shard key), kept by natter-api';
COMMENT ON COLUMN reactions.user_id IS 'a users.id; no foreign key (different shard key), kept by natter-api';
COMMENT ON COLUMN attachments.uploader_id IS 'a users.id; no foreign key (different shard key), kept by natter-api';
