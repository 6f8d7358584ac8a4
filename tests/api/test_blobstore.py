"""The embedded S3-compatible store of natter-api (docs/CONTRACT.md, issue 6, "Embedded
store"), reached as an S3 client would: URLs pre-signed by botocore (path-style, s3v4,
endpoint NATTER_PUBLIC_URL) with the store's keys are accepted; other secrets, unknown
access keys or scopes, expired URLs, unsigned uploads, bad keys, malformed signature
parameters, a wrong Host, oversized and incomplete bodies are refused with the contract's
problem codes and store nothing; an upload becomes visible only whole.

The module's server runs with a non-default access key, region and bucket (so the test
also shows that natter's own URLs follow NATTER_S3_*) and NATTER_ATTACHMENT_MAX_BYTES=4096.
Store requests are plain HTTP (requests, or http.client where requests would rewrite the
request); API requests go through the OpenAPI-checking Client.
"""
import datetime
import socket
import time
import uuid
from urllib.parse import urlsplit

import pytest

from attachlib import (OTHER_SECRET, SIGNED_PUT_HEADERS, assert_store_problem, checksum_b64,
                       blob_files, check_presigned, complete, drop_param, fetch_download,
                       key_of, presign, put_upload, random_bytes, raw_request, replace_param,
                       request_upload, sha256, start_store_api, store_get, store_has,
                       store_put, target_of, url_param, wait_blob_files, without_query)
from chatlib import make_group, new_users
from natterlib import (api_env, assert_problem, assert_status, describe, free_port,
                       new_state_dir, run_binary, tail)

ACCESS_KEY = "natter-test-access"
REGION = "eu-central-1"
BUCKET = "natter-blobs"
MAX_BYTES = 4096


@pytest.fixture(scope="module")
def store(start_api_module):
    """natter-api with the embedded store on its own keys, region and bucket."""
    return start_store_api(start_api_module, access_key=ACCESS_KEY, region=REGION,
                           bucket=BUCKET, NATTER_ATTACHMENT_MAX_BYTES=str(MAX_BYTES))


def new_key() -> str:
    return f"tests/{uuid.uuid4()}/object.bin"


def signed_headers(url: str) -> list[str]:
    return url_param(url, "X-Amz-SignedHeaders").split(";")


def botocore_signs_length(store) -> bool:
    url = presign(store, "PUT", new_key(), ContentType="text/plain", ContentLength=1)
    return "content-length" in signed_headers(url)


def put_object(store, key: str, data: bytes, content_type: str = "application/octet-stream"):
    """Store `data` under `key` through a botocore-signed PUT (asserting 200)."""
    url = presign(store, "PUT", key, ContentType=content_type, ContentLength=len(data), body=data)
    r = store_put(url, data, {"Content-Type": content_type})
    assert_status(r, 200)
    return r


def expect_problem(what: str, resp, status: int, code):
    try:
        return assert_problem(resp, status, code)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}") from None


def natter_upload(store, data: bytes, filename="n.txt", content_type="text/plain"):
    """An attachment uploaded through natter's own URL: (Attachment, its object key,
    the member's token)."""
    ((a, ta),) = new_users(store.client, 1, prefix="bs")
    cid = make_group(store.client, ta, "blobs", [])["id"]
    up = request_upload(store.client, ta, cid, filename, content_type, len(data), data=data)
    assert_status(put_upload(up["upload"], data), 200)
    att = complete(store.client, ta, up["attachment"]["id"])
    return att, key_of(store, up["upload"]["url"]), ta


# --------------------------------------------------------------------------- configuration

