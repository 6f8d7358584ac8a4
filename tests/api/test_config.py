"""Configuration: production secret rules, bad values, the development secret file."""
import stat

import pytest

from natterlib import (TEST_PASSWORD, Client, api_env, assert_problem, assert_status,
                       free_port, login, new_state_dir, register, run_binary, tail)


def run_api_expect_exit(**overrides):
    """Start natter-api with these overrides; it must exit (non-zero) within 10 s."""
    env = api_env(new_state_dir("cfg"), free_port(), **overrides)
    proc = run_binary("natter-api", [], env, timeout=10)
    assert proc.returncode != 0, f"natter-api exited 0 with {overrides}:\n{tail(proc.output)}"
    return proc.output


def test_production_requires_secret(migrated):
    """NATTER_ENV=production without NATTER_JWT_SECRET refuses to start, naming it."""
    out = run_api_expect_exit(NATTER_ENV="production", NATTER_JWT_SECRET=None)
    assert "NATTER_JWT_SECRET" in out, tail(out)


def test_production_rejects_short_secret(migrated):
    """NATTER_ENV=production with a secret under 32 bytes refuses to start, naming it."""
    out = run_api_expect_exit(NATTER_ENV="production", NATTER_JWT_SECRET="s" * 31)
    assert "NATTER_JWT_SECRET" in out, tail(out)


def test_production_with_secret_serves(start_api):
    """NATTER_ENV=production with a proper secret (and a production hashing cost)
    serves."""
    srv = start_api(NATTER_ENV="production", NATTER_PWHASH_COST="interactive")
    assert_status(Client(srv.base_url).get("/healthz"), 200)


@pytest.mark.parametrize("var,value", [
    ("NATTER_PORT", "abc"),
    ("NATTER_PORT", "70000"),
    ("NATTER_HTTP_THREADS", "0"),
    ("NATTER_HTTP_THREADS", "many"),
    ("NATTER_ENV", "staging"),
    ("NATTER_PWHASH_COST", "extreme"),
    ("NATTER_ACCESS_TOKEN_TTL", "-5"),
    ("NATTER_LOGIN_MAX_PER_USER", "10x"),
    ("NATTER_DB_POOL_SIZE", "0"),
    ("NATTER_LOG_LEVEL", "loud"),
    ("NATTER_REDIS_URL", "http://nope"),
])
def test_bad_value_refused(migrated, var, value):
    """A bad configuration value makes natter-api exit non-zero naming the variable."""
    out = run_api_expect_exit(**{var: value})
    assert var in out, tail(out)


def test_dev_secret_file(start_api):
    """In development without NATTER_JWT_SECRET a secret is generated into
    $NATTER_STATE_DIR/jwt-secret (mode 0600) and reused by the next start: a token from
    the first server works on the second; another state dir gets another secret."""
    state = new_state_dir("devsecret")
    srv1 = start_api(state_dir=state, NATTER_JWT_SECRET=None)
    secret_file = state / "jwt-secret"
    assert secret_file.is_file()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_bytes()
    assert len(secret.strip()) >= 32
    c1 = Client(srv1.base_url)
    user = register(c1)
    token = login(c1, user["username"], TEST_PASSWORD)["access_token"]
    assert_status(c1.get("/v1/users/me", token=token), 200)
    srv1.stop()
    srv1.assert_clean_exit()

    srv2 = start_api(state_dir=state, NATTER_JWT_SECRET=None)
    assert secret_file.read_bytes() == secret
    assert_status(Client(srv2.base_url).get("/v1/users/me", token=token), 200)

    srv3 = start_api(NATTER_JWT_SECRET=None)     # fresh state dir: a different secret
    assert (srv3.state_dir / "jwt-secret").read_bytes() != secret
    r = Client(srv3.base_url).get("/v1/users/me", token=token)
    assert_problem(r, 401, "invalid_token")
