"""The HTTP client (Client: every response checked against the spec and the contract's
invariants), assertions on responses and Prometheus metrics parsing.
"""
from __future__ import annotations

import re

import requests
import requests.adapters
import urllib3

from .openapi import OpenAPI, load_spec, media_type

HTTP_TIMEOUT = 10          # seconds, every HTTP call

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


# ---------------------------------------------------------------- metrics

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def metric_samples(text: str) -> dict:
    """{'name{labels}': value} of a Prometheus text page."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if m:
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def describe(resp: requests.Response) -> str:
    body = resp.content[:2000].decode("utf-8", "replace")
    return (f"{resp.request.method} {resp.request.path_url} -> {resp.status_code} "
            f"{resp.headers.get('Content-Type')!r}: {body}")


class _TimeoutAdapter(requests.adapters.HTTPAdapter):
    """Puts the timeout on the connection pool too: requests ignores `timeout` when it
    streams a chunked (generator) body, and would then wait for the server forever.
    source_ip binds the client's end of each connection (any of 127.0.0.0/8 reaches a
    server on 127.0.0.1), so that a test can speak from several client addresses."""

    def __init__(self, source_ip: str | None = None):
        self._source_ip = source_ip
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs.setdefault("timeout", urllib3.Timeout(connect=HTTP_TIMEOUT, read=HTTP_TIMEOUT))
        if self._source_ip:
            kwargs["source_address"] = (self._source_ip, 0)
        super().init_poolmanager(*args, **kwargs)


class Client:
    """requests.Session that checks every response against the OpenAPI spec and the
    contract's invariants (X-Request-Id, problem bodies).

    raw=True skips the OpenAPI check only; the X-Request-Id and problem checks always run.
    json=None sends no JSON body (send `null` with data=b"null").
    source_ip: the client address to connect from (a loopback address such as 127.0.0.7)."""

    def __init__(self, base_url: str, spec: OpenAPI | None = None, source_ip: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.spec = spec if spec is not None else load_spec()
        self.session = requests.Session()
        self.session.mount("http://", _TimeoutAdapter(source_ip))

    def close(self):
        self.session.close()

    def request(self, method: str, path: str, *, json=None, data=None, headers=None,
                token=None, params=None, raw=False, timeout: float = HTTP_TIMEOUT):
        hdrs = {}
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        hdrs.update(headers or {})
        resp = self.session.request(method, self.base_url + path, json=json, data=data,
                                    headers=hdrs, params=params, timeout=timeout,
                                    allow_redirects=False)
        check_invariants(resp)
        if not raw:
            failures = self.spec.check_response(method, path.split("?", 1)[0], resp)
            assert not failures, ("response disagrees with openapi/openapi.yaml:\n  "
                                  + "\n  ".join(failures) + "\n" + describe(resp))
        return resp

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def patch(self, path, **kw):
        return self.request("PATCH", path, **kw)

    def put(self, path, **kw):
        return self.request("PUT", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def options(self, path, **kw):
        return self.request("OPTIONS", path, **kw)


def check_invariants(resp: requests.Response):
    """What holds for every response of the contract."""
    rid = resp.headers.get("X-Request-Id")
    assert rid, f"no X-Request-Id header: {describe(resp)}"
    assert REQUEST_ID_RE.match(rid), f"insane X-Request-Id {rid!r}: {describe(resp)}"
    media = media_type(resp)
    if resp.status_code >= 400:
        assert media == "application/problem+json", \
            f"error without application/problem+json: {describe(resp)}"
    if media == "application/problem+json":
        try:
            body = resp.json()
        except ValueError:
            raise AssertionError(f"problem body is not JSON: {describe(resp)}") from None
        assert isinstance(body, dict), f"problem body is not an object: {describe(resp)}"
        assert isinstance(body.get("code"), str) and body["code"], \
            f"problem without code: {describe(resp)}"
        assert body.get("status") == resp.status_code, \
            f"problem status {body.get('status')!r} != HTTP {resp.status_code}: {describe(resp)}"
        assert body.get("request_id") == rid, \
            f"problem request_id {body.get('request_id')!r} != X-Request-Id {rid!r}"


def assert_status(resp: requests.Response, *statuses: int):
    assert resp.status_code in statuses, f"expected {statuses}: {describe(resp)}"


def assert_problem(resp: requests.Response, status: int, code, field: str | None = None) -> dict:
    """Assert an RFC 9457 problem with this status and code (a str or a set of accepted
    codes) and, if given, `field`. Returns the body."""
    msg = describe(resp)
    assert resp.status_code == status, f"expected {status} {code}: {msg}"
    assert media_type(resp) == "application/problem+json", msg
    body = resp.json()
    codes = {code} if isinstance(code, str) else set(code)
    assert body.get("code") in codes, f"expected code {sorted(codes)}: {msg}"
    assert body.get("status") == status, msg
    assert body.get("type") == f"urn:natter:problem:{body['code']}", msg
    assert isinstance(body.get("title"), str) and body["title"], msg
    assert isinstance(body.get("detail", ""), str), msg
    assert body.get("instance") == resp.request.path_url.split("?", 1)[0], msg
    assert body.get("request_id") == resp.headers.get("X-Request-Id"), msg
    if field is not None:
        assert body.get("field") == field, f"expected field {field!r}: {msg}"
    return body