def test_natter_urls_follow_store_settings(store):
    """With NATTER_S3_ACCESS_KEY / _REGION / _BUCKET set, natter's upload URL is
    <NATTER_PUBLIC_URL>/<bucket>/att/… with credential <access key>/<day>/<region>/s3/
    aws4_request, and the whole upload/download works; the default bucket's path
    (/natter/…) is then no store path (404 not_found)."""
    data = b"custom settings\n"
    ((a, ta),) = new_users(store.client, 1, prefix="bs")
    cid = make_group(store.client, ta, "cfg", [])["id"]
    up = request_upload(store.client, ta, cid, "cfg.txt", "text/plain", len(data), data=data)
    check_presigned(store, up["upload"]["url"], ttl=900, signed_headers=SIGNED_PUT_HEADERS)
    assert urlsplit(up["upload"]["url"]).path.startswith(f"/{BUCKET}/att/{cid}/")
    assert_status(put_upload(up["upload"], data), 200)
    att = complete(store.client, ta, up["attachment"]["id"])
    assert fetch_download(store.client, ta, att["id"]).content == data
    r = store.client.get("/natter/att/1/" + str(uuid.uuid4()))
    assert_problem(r, 404, "not_found")


def test_dev_secret_generated(start_api):
    """In development with the embedded store and no NATTER_S3_SECRET_KEY, natter-api
    generates one into NATTER_STATE_DIR/s3-secret and signs with it: natter's URLs work,
    botocore URLs signed with that secret work, URLs signed with another are 403
    signature_mismatch."""
    gen = start_store_api(start_api, secret=None)
    assert len(gen.secret) >= 32, gen.secret
    data = b"generated secret\n"
    att, key, tok = natter_upload(gen, data)
    assert fetch_download(gen.client, tok, att["id"]).content == data
    assert store_has(gen, key) == data
    r = store_get(presign(gen, "GET", key, secret=OTHER_SECRET))
    assert_problem(r, 403, "signature_mismatch")


def run_api_expect_exit(**overrides) -> str:
    """natter-api with these overrides must exit non-zero within 10 s; its output."""
    env = api_env(new_state_dir("s3cfg"), free_port(), **overrides)
    proc = run_binary("natter-api", [], env, timeout=10)
    assert proc.returncode != 0, f"natter-api exited 0 with {overrides}:\n{tail(proc.output)}"
    return proc.output


def test_secret_required_outside_development_store(migrated):
    """NATTER_S3_SECRET_KEY is required in production and with an external store
    (NATTER_S3_ENDPOINT): without it natter-api refuses to start, naming it. A bad
    NATTER_S3_ADDRESSING (not path|virtual) is refused the same way."""
    out = run_api_expect_exit(NATTER_ENV="production", NATTER_PWHASH_COST="interactive",
                              NATTER_S3_SECRET_KEY=None)
    assert "NATTER_S3_SECRET_KEY" in out, tail(out)
    out = run_api_expect_exit(NATTER_S3_ENDPOINT="http://127.0.0.1:9", NATTER_S3_SECRET_KEY=None)
    assert "NATTER_S3_SECRET_KEY" in out, tail(out)
    out = run_api_expect_exit(NATTER_S3_ADDRESSING="sideways")
    assert "NATTER_S3_ADDRESSING" in out, tail(out)


# --------------------------------------------------------------------------- botocore

