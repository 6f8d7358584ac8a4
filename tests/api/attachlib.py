"""Helpers of the attachment and embedded-store tests (docs/CONTRACT.md, issue 6).

Pre-signed URLs point at NATTER_PUBLIC_URL and the embedded store checks the Host header
against the signed host, so every server these tests use is started by `start_store_api`:
it picks the port itself and passes NATTER_PORT, NATTER_PUBLIC_URL=http://127.0.0.1:<port>
and a known NATTER_S3_SECRET_KEY (plus whatever access key / region / bucket the test
wants), then waits for /healthz.

The API (/v1/...) is reached through natterlib's OpenAPI-checking Client; the store
(/<bucket>/<key>) is not in the spec and is reached with plain `requests`, or with
`raw_request` (http.client) where requests would change the request: it normalises `..`
out of paths and always derives Content-Length from the body.

botocore (Debian's python3-botocore) pre-signs URLs for the embedded store with the same
keys (`presign`), optionally at a frozen time (`frozen_botocore_clock`), so the tests can
make expired URLs and reach keys natter would not sign.

Nothing here talks to a server or a database at import time.
"""
from __future__ import annotations

import base64
import contextlib
import datetime
import functools
import hashlib
import http.client
import os
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

import requests
from requests.structures import CaseInsensitiveDict

from natterlib import (HTTP_TIMEOUT, Client, ServerProcess, assert_status, describe,
                       free_port, load_spec, psql, psql_int)

# The embedded store's secret every test server gets (and botocore signs with).
S3_SECRET = "natter-attachment-tests-s3-secret-0123456789abcdef0123456789"
OTHER_SECRET = "another-secret-that-natter-does-not-know-0123456789abcdef"
# Defaults of the contract (NATTER_S3_ACCESS_KEY / _REGION / _BUCKET).
DEFAULT_ACCESS_KEY = "natter-embedded"
DEFAULT_REGION = "us-east-1"
DEFAULT_BUCKET = "natter"
DEFAULT_MAX_BYTES = 104857600
DEFAULT_UPLOAD_TTL = 900
DEFAULT_DOWNLOAD_TTL = 300

AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
SIGNED_PUT_HEADERS = "content-length;content-type;host;x-amz-checksum-sha256"
RFC3986_UNRESERVED = "-._~"           # with letters and digits: what filename* keeps as is
CLOCK_SKEW = 30                       # seconds between "now" here and a URL's X-Amz-Date


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checksum_b64(data: bytes) -> str:
    """x-amz-checksum-sha256 of data: the base64 of its SHA-256 digest."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# The digest an upload request declares when a test never uploads its bytes.
PLACEHOLDER_SHA256 = sha256(b"natter test: bytes that are never uploaded")


# --------------------------------------------------------------------------- servers

@dataclass
class StoreServer:
    """A natter-api whose pre-signed URLs point at itself, with the store keys it uses."""
    srv: ServerProcess
    client: Client
    secret: str
    access_key: str
    region: str
    bucket: str
    blob_dir: Path

    @property
    def base_url(self) -> str:
        return self.srv.base_url

    def key_path(self, key: str) -> str:
        """Path of an object key in the embedded store (path-style addressing)."""
        return f"/{self.bucket}/{key}"


def start_store_api(factory, *, secret: str | None = S3_SECRET, access_key: str | None = None,
                    region: str | None = None, bucket: str | None = None,
                    public_url: str | None = None, label: str | None = None,
                    **env) -> StoreServer:
    """Start natter-api through a start_api / start_api_module factory on a port chosen
    here, with NATTER_PUBLIC_URL = its own address (or `public_url`) and
    NATTER_S3_SECRET_KEY = `secret` (None: no secret, so a development server generates
    <NATTER_STATE_DIR>/s3-secret, read back here). access_key / region / bucket, when
    given, are passed
    as NATTER_S3_*; otherwise the server runs on the contract's defaults (any value the
    shared test environment sets for them is removed)."""
    port = int(env.pop("NATTER_PORT", None) or free_port())   # a test may pick the port
    # None removes a variable natterlib's common environment may set: the server then
    # runs on the contract's default
    overrides = {"NATTER_PORT": str(port),
                 "NATTER_PUBLIC_URL": public_url or f"http://127.0.0.1:{port}",
                 "NATTER_S3_SECRET_KEY": secret,
                 "NATTER_S3_ACCESS_KEY": access_key,
                 "NATTER_S3_REGION": region,
                 "NATTER_S3_BUCKET": bucket,
                 "NATTER_S3_ENDPOINT": None}
    overrides.update(env)
    srv = factory(wait=False, label=label or f"natter-api with the embedded store (:{port})",
                  **overrides)
    srv.port = port                   # the factory picked another one; ours is in the env
    srv.wait_healthy()
    if secret is None:
        secret = (srv.state_dir / "s3-secret").read_text().strip()
    blob_dir = Path(overrides["NATTER_BLOB_DIR"]) if overrides.get("NATTER_BLOB_DIR") \
        else srv.state_dir / "blobs"
    return StoreServer(srv, Client(srv.base_url, load_spec()), secret,
                       access_key or DEFAULT_ACCESS_KEY, region or DEFAULT_REGION,
                       bucket or DEFAULT_BUCKET, blob_dir)


def store_worker_env(store: StoreServer, **extra) -> dict:
    """The S3 settings a natter-worker needs to reach `store`'s embedded store."""
    env = {"NATTER_STORE_URL": store.base_url, "NATTER_S3_SECRET_KEY": store.secret,
           "NATTER_S3_ACCESS_KEY": store.access_key, "NATTER_S3_REGION": store.region,
           "NATTER_S3_BUCKET": store.bucket, "NATTER_S3_ENDPOINT": None}
    env.update(extra)
    return env


# --------------------------------------------------------------------------- URLs

def query_pairs(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True, strict_parsing=False)


def url_params(url: str) -> dict:
    """Decoded query parameters of a URL (each name must appear once)."""
    pairs = query_pairs(url)
    names = [k for k, _ in pairs]
    assert len(names) == len(set(names)), f"repeated query parameter in {url}"
    return dict(pairs)


def url_param(url: str, name: str) -> str:
    params = url_params(url)
    assert name in params, f"{name} missing from {url}"
    return params[name]


def replace_param(url: str, name: str, value: str) -> str:
    """The URL with one query parameter's value replaced; the other parameters keep
    their exact encoding and order."""
    parts = urlsplit(url)
    out, found = [], False
    for seg in parts.query.split("&"):
        if unquote(seg.split("=", 1)[0]) == name:
            seg = f"{seg.split('=', 1)[0]}={quote(value, safe='')}"
            found = True
        out.append(seg)
    assert found, f"{name} not in {url}"
    return urlunsplit(parts._replace(query="&".join(out)))


def drop_param(url: str, name: str) -> str:
    parts = urlsplit(url)
    segs = [s for s in parts.query.split("&") if unquote(s.split("=", 1)[0]) != name]
    return urlunsplit(parts._replace(query="&".join(segs)))


def with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=path))


def without_query(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(query=""))


def target_of(url: str) -> str:
    """Path and query of a URL, as sent on the request line."""
    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


def key_of(store: StoreServer, url: str) -> str:
    """The object key a path-style store URL names."""
    path = unquote(urlsplit(url).path)
    prefix = f"/{store.bucket}/"
    assert path.startswith(prefix), f"{url} is not in bucket {store.bucket}"
    return path[len(prefix):]


def flip_hex(text: str, index: int = 10) -> str:
    """text with the hex digit at `index` changed to another hex digit."""
    c = text[index]
    other = "0" if c != "0" else "1"
    return text[:index] + other + text[index + 1:]


