"""CORS: preflights and response headers for configured web origins."""
import pytest

from natterlib import Client, assert_problem, assert_status

ORIGIN = "https://app.example.com"
ORIGIN2 = "https://admin.example.com"
EVIL = "https://evil.example.com"


@pytest.fixture(scope="module")
def cors_api(start_api_module):
    return start_api_module(NATTER_CORS_ORIGINS=f"{ORIGIN},{ORIGIN2}")


@pytest.fixture
def cors(cors_api):
    c = Client(cors_api.base_url)
    yield c
    c.close()


def _list(resp, header):
    return {v.strip().lower() for v in resp.headers.get(header, "").split(",") if v.strip()}


def _preflight(client, path, origin, method, req_headers=None):
    headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if req_headers:
        headers["Access-Control-Request-Headers"] = req_headers
    return client.options(path, headers=headers)


def test_preflight_allowed_origin(cors):
    """A preflight from a configured origin gets 204 with Allow-Origin (that origin),
    Allow-Methods (the asked method), Allow-Headers (authorization, content-type), a
    numeric Max-Age and Vary: Origin."""
    r = _preflight(cors, "/v1/users/me", ORIGIN, "PATCH", "authorization, content-type")
    assert_status(r, 204)
    assert r.content == b""
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "patch" in _list(r, "Access-Control-Allow-Methods")
    assert {"authorization", "content-type"} <= _list(r, "Access-Control-Allow-Headers")
    assert int(r.headers["Access-Control-Max-Age"]) > 0
    assert "origin" in _list(r, "Vary")

    r = _preflight(cors, "/v1/auth/login", ORIGIN2, "POST", "content-type")
    assert_status(r, 204)
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN2
    assert "post" in _list(r, "Access-Control-Allow-Methods")


@pytest.mark.parametrize("origin", [
    EVIL,
    "http://app.example.com",                 # other scheme
    "https://app.example.com:8443",           # other port
    "https://app.example.com.evil.net",       # suffix trick
    "null",
])
def test_preflight_other_origin_denied(cors, origin):
    """A preflight from an origin that is not configured exactly gets 403
    cors_origin_denied and no Allow-Origin."""
    r = _preflight(cors, "/v1/users/me", origin, "GET", "authorization")
    assert_problem(r, 403, "cors_origin_denied")
    assert "Access-Control-Allow-Origin" not in r.headers


def test_simple_request_allowed_origin(cors):
    """A normal response to an allowed Origin carries Allow-Origin, Vary: Origin and
    Expose-Headers with X-Request-Id and Retry-After."""
    r = cors.get("/healthz", headers={"Origin": ORIGIN})
    assert_status(r, 200)
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "origin" in _list(r, "Vary")
    assert {"x-request-id", "retry-after"} <= _list(r, "Access-Control-Expose-Headers")


def test_error_response_allowed_origin(cors):
    """Error responses to an allowed Origin carry the CORS headers too, so a web client
    can read the problem."""
    r = cors.get("/v1/users/me", headers={"Origin": ORIGIN})
    assert_problem(r, 401, "unauthorized")
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "x-request-id" in _list(r, "Access-Control-Expose-Headers")


def test_simple_request_other_origin(cors):
    """A normal request from an unknown Origin is served but gets no Allow-Origin."""
    r = cors.get("/healthz", headers={"Origin": EVIL})
    assert_status(r, 200)
    assert "Access-Control-Allow-Origin" not in r.headers


def test_no_origin_no_cors_headers(cors):
    """Without Origin no Access-Control-* header is sent."""
    r = cors.get("/healthz")
    assert_status(r, 200)
    assert not [h for h in r.headers if h.lower().startswith("access-control-")]


def test_no_origins_configured_denies_preflight(client):
    """With NATTER_CORS_ORIGINS empty (the shared server) every preflight is 403."""
    r = _preflight(client, "/v1/users/me", ORIGIN, "GET")
    assert_problem(r, 403, "cors_origin_denied")
    r = client.get("/healthz", headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_wildcard_origin(start_api):
    """NATTER_CORS_ORIGINS=* allows any origin (Allow-Origin * or the origin)."""
    srv = start_api(NATTER_CORS_ORIGINS="*")
    c = Client(srv.base_url)
    r = _preflight(c, "/v1/auth/login", EVIL, "POST", "content-type")
    assert_status(r, 204)
    assert r.headers["Access-Control-Allow-Origin"] in ("*", EVIL)
    r = c.get("/healthz", headers={"Origin": EVIL})
    assert r.headers["Access-Control-Allow-Origin"] in ("*", EVIL)
