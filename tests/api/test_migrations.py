"""Migrations: `natter-api migrate` is idempotent and the server refuses a stale schema."""
import secrets

import pytest

from natterlib import (MIGRATIONS_DIR, Client, assert_status, common_env, db_url_for,
                       free_port, new_state_dir, psql, psql_int, run_binary, tail)

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
