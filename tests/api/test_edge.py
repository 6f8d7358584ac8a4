"""Hardening at the edge (issue 11): the /metrics token, slow clients (request-head and
body deadlines, the per-address connection cap), libmicrohttpd's own refusals in the
logs, and the access log of requests with paths that are not UTF-8."""
import secrets

from natterlib import Client, assert_problem, assert_status, common_env, new_state_dir, run_binary

METRICS_TOKEN = "metrics-" + secrets.token_hex(16)


def test_metrics_token_protects_metrics(start_api):
    """With NATTER_METRICS_TOKEN set, GET /metrics answers 401 unauthorized without an
    Authorization header, 401 invalid_token with another bearer token (an access JWT is
    not it either), both with WWW-Authenticate: Bearer; the right token gets the
    Prometheus text. /healthz stays public."""
    srv = start_api(NATTER_METRICS_TOKEN=METRICS_TOKEN)
    c = Client(srv.base_url)
    r = c.get("/metrics")
    assert_problem(r, 401, "unauthorized")
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
    for wrong in ("x", METRICS_TOKEN + "x", METRICS_TOKEN[:-1], "metrics-" + "0" * 32):
        r = c.get("/metrics", token=wrong)
        assert_problem(r, 401, "invalid_token")
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
        assert "natter_http_requests_total" not in r.text
    r = c.get("/metrics", token=METRICS_TOKEN)
    assert_status(r, 200)
    assert "natter_http_requests_total" in r.text
    assert_status(c.get("/healthz"), 200)


def test_metrics_public_without_token(client):
    """Without NATTER_METRICS_TOKEN (the default) /metrics needs no header."""
    assert_status(client.get("/metrics"), 200)


def test_metrics_token_too_short_is_a_startup_error():
    """A NATTER_METRICS_TOKEN under 16 bytes stops start-up naming the variable."""
    env = common_env(new_state_dir("metrics-token"), NATTER_METRICS_TOKEN="short")
    proc = run_binary("natter-api", [], env, timeout=30)
    assert proc.returncode != 0
    assert "NATTER_METRICS_TOKEN" in proc.output
