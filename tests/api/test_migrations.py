"""Migrations: `natter-api migrate` is idempotent and the server refuses a stale schema."""
import secrets

import pytest

from natterlib import (MIGRATIONS_DIR, TEST_PASSWORD, Client, assert_problem, assert_status, common_env,
                       db_url_for, free_port, login, new_state_dir, psql, psql_int, register, run_binary, tail)

DESIGN_TABLES = {"users", "devices", "refresh_tokens", "chats", "chat_members", "messages",
                 "reactions", "inbox", "attachments"}


def migration_files():
    files = sorted(MIGRATIONS_DIR.glob("*.sql"))
    assert files, f"no migrations in {MIGRATIONS_DIR}"
    return files


def migrate(url=None):
    overrides = {"NATTER_DATABASE_URL": url} if url else {}
    return run_binary("natter-api", ["migrate"],
                      common_env(new_state_dir("migrate"), **overrides), timeout=60)


@pytest.fixture
def empty_database():
    """A fresh empty database natter_empty_<random>, dropped afterwards."""
    name = "natter_empty_" + secrets.token_hex(4)
    psql(f'CREATE DATABASE "{name}"')
    yield db_url_for(name)
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migrate_is_idempotent(migrated):
    """Running migrate again (twice) exits 0 and keeps one schema_migrations row per file
    of migrations/."""
    for _ in range(2):
        proc = migrate()
        assert proc.returncode == 0, tail(proc.output)
    assert psql_int("SELECT count(*) FROM schema_migrations") == len(migration_files())


def test_design_tables_exist(migrated):
    """After migrate every table of the design's data model exists."""
    tables = set(psql("SELECT table_name FROM information_schema.tables "
                      "WHERE table_schema = 'public'").split())
    assert DESIGN_TABLES <= tables, f"missing: {sorted(DESIGN_TABLES - tables)}"


def test_refuses_stale_schema_then_serves(empty_database, start_api):
    """Against an empty database natter-api exits non-zero within 10 s saying "schema is
    behind"; after migrate on it, it serves."""
    env = common_env(new_state_dir("stale"), NATTER_DATABASE_URL=empty_database,
                     NATTER_LISTEN_ADDR="127.0.0.1", NATTER_PORT=str(free_port()))
    proc = run_binary("natter-api", [], env, timeout=10)
    assert proc.returncode != 0, tail(proc.output)
    assert "schema is behind" in proc.output, tail(proc.output)

    proc = migrate(empty_database)
    assert proc.returncode == 0, tail(proc.output)
    assert psql_int("SELECT count(*) FROM schema_migrations", url=empty_database) \
        == len(migration_files())

    srv = start_api(NATTER_DATABASE_URL=empty_database)
    r = Client(srv.base_url).get("/readyz")
    assert_status(r, 200)
    srv.stop()
    srv.assert_clean_exit()


def test_distributable_layout_upgrade_keeps_users_and_direct_chats(empty_database, client, start_api):
    """Migration 014 (issue 12: usernames and direct-chat pairs move to lookup tables keyed
    by their own shard key, four foreign keys to users go) upgrades a database of the
    schema before it without losing anything: the users made before it log in by their
    name in any case, their names stay taken, and their direct chat stays the one chat of
    the pair."""
    donor = register(client)                                   # a real password hash
    pw_hash = psql("SELECT password_hash FROM users WHERE id = $1", donor["id"])
    old = [f for f in migration_files() if int(f.name.split("_")[0]) < 14]
    script = ["CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
              " applied_at timestamptz NOT NULL DEFAULT now());"]
    for f in old:
        script += ["BEGIN;", f.read_text(), f"INSERT INTO schema_migrations (version, name) "
                   f"VALUES ({int(f.name.split('_')[0])}, '{f.name}');", "COMMIT;"]
    psql("\n".join(script), url=empty_database, timeout=120)
    tag = secrets.token_hex(3)
    ids = psql("INSERT INTO users (username, display_name, password_hash) VALUES"
               " ($1, 'Alice', $3), ($2, 'Bob', $3) RETURNING id",
               f"Alice_{tag}", f"bob_{tag}", pw_hash, url=empty_database).split()
    alice, bob = int(ids[0]), int(ids[1])
    chat = psql_int("INSERT INTO chats (kind, creator_id, direct_lo, direct_hi)"
                    " VALUES ('direct', $1, $1, $2) RETURNING id", alice, bob, url=empty_database)
    psql("INSERT INTO chat_members (chat_id, user_id, role) VALUES ($1, $2, 'member'), ($1, $3, 'member')",
         chat, alice, bob, url=empty_database)

    proc = migrate(empty_database)
    assert proc.returncode == 0, tail(proc.output)
    assert psql_int("SELECT count(*) FROM usernames", url=empty_database) == 2
    assert psql_int("SELECT chat_id FROM direct_chats WHERE user_lo = $1 AND user_hi = $2",
                    alice, bob, url=empty_database) == chat

    srv = start_api(NATTER_DATABASE_URL=empty_database)
    c = Client(srv.base_url)
    tokens = login(c, f"ALICE_{tag}", TEST_PASSWORD)          # case-insensitive, by the old row
    r = c.get("/v1/users/me", token=tokens["access_token"])
    assert_status(r, 200)
    assert r.json()["id"] == alice
    r = c.post("/v1/auth/register", json={"username": f"alice_{tag}", "password": TEST_PASSWORD + "x"})
    assert_problem(r, 409, "username_taken")
    r = c.get(f"/v1/users?username=BOB_{tag}", token=tokens["access_token"])
    assert_status(r, 200)
    assert r.json()["id"] == bob
    r = c.post("/v1/chats", json={"kind": "direct", "user_id": bob}, token=tokens["access_token"])
    assert_status(r, 200)                                      # exists: the same chat
    assert r.json()["id"] == chat
    srv.stop()
    srv.assert_clean_exit()
