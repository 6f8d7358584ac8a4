"""Fixtures of the Natter black-box API tests.

Run through `make test` (scripts/test.sh), which starts a private PostgreSQL and Redis and
sets NATTER_BIN_DIR, NATTER_TEST_DATABASE_URL, NATTER_TEST_REDIS_URL,
NATTER_TEST_REDIS_SOCKET and NATTER_TEST_STATE_DIR. The helpers live in the natterlib package.

Fixtures:
- migrated     (session) `natter-api migrate` ran once with exit 0
- api          (session) the shared natter-api most tests talk to
- client       a Client (OpenAPI-checking HTTP client) for `api`
- start_api    factory: start_api(state_dir=None, wait=True, **env) -> ServerProcess;
               env values override the defaults, None removes a variable. Every server
               started is stopped with SIGTERM at teardown and must exit 0 within 15 s
               with no sanitizer report in its log.
- start_api_module  the same, module-scoped
- worker       factory: worker(threads=3, wait=True, port=None, **env) -> ServerProcess
               (natter-worker; its operator listener on a free port: .base_url)
- private_redis  a throw-away redis-server (its .url / .socket) for empty counters
"""
import os
from pathlib import Path

import pytest

from natterlib import (Client, Launcher, PrivateRedis, common_env, load_spec, missing_env,
                       new_state_dir, psql, psql_int, run_binary, tail)


def pytest_configure(config):
    missing = missing_env()
    if missing and not config.getoption("collectonly"):
        raise pytest.UsageError(
            "the Natter API tests need " + ", ".join(missing) + ": run them with `make test` "
            "(scripts/test.sh builds the binaries, starts PostgreSQL and Redis and sets "
            "these variables)")


@pytest.fixture(scope="session")
def spec():
    return load_spec()


@pytest.fixture(scope="session")
def migrated():
    """Applies the migrations to the test database once per session."""
    proc = run_binary("natter-api", ["migrate"], common_env(new_state_dir("migrate")),
                      timeout=60)
    assert proc.returncode == 0, \
        f"natter-api migrate exited with {proc.returncode}:\n{tail(proc.output)}"
    # `make test-citus`: the test database is a Citus coordinator; distribute the tables
    # as declared (once: a second session finds them distributed)
    declaration = os.environ.get("NATTER_TEST_CITUS_DISTRIBUTE")
    if declaration and psql_int("SELECT count(*) FROM pg_dist_partition") == 0:
        psql(Path(declaration).read_text(), timeout=300)


@pytest.fixture(scope="session")
def api(migrated):
    launcher = Launcher()
    srv = launcher.api(label="the shared natter-api (session fixture `api`)")
    yield srv
    launcher.close()


@pytest.fixture
def client(api, spec):
    c = Client(api.base_url, spec)
    yield c
    c.close()


@pytest.fixture
def start_api(migrated):
    launcher = Launcher()
    yield launcher.api
    launcher.close()


@pytest.fixture(scope="module")
def start_api_module(migrated):
    launcher = Launcher()
    yield launcher.api
    launcher.close()


@pytest.fixture
def worker(migrated):
    launcher = Launcher()
    yield launcher.worker
    launcher.close()


@pytest.fixture
def private_redis():
    redis = PrivateRedis()
    yield redis
    redis.stop()