def test_botocore_put_get_head_delete(store):
    """URLs botocore pre-signs for the store (endpoint NATTER_PUBLIC_URL, path style,
    s3v4, the store's access key / secret / region) work: put_object signed with
    ContentType and ContentLength — if this botocore signs content-length (the
    X-Amz-SignedHeaders it produced are checked) the PUT is 200 with an ETag, else the
    store refuses it with 403 access_denied by design and the object goes up through
    natter's URL instead; get_object is 200 with the bytes and the stored Content-Type;
    head_object is 200 with the Content-Length; delete_object is 204, after which GET and
    HEAD are 404 (no_such_key)."""
    data = random_bytes(1500)
    key = new_key()
    url = presign(store, "PUT", key, ContentType="image/png", ContentLength=len(data), body=data)
    signed = signed_headers(url)
    assert "content-type" in signed and "host" in signed, url
    r = store_put(url, data, {"Content-Type": "image/png"})
    if "content-length" in signed:
        assert signed == ["content-length", "content-type", "host", "x-amz-checksum-sha256"], url
        assert_status(r, 200)
        assert r.headers.get("ETag"), describe(r)
        content_type = "image/png"
    else:
        assert_problem(r, 403, "access_denied")
        assert store_has(store, key) is None
        _, key, _ = natter_upload(store, data, "fallback.png", "image/png")
        content_type = "image/png"

    got = store_get(presign(store, "GET", key))
    assert_status(got, 200)
    assert sha256(got.content) == sha256(data)
    assert got.headers.get("Content-Type") == content_type, got.headers

    head = store_get(presign(store, "HEAD", key), method="HEAD")
    assert_status(head, 200)
    assert head.headers.get("Content-Length") == str(len(data)), head.headers
    assert head.content == b""

    r = store_get(presign(store, "DELETE", key), method="DELETE")
    assert_status(r, 204)
    assert store_has(store, key) is None
    assert_status(store_get(presign(store, "HEAD", key), method="HEAD"), 404)
    again = store_get(presign(store, "DELETE", key), method="DELETE")
    assert again.status_code in (204, 404), describe(again)


def test_botocore_reads_natter_upload(store):
    """An object uploaded through natter's own upload URL is readable through a
    get_object / head_object URL that botocore signs for the same key: natter's signer
    and botocore agree on the key, bucket and scope."""
    data = random_bytes(2000)
    att, key, _ = natter_upload(store, data, "by-natter.txt", "text/plain")
    got = store_get(presign(store, "GET", key))
    assert_status(got, 200)
    assert got.content == data
    assert got.headers.get("Content-Type") == "text/plain"
    head = store_get(presign(store, "HEAD", key), method="HEAD")
    assert_status(head, 200)
    assert head.headers.get("Content-Length") == str(len(data))


def test_response_overrides(store):
    """A GET signed with response-content-type and response-content-disposition
    (botocore's ResponseContentType / ResponseContentDisposition) answers with those
    headers instead of the stored type."""
    key = new_key()
    put_object(store, key, b"override me", "text/plain")
    cd = "attachment; filename=\"x_y.bin\"; filename*=UTF-8''x%C3%A9y.bin"
    url = presign(store, "GET", key, ResponseContentType="application/octet-stream",
                  ResponseContentDisposition=cd)
    r = store_get(url)
    assert_status(r, 200)
    assert r.content == b"override me"
    assert r.headers.get("Content-Type") == "application/octet-stream", r.headers
    assert r.headers.get("Content-Disposition") == cd, r.headers


def test_put_must_sign_length_type_and_digest(store):
    """A PUT whose URL does not sign content-length, content-type and
    x-amz-checksum-sha256 is 403 access_denied even with a valid signature (botocore
    put_object with ContentType only, ContentLength only, neither, or both without
    ChecksumSHA256), and stores nothing."""
    data = b"unsigned size or type"
    files_before = blob_files(store)
    key = new_key()
    cases = [("type only", {"ContentType": "text/plain"}, {"Content-Type": "text/plain"}),
             ("length only", {"ContentLength": len(data)}, {}),
             ("neither", {}, {}),
             ("no digest", {"ContentType": "text/plain", "ContentLength": len(data)},
              {"Content-Type": "text/plain"})]
    for what, params, headers in cases:
        url = presign(store, "PUT", key, **params)
        assert not {"content-length", "content-type", "x-amz-checksum-sha256"} <= \
            set(signed_headers(url)), url
        expect_problem(what, store_put(url, data, headers), 403, "access_denied")
    assert store_has(store, key) is None
    assert wait_blob_files(store, files_before) == files_before


