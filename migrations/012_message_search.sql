-- 012_message_search.sql — full-text search over messages (GET /v1/search,
-- issue 14 item 1).
--
-- What: a GIN index on (chat_id, to_tsvector('simple', body)), partial on
-- live text messages (kind = 'text' AND deleted_at IS NULL). The search query
-- (api/resources/search.c) repeats that expression and that predicate word for
-- word, which is what lets the planner use the index.
--
-- Why chat_id in it: a search covers the caller's chats, and PostgreSQL plans
-- it as a loop over their memberships; with chat_id in the index each step is
-- one lookup of "this chat AND these words" (measured on 300,000 messages, a
-- user in 30 of 3,000 chats: 67 ms -> 1.5 ms for a word with 100 matches).
-- Without it the planner either reads every match in every chat (a common
-- word: most of the table) or tokenizes every message of the caller's chats.
-- A GIN index on a bigint needs the btree_gin extension (contrib, shipped
-- with PostgreSQL; a trusted extension, so the database owner may create it
-- without superuser rights; with Citus it is created on every node). The
-- index also serves conditions on the text alone.
--
-- Why an expression index and not a stored tsvector column: ADD COLUMN ...
-- GENERATED ALWAYS AS (to_tsvector(...)) STORED rewrites the whole messages
-- table under an ACCESS EXCLUSIVE lock (no reads, no sends for the length of
-- the rewrite, and twice the table's disk space meanwhile), then stores the
-- vector beside every body forever. The expression index rewrites nothing:
-- ts_rank and ts_headline recompute the vector only for the rows a search
-- returns. Deleted messages (tombstones, body NULL) and system messages
-- leave the index through its predicate.
--
-- Why 'simple' and not 'english': chats are multilingual. 'simple' lowercases
-- words and nothing else: no language's stemmer mangles another language's
-- words, and no stop-word list silently drops words ("no", "a", "die" are
-- stop words in some language and content in another). What it costs:
-- "meeting" does not find "meetings" — the search API has prefix terms
-- ("meet*") for that. Changing it later needs a new index and the same
-- change in search.c.
--
-- How it is built on a large existing table: migrate runs every file inside
-- one transaction (common/migrate.c), where CREATE INDEX CONCURRENTLY is not
-- allowed, so here the index builds under a SHARE lock: reads (history, polls)
-- go on, but writes to messages (sends, edits) wait until it is built (11 s
-- per 100,000 messages on the loaded 2-core bench machine, bench/README.md,
-- "Message search": a minute per half million messages). On a large
-- table build it beforehand without blocking writes, outside any transaction:
--
--   CREATE EXTENSION IF NOT EXISTS btree_gin;
--   CREATE INDEX CONCURRENTLY messages_search_idx ON messages
--       USING gin (chat_id, to_tsvector('simple'::regconfig, body))
--       WHERE kind = 'text' AND deleted_at IS NULL;
--
-- and this migration then only checks it (IF NOT EXISTS). A concurrent build
-- that failed leaves an INVALID index behind; it is dropped and rebuilt here
-- rather than kept, since the planner would never use it.
CREATE EXTENSION IF NOT EXISTS btree_gin;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_index i
                WHERE i.indexrelid = to_regclass('messages_search_idx') AND NOT i.indisvalid) THEN
        DROP INDEX messages_search_idx;
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS messages_search_idx ON messages
    USING gin (chat_id, to_tsvector('simple'::regconfig, body))
    WHERE kind = 'text' AND deleted_at IS NULL;