def amz_date(url: str) -> datetime.datetime:
    return datetime.datetime.strptime(url_param(url, "X-Amz-Date"), AMZ_DATE_FORMAT) \
        .replace(tzinfo=datetime.timezone.utc)


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def check_presigned(store: StoreServer, url: str, *, ttl: int, signed_headers: str | None):
    """A SigV4 query-signed URL of `store`: the parameters the contract lists, the store's
    access key / region / service in the credential scope, X-Amz-Date about now and
    X-Amz-Expires = ttl. Returns the decoded parameters."""
    assert url.startswith(store.base_url + f"/{store.bucket}/"), \
        f"{url} does not point at NATTER_PUBLIC_URL/{store.bucket}/"
    p = url_params(url)
    for name in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                 "X-Amz-SignedHeaders", "X-Amz-Signature"):
        assert name in p, f"{name} missing from {url}"
    assert p["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256", url
    day = p["X-Amz-Date"][:8]
    assert p["X-Amz-Credential"] == \
        f"{store.access_key}/{day}/{store.region}/s3/aws4_request", url
    when = amz_date(url)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - when).total_seconds()) <= CLOCK_SKEW, f"X-Amz-Date far from now: {url}"
    assert p["X-Amz-Expires"] == str(ttl), url
    if signed_headers is not None:
        assert p["X-Amz-SignedHeaders"] == signed_headers, url
    sig = p["X-Amz-Signature"]
    assert len(sig) == 64 and all(c in "0123456789abcdef" for c in sig), url
    return p


def assert_expires_at(url: str, expires_at: str, ttl: int):
    """expires_at of an API answer is the URL's X-Amz-Date + ttl (to the second)."""
    got = parse_time(expires_at)
    want = amz_date(url) + datetime.timedelta(seconds=ttl)
    assert abs((got - want).total_seconds()) <= 1, \
        f"expires_at {expires_at} is not X-Amz-Date + {ttl} s ({want.isoformat()}): {url}"


def content_disposition_variants(filename: str) -> set[str]:
    """The Content-Disposition the contract asks for: `attachment; filename="<ASCII
    fallback>"; filename*=UTF-8''<RFC 3986 percent-encoded UTF-8>`. The contract replaces
    "non-ASCII" by `_` without saying per character or per UTF-8 byte: both are accepted."""
    def unsafe(code: int, ch: str) -> bool:
        return code < 0x20 or code >= 0x7F or ch in '"\\;%'

    per_char = "".join("_" if unsafe(ord(c), c) else c for c in filename)
    per_byte = "".join("_" if unsafe(b, chr(b)) else chr(b) for b in filename.encode())
    encoded = quote(filename.encode("utf-8"), safe=RFC3986_UNRESERVED)
    return {f"attachment; filename=\"{fb}\"; filename*=UTF-8''{encoded}"
            for fb in (per_char, per_byte)}


# --------------------------------------------------------------------------- botocore

_CLOCK_LOCK = threading.Lock()


@contextlib.contextmanager
def frozen_botocore_clock(when: datetime.datetime):
    """botocore signs as if the time were `when` (UTC) inside the block."""
    import botocore.auth as auth

    when = when.astimezone(datetime.timezone.utc)
    real = auth.datetime

    class Frozen(real.datetime):
        @classmethod
        def utcnow(cls):
            return when.replace(tzinfo=None)

        @classmethod
        def now(cls, tz=None):
            return when.astimezone(tz) if tz is not None else when.replace(tzinfo=None)

    fake = types.SimpleNamespace(**{k: getattr(real, k) for k in dir(real)
                                    if not k.startswith("__")})
    fake.datetime = Frozen
    with _CLOCK_LOCK:
        auth.datetime = fake
        try:
            yield
        finally:
            auth.datetime = real