def test_other_secret_refused(store):
    """URLs botocore signs with another secret (right access key, region, bucket) are 403
    signature_mismatch for GET, HEAD, PUT and DELETE: nothing is read, written or
    deleted."""
    key = new_key()
    put_object(store, key, b"keep me", "text/plain")
    files_before = blob_files(store)
    r = store_get(presign(store, "GET", key, secret=OTHER_SECRET))
    expect_problem("GET", r, 403, "signature_mismatch")
    assert b"keep me" not in r.content
    r = store_get(presign(store, "HEAD", key, secret=OTHER_SECRET), method="HEAD")
    assert r.status_code == 403, describe(r)
    url = presign(store, "PUT", key, secret=OTHER_SECRET, ContentType="text/plain",
                  ContentLength=9, body=b"overwrite")
    expect_problem("PUT", store_put(url, b"overwrite", {"Content-Type": "text/plain"}),
                   403, "signature_mismatch")
    r = store_get(presign(store, "DELETE", key, secret=OTHER_SECRET), method="DELETE")
    expect_problem("DELETE", r, 403, "signature_mismatch")
    assert store_has(store, key) == b"keep me"
    assert wait_blob_files(store, files_before) == files_before


def test_unknown_access_key_or_scope(store):
    """A URL signed (with the right secret) for another access key or another region is
    403 access_denied."""
    key = new_key()
    put_object(store, key, b"scoped", "text/plain")
    r = store_get(presign(store, "GET", key, access_key="someone-else"))
    expect_problem("other access key", r, 403, "access_denied")
    r = store_get(presign(store, "GET", key, region="us-west-2"))
    expect_problem("other region", r, 403, "access_denied")


def test_expired_urls(store):
    """A URL botocore signed (right keys) two hours ago for 60 s is 403 url_expired, for
    GET and for PUT (which stores nothing); one signed 30 s ago for an hour still works."""
    key = new_key()
    put_object(store, key, b"old news", "text/plain")
    then = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2)
    r = store_get(presign(store, "GET", key, at=then, expires=60))
    expect_problem("expired GET", r, 403, "url_expired")
    other = new_key()
    url = presign(store, "PUT", other, at=then, expires=60, ContentType="text/plain",
                  ContentLength=5, body=b"12345")
    expect_problem("expired PUT", store_put(url, b"12345", {"Content-Type": "text/plain"}),
                   403, "url_expired")
    assert store_has(store, other) is None
    recent = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=30)
    r = store_get(presign(store, "GET", key, at=recent, expires=3600))
    assert_status(r, 200)
    assert r.content == b"old news"


# --------------------------------------------------------------------------- refusals

def test_no_query_access_denied(store):
    """GET, HEAD, PUT and DELETE of an existing key without any pre-signed query are 403
    access_denied (HEAD: status only) and change nothing."""
    key = new_key()
    put_object(store, key, b"private", "text/plain")
    url = without_query(presign(store, "GET", key))
    r = store_get(url)
    expect_problem("GET", r, 403, "access_denied")
    assert b"private" not in r.content
    assert store_get(url, method="HEAD").status_code == 403
    r = store_put(url, b"public", {"Content-Type": "text/plain"})
    expect_problem("PUT", r, 403, "access_denied")
    expect_problem("DELETE", store_get(url, method="DELETE"), 403, "access_denied")
    r = store_get(drop_param(presign(store, "GET", key), "X-Amz-Signature"))
    assert r.status_code in (400, 403), describe(r)
    assert store_has(store, key) == b"private"


def test_invalid_keys(store):
    """Keys with '..', '.' or empty segments, or characters outside A-Za-z0-9._-/ are 400
    invalid_key, even with a valid-looking pre-signed query (sent with http.client, so the
    path reaches the server as written); a PUT to such a key stores nothing."""
    query = urlsplit(presign(store, "GET", new_key())).query
    files_before = blob_files(store)
    for path in (f"/{BUCKET}/att/../x", f"/{BUCKET}/../etc/passwd", f"/{BUCKET}/att/./x",
                 f"/{BUCKET}/att//x", f"/{BUCKET}/att/x/", f"/{BUCKET}/att/x!y",
                 f"/{BUCKET}/att/x,y", f"/{BUCKET}/"):
        r = raw_request(store.base_url, "GET", f"{path}?{query}")
        try:
            assert_store_problem(r, 400, "invalid_key")
        except AssertionError as exc:
            raise AssertionError(f"GET {path}: {exc}") from None
    put_url = presign(store, "PUT", new_key(), ContentType="text/plain", ContentLength=4,
                      body=b"evil")
    target = f"/{BUCKET}/att/../escape?{urlsplit(put_url).query}"
    r = raw_request(store.base_url, "PUT", target,
                    headers={"Content-Type": "text/plain"}, body=b"evil")
    expect_problem("PUT ..", r, 400, "invalid_key")
    assert wait_blob_files(store, files_before) == files_before


def test_malformed_signature_parameters(store):
    """A pre-signed query with a malformed X-Amz-Expires or X-Amz-Date is 400
    invalid_parameter."""
    key = new_key()
    put_object(store, key, b"params", "text/plain")
    url = presign(store, "GET", key)
    for what, name, value in (("expires not a number", "X-Amz-Expires", "soon"),
                              ("date not a date", "X-Amz-Date", "yesterday")):
        r = store_get(replace_param(url, name, value))
        expect_problem(what, r, 400, "invalid_parameter")


def test_method_not_allowed(store):
    """A method other than GET, HEAD, PUT or DELETE on a store path is 405
    method_not_allowed with an Allow header."""
    key = new_key()
    url = presign(store, "GET", key)
    r = raw_request(store.base_url, "POST", target_of(url),
                    headers={"Content-Type": "text/plain"}, body=b"x")
    assert_problem(r, 405, "method_not_allowed")
    assert r.headers.get("Allow"), describe(r)


def test_host_header_must_match(store):
    """The signed host is the Host header: the same valid GET URL sent with Host:
    localhost:<port> is 403 signature_mismatch, with Host: 127.0.0.1:<port> 200."""
    key = new_key()
    put_object(store, key, b"hosted", "text/plain")
    url = presign(store, "GET", key)
    port = store.srv.port
    r = raw_request(store.base_url, "GET", target_of(url), headers={"Host": f"localhost:{port}"})
    assert_problem(r, 403, "signature_mismatch")
    ok = raw_request(store.base_url, "GET", target_of(url), headers={"Host": f"127.0.0.1:{port}"})
    assert_status(ok, 200)
    assert ok.content == b"hosted"


def test_put_over_max_bytes(store):
    """A validly signed PUT with a Content-Length over NATTER_ATTACHMENT_MAX_BYTES is 413
    payload_too_large and stores nothing; exactly the maximum is 200."""
    if not botocore_signs_length(store):
        pytest.skip("this botocore does not sign content-length, which the store requires")
    files_before = blob_files(store)
    key = new_key()
    big = random_bytes(MAX_BYTES + 1)
    url = presign(store, "PUT", key, ContentType="text/plain", ContentLength=len(big), body=big)
    assert_problem(store_put(url, big, {"Content-Type": "text/plain"}), 413, "payload_too_large")
    assert store_has(store, key) is None
    assert wait_blob_files(store, files_before) == files_before
    put_object(store, key, big[:MAX_BYTES], "text/plain")
    assert store_has(store, key) == big[:MAX_BYTES]


def open_put(store, url: str, content_type: str, data: bytes) -> socket.socket:
    """A connection that sent a PUT's request line and headers (for `data`: its length
    and x-amz-checksum-sha256), the body still to come."""
    parts = urlsplit(url)
    s = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = (f"PUT {target_of(url)} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n"
            f"x-amz-checksum-sha256: {checksum_b64(data)}\r\n\r\n")
    s.sendall(head.encode())
    return s