@functools.lru_cache(maxsize=32)
def _s3_client(endpoint: str, region: str, access_key: str, secret: str):
    import botocore.session
    from botocore.config import Config

    session = botocore.session.get_session()
    return session.create_client(
        "s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      retries={"max_attempts": 1}))


def s3_client(store: StoreServer, *, secret: str | None = None, access_key: str | None = None,
              region: str | None = None):
    """A botocore S3 client for the embedded store: endpoint NATTER_PUBLIC_URL, path-style
    addressing, SigV4 (s3v4), the store's keys unless overridden (cached: creating one
    loads botocore's service model)."""
    return _s3_client(store.base_url, region or store.region, access_key or store.access_key,
                      secret or store.secret)


BOTO_METHODS = {"PUT": "put_object", "GET": "get_object", "HEAD": "head_object",
                "DELETE": "delete_object"}


def presign(store: StoreServer, method: str, key: str, *, expires: int = 300,
            at: datetime.datetime | None = None, secret: str | None = None,
            access_key: str | None = None, region: str | None = None,
            body: bytes | None = None, **params) -> str:
    """A URL botocore pre-signs for METHOD on `key` in the store's bucket (params such as
    ContentType, ContentLength, ResponseContentType go to the operation; `body` signs its
    digest as ChecksumSHA256 = x-amz-checksum-sha256, which the store requires of a PUT);
    `at` freezes botocore's clock (the URL's X-Amz-Date is then checked to be `at`)."""
    c = s3_client(store, secret=secret, access_key=access_key, region=region)
    args = {"Bucket": store.bucket, "Key": key, **params}
    if body is not None:
        args["ChecksumSHA256"] = checksum_b64(body)
    if at is None:
        url = c.generate_presigned_url(BOTO_METHODS[method], Params=args, ExpiresIn=expires)
    else:
        with frozen_botocore_clock(at):
            url = c.generate_presigned_url(BOTO_METHODS[method], Params=args,
                                           ExpiresIn=expires)
        assert url_param(url, "X-Amz-Date") == \
            at.astimezone(datetime.timezone.utc).strftime(AMZ_DATE_FORMAT), \
            f"botocore did not sign at the frozen time: {url}"
    assert url.startswith(store.base_url + f"/{store.bucket}/"), url
    return url


# --------------------------------------------------------------------------- store requests

def store_put(url: str, data: bytes, headers: dict | None = None) -> requests.Response:
    """PUT `data` to a store URL with exactly `headers` (requests adds Content-Length
    from the body when it is not empty; an empty body keeps the given Content-Length),
    plus x-amz-checksum-sha256 of `data` when the URL signs that header and `headers`
    does not give it (a test that sends another digest gives it)."""
    hdrs = dict(headers or {})
    signed = dict(query_pairs(url)).get("X-Amz-SignedHeaders", "").split(";")
    if "x-amz-checksum-sha256" in signed and \
            "x-amz-checksum-sha256" not in {k.lower() for k in hdrs}:
        hdrs["x-amz-checksum-sha256"] = checksum_b64(data)
    return requests.put(url, data=data, headers=hdrs, timeout=HTTP_TIMEOUT,
                        allow_redirects=False)


def store_get(url: str, method: str = "GET", headers: dict | None = None) -> requests.Response:
    return requests.request(method, url, headers=dict(headers or {}), timeout=HTTP_TIMEOUT,
                            allow_redirects=False)


def raw_request(base_url: str, method: str, target: str, headers: dict | None = None,
                body: bytes | None = None, chunks: list[bytes] | None = None,
                timeout: float = HTTP_TIMEOUT) -> requests.Response:
    """Send one request exactly as given (request-line target not normalised, no
    automatic headers but Host unless `headers` has one, Content-Length only if given or
    a body is sent without chunks; chunks -> Transfer-Encoding: chunked). The answer comes
    back as a requests.Response, so assert_problem and describe work on it."""
    u = urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        lower = {k.lower() for k in hdrs}
        conn.putrequest(method, target, skip_host="host" in lower, skip_accept_encoding=True)
        for k, v in hdrs.items():
            conn.putheader(k, v)
        if chunks is not None:
            conn.putheader("Transfer-Encoding", "chunked")
        elif body is not None and "content-length" not in lower:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        try:
            if chunks is not None:
                for c in chunks:
                    conn.send(b"%x\r\n" % len(c) + c + b"\r\n")
                conn.send(b"0\r\n\r\n")
            elif body:
                conn.send(body)
        except (BrokenPipeError, ConnectionResetError):
            pass                           # the server answered early and closed
        resp = conn.getresponse()
        content = resp.read()
        out = requests.Response()
        out.status_code = resp.status
        out._content = content
        out.headers = CaseInsensitiveDict(resp.getheaders())
        out.url = base_url + target
        out.request = types.SimpleNamespace(method=method, path_url=target)
        return out
    finally:
        conn.close()


def assert_store_problem(resp: requests.Response, status: int, code: str) -> dict:
    """assert_problem for a store answer to a raw request whose path the server may
    report percent-encoded in `instance` (compared decoded)."""
    msg = describe(resp)
    assert resp.status_code == status, f"expected {status} {code}: {msg}"
    assert resp.headers.get("Content-Type", "").split(";")[0] == "application/problem+json", msg
    body = resp.json()
    assert body.get("code") == code and body.get("status") == status, msg
    assert body.get("type") == f"urn:natter:problem:{code}", msg
    assert isinstance(body.get("title"), str) and body["title"], msg
    assert unquote(str(body.get("instance"))) == \
        unquote(resp.request.path_url.split("?", 1)[0]), msg
    assert body.get("request_id") == resp.headers.get("X-Request-Id"), msg
    return body


def store_has(store: StoreServer, key: str) -> bytes | None:
    """The object's bytes (GET through a botocore-signed URL), None when the store answers
    404 no_such_key."""
    r = store_get(presign(store, "GET", key))
    if r.status_code == 404:
        assert r.json().get("code") == "no_such_key", describe(r)
        return None
    assert_status(r, 200)
    return r.content


def blob_files(store: StoreServer) -> dict[str, int]:
    """{file name: size} of everything in the store's data directory."""
    if not store.blob_dir.exists():
        return {}
    return {p.name: p.stat().st_size for p in store.blob_dir.rglob("*") if p.is_file()}


def files_holding(store: StoreServer, data: bytes) -> list[str]:
    """Files of the data directory whose content is exactly `data` (layout-independent)."""
    want = sha256(data)
    out = []
    for p in store.blob_dir.rglob("*"):
        try:
            if p.is_file() and p.stat().st_size == len(data) and sha256(p.read_bytes()) == want:
                out.append(p.name)
        except FileNotFoundError:
            pass
    return out


def wait_blob_files(store: StoreServer, expected: dict[str, int], timeout: float = 5) -> dict:
    """Wait (bounded) until the data directory lists exactly `expected` (temp files of a
    refused upload may take a moment to go); returns the final listing."""
    deadline = time.monotonic() + timeout
    while True:
        got = blob_files(store)
        if got == expected or time.monotonic() >= deadline:
            return got
        time.sleep(0.05)


# --------------------------------------------------------------------------- API helpers

def attachments_path(chat_id) -> str:
    return f"/v1/chats/{chat_id}/attachments"


def attachment_path(att_id, *rest) -> str:
    return "/".join([f"/v1/attachments/{att_id}", *map(str, rest)])


def request_upload_raw(client: Client, tok: str, chat_id, filename="notes.txt",
                       content_type="text/plain", size=0, *, data: bytes | None = None,
                       **extra) -> requests.Response:
    """POST an upload request; its sha256 is that of `data` when given (which must be
    `size` bytes), else PLACEHOLDER_SHA256; `extra` adds or (sha256=None) removes fields."""
    if data is not None:
        assert len(data) == size, "request_upload: size differs from len(data)"
    body = {"filename": filename, "content_type": content_type, "size": size,
            "sha256": sha256(data) if data is not None else PLACEHOLDER_SHA256}
    body.update(extra)
    body = {k: v for k, v in body.items() if v is not None}
    return client.post(attachments_path(chat_id), json=body, token=tok)


def request_upload(client: Client, tok: str, chat_id, filename="notes.txt",
                   content_type="text/plain", size=0, *, data: bytes | None = None) -> dict:
    """POST an upload request, asserting 201 and a Location of the attachment; the body
    {attachment, upload}. Pass `data` for an upload that will PUT those bytes."""
    r = request_upload_raw(client, tok, chat_id, filename, content_type, size, data=data)
    assert_status(r, 201)
    body = r.json()
    assert r.headers.get("Location") == attachment_path(body["attachment"]["id"]), describe(r)
    return body


def put_upload(upload: dict, data: bytes, headers: dict | None = None) -> requests.Response:
    """PUT data to upload.url with exactly upload.headers (or `headers`)."""
    assert upload["method"] == "PUT", upload
    hdrs = dict(upload["headers"] if headers is None else headers)
    if data and hdrs.get("Content-Length") not in (None, str(len(data))):
        # requests derives Content-Length from the body: a test that sends another size
        # must say so with headers= (and the size it says is then what goes out)
        raise ValueError("put_upload: Content-Length differs from the body; pass headers=")
    return store_put(upload["url"], data, hdrs)


def complete_raw(client: Client, tok: str, att_id) -> requests.Response:
    return client.post(attachment_path(att_id, "complete"), token=tok)


def complete(client: Client, tok: str, att_id) -> dict:
    r = complete_raw(client, tok, att_id)
    assert_status(r, 200)
    att = r.json()
    assert att["id"] == att_id and att["status"] == "uploaded", describe(r)
    return att


def download_raw(client: Client, tok: str, att_id, redirect: bool = False) -> requests.Response:
    return client.get(attachment_path(att_id) + ("?redirect=1" if redirect else ""), token=tok)


def download_info(client: Client, tok: str, att_id) -> dict:
    """GET /v1/attachments/{id} asserting 200; {attachment, download}."""
    r = download_raw(client, tok, att_id)
    assert_status(r, 200)
    return r.json()


def upload_attachment(client: Client, tok: str, chat_id, data: bytes,
                      filename: str = "notes.txt", content_type: str = "text/plain") -> dict:
    """The whole upload: request a URL, PUT the bytes (200), complete (200); the
    uploaded Attachment."""
    up = request_upload(client, tok, chat_id, filename, content_type, len(data), data=data)
    r = put_upload(up["upload"], data)
    assert_status(r, 200)
    return complete(client, tok, up["attachment"]["id"])


def fetch_download(client: Client, tok: str, att_id) -> requests.Response:
    """Download an attachment through its pre-signed GET URL (asserting 200)."""
    url = download_info(client, tok, att_id)["download"]["url"]
    r = store_get(url)
    assert_status(r, 200)
    return r


# --------------------------------------------------------------------------- database

def attachment_status(att_id) -> str | None:
    """The attachment row's status, None when there is no row."""
    out = psql("SELECT status FROM attachments WHERE id = $1::uuid", att_id)
    return out or None


def attachment_rows(chat_id) -> int:
    return psql_int("SELECT count(*) FROM attachments WHERE chat_id = $1", chat_id)


def object_key_db(att_id) -> str:
    return psql("SELECT object_key FROM attachments WHERE id = $1::uuid", att_id)


def backdate_attachment(att_id, interval: str = "2 days"):
    psql(f"UPDATE attachments SET created_at = now() - interval '{interval}' "
         "WHERE id = $1::uuid", att_id)


def random_bytes(n: int) -> bytes:
    return os.urandom(n)