def read_status(s: socket.socket) -> int:
    """The status code of the answer on s (bounded by the socket timeout)."""
    buf = b""
    while b"\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    line = buf.split(b"\r\n", 1)[0].decode("latin-1")
    assert line.startswith("HTTP/1."), f"no HTTP status line: {buf[:200]!r}"
    return int(line.split()[1])


def test_short_body_stores_nothing(store):
    """A PUT whose client goes away after part of the signed Content-Length stores nothing:
    the key stays 404 no_such_key and no file (not even a temp file) is left behind;
    the same URL with the whole body then works."""
    if not botocore_signs_length(store):
        pytest.skip("this botocore does not sign content-length, which the store requires")
    files_before = blob_files(store)
    key = new_key()
    data = random_bytes(3000)
    url = presign(store, "PUT", key, ContentType="text/plain", ContentLength=len(data), body=data)
    s = open_put(store, url, "text/plain", data)
    try:
        s.sendall(data[:1200])
        time.sleep(0.3)                 # let the server take the first part
        s.shutdown(socket.SHUT_WR)
        try:
            while s.recv(4096):
                pass
        except (socket.timeout, ConnectionResetError):
            pass
    finally:
        s.close()
    assert wait_blob_files(store, files_before) == files_before
    assert store_has(store, key) is None
    assert_status(store_put(url, data, {"Content-Type": "text/plain"}), 200)
    assert store_has(store, key) == data


def test_upload_visible_only_whole(store):
    """While a PUT of a new key is still streaming, GET answers 404, never a partial
    object; once the body is complete the PUT is 200 and GET returns the bytes."""
    if not botocore_signs_length(store):
        pytest.skip("this botocore does not sign content-length, which the store requires")
    new = random_bytes(3500)
    fresh = new_key()
    url = presign(store, "PUT", fresh, ContentType="text/plain", ContentLength=len(new), body=new)
    s = open_put(store, url, "text/plain", new)
    try:
        s.sendall(new[:1000])
        time.sleep(0.3)
        assert store_has(store, fresh) is None
        s.sendall(new[1000:])
        assert read_status(s) == 200
    finally:
        s.close()
    assert store_has(store, fresh) == new


def test_objects_are_never_replaced(store):
    """Issue 11 item 6: an object, once stored, keeps its bytes. A validly signed PUT of
    other bytes onto its key is 409 object_exists (the old bytes stay); a PUT of the same
    bytes again is 200 and changes nothing; a body whose SHA-256 is not the signed
    x-amz-checksum-sha256 is 400 bad_digest and stores nothing; HEAD and GET answer the
    stored digest in x-amz-checksum-sha256."""
    key = new_key()
    old = b"the old version\n" * 10
    put_object(store, key, old, "text/plain")
    other = b"the NEW version\n" * 10
    url = presign(store, "PUT", key, ContentType="text/plain", ContentLength=len(other),
                  body=other)
    expect_problem("other bytes", store_put(url, other, {"Content-Type": "text/plain"}),
                   409, "object_exists")
    assert store_has(store, key) == old
    again = presign(store, "PUT", key, ContentType="text/plain", ContentLength=len(old),
                    body=old)
    assert_status(store_put(again, old, {"Content-Type": "text/plain"}), 200)
    assert store_has(store, key) == old
    head = store_get(presign(store, "HEAD", key), method="HEAD")
    assert head.headers.get("x-amz-checksum-sha256") == checksum_b64(old), head.headers

    files_before = blob_files(store)
    fresh = new_key()
    url = presign(store, "PUT", fresh, ContentType="text/plain", ContentLength=len(other),
                  body=other)
    lie = old[:len(other)]
    assert len(lie) == len(other)
    r = store_put(url, lie, {"Content-Type": "text/plain",
                             "x-amz-checksum-sha256": checksum_b64(other)})
    expect_problem("wrong bytes", r, 400, "bad_digest")
    assert store_has(store, fresh) is None
    assert wait_blob_files(store, files_before) == files_before
