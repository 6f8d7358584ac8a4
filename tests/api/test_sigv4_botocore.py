"""common/sigv4.c (through $NATTER_BIN_DIR/sigv4-tool) against botocore, byte for byte.

botocore is Debian's python3-botocore. Its clock is frozen by replacing the `datetime`
that botocore.auth sees, so both sides sign at the same instant. The inputs cover what
natter hands out: GET URLs with response-content-disposition (a filename with quotes and
non-ASCII characters) and PUT URLs with content-type and content-length signed, for path
style and virtual-host style endpoints, plus natter's own header-signed HEAD/DELETE.

What botocore does, and the C code must match:
- query: the operation's parameters in the order given, then X-Amz-Algorithm,
  X-Amz-Credential, X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders, X-Amz-Signature;
- put_object with ContentType and ContentLength signs content-length;content-type;host,
  and with ChecksumSHA256 also x-amz-checksum-sha256 (natter's upload URLs);
- the signed host is lowercased and loses the scheme's default port; the URL does not.
"""
from __future__ import annotations

import calendar
import contextlib
import datetime
import functools
import types
from unittest import mock

import pytest

from natterlib import child_env, run_binary

botocore = pytest.importorskip("botocore")
import botocore.config  # noqa: E402
import botocore.session  # noqa: E402
from botocore.auth import S3SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from botocore.utils import percent_encode  # noqa: E402

AK = "AKIAIOSFODNN7EXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
BUCKET = "natter"
NOW = datetime.datetime(2026, 11, 21, 9, 10, 31)  # naive UTC, as botocore's utcnow()
NOW_S = calendar.timegm(NOW.timetuple())

# (addressing, endpoint, region)
TARGETS = [
    ("path", "http://127.0.0.1:9000", "us-east-1"),
    ("path", "https://S3.Natter.Test:8443", "eu-west-1"),
    ("virtual", "http://s3.natter.test:9000", "us-east-1"),
    ("virtual", "https://s3.amazonaws.com", "us-east-1"),
    ("virtual", "http://s3.natter.test:80", "eu-central-1"),
]
TARGET_IDS = ["path-ip", "path-mixed-case", "virtual-port", "virtual-aws", "virtual-default-port"]

KEYS = [
    "att/42/9f1c2d7e/report.pdf",
    'att/1/a b+c~d/\u00e9\u20ac\U0001F600 "q" (1)&=?#%;,.txt',
    "/lead//double/./dot/../x",
]
DISPOSITIONS = [
    'attachment; filename="r\u00e9sum\u00e9 \\"final\\" \u2014 \u6f22\u5b57 \U0001F600.pdf"; '
    "filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%80%94.pdf",
    'inline; filename="a+b=c&d?.png"',
]


@functools.lru_cache(maxsize=None)
def _client(addressing: str, endpoint: str, region: str):
    session = botocore.session.get_session()
    return session.create_client(
        "s3", region_name=region, endpoint_url=endpoint, aws_access_key_id=AK,
        aws_secret_access_key=SK,
        config=botocore.config.Config(signature_version="s3v4",
                                      s3={"addressing_style": addressing}))


@contextlib.contextmanager
def _frozen_clock(when: datetime.datetime = NOW):
    """Freezes the clock botocore.auth reads (datetime.datetime.utcnow(); newer botocore
    releases read it through get_current_datetime()), for botocore.auth only."""

    class Frozen(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return cls(when.year, when.month, when.day, when.hour, when.minute, when.second)

        @classmethod
        def now(cls, tz=None):
            t = cls.utcnow()
            return t.replace(tzinfo=datetime.timezone.utc).astimezone(tz) if tz else t

    shim = types.SimpleNamespace(**{k: getattr(datetime, k) for k in dir(datetime)
                                    if not k.startswith("__")})
    shim.datetime = Frozen
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(botocore.auth, "datetime", shim))
        if hasattr(botocore.auth, "get_current_datetime"):
            stack.enter_context(mock.patch.object(botocore.auth, "get_current_datetime",
                                                  Frozen.utcnow))
        yield


def _botocore_presign(target, operation: str, params: dict, expires: int,
                      bucket: str = BUCKET, when: datetime.datetime = NOW) -> str:
    client = _client(*target)
    with _frozen_clock(when):
        return client.generate_presigned_url(operation, Params={"Bucket": bucket, **params},
                                             ExpiresIn=expires)


def _tool(target, *args, ok: bool = True, bucket: str = BUCKET):
    addressing, endpoint, region = target
    env = child_env({
        "NATTER_S3_ENDPOINT": endpoint,
        "NATTER_S3_BUCKET": bucket,
        "NATTER_S3_REGION": region,
        "NATTER_S3_ACCESS_KEY": AK,
        "NATTER_S3_SECRET_KEY": SK,
        "NATTER_S3_ADDRESSING": addressing,
    })
    proc = run_binary("sigv4-tool", [str(a) for a in args], env=env)
    if ok:
        assert proc.returncode == 0, f"sigv4-tool {args[:3]} exited {proc.returncode}:\n{proc.output}"
    return proc


def _tool_presign(target, method, key, expires, headers=(), query=()) -> str:
    args = ["presign", method, key, NOW_S, expires]
    for name, value in headers:
        args += ["--header", f"{name}={value}"]
    for name, value in query:
        args += ["--query", f"{name}={value}"]
    out = _tool(target, *args).output
    assert out.endswith("\n") and out.count("\n") == 1, out
    return out[:-1]


# --------------------------------------------------------------------------- presigned GET

@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
@pytest.mark.parametrize("key", KEYS, ids=["plain", "odd", "dots"])
def test_presigned_get_matches_botocore(target, key):
    for disposition in DISPOSITIONS:
        want = _botocore_presign(target, "get_object",
                                 {"Key": key, "ResponseContentDisposition": disposition}, 900)
        got = _tool_presign(target, "GET", key, 900,
                            query=[("response-content-disposition", disposition)])
        assert got == want


@pytest.mark.parametrize("target", TARGETS[:3], ids=TARGET_IDS[:3])
def test_presigned_get_keeps_the_callers_parameter_order(target):
    key = KEYS[1]
    for expires in (1, 3600, 604800):
        want = _botocore_presign(target, "get_object", {
            "Key": key, "ResponseContentType": "application/pdf",
            "ResponseContentDisposition": DISPOSITIONS[0]}, expires)
        got = _tool_presign(target, "GET", key, expires, query=[
            ("response-content-type", "application/pdf"),
            ("response-content-disposition", DISPOSITIONS[0])])
        assert got == want
        assert got.index("response-content-type=") < got.index("response-content-disposition=")


# --------------------------------------------------------------------------- presigned PUT

@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
@pytest.mark.parametrize("key", KEYS[:2], ids=["plain", "odd"])
def test_presigned_put_with_checksum_matches_botocore(target, key):
    """natter's upload URLs also sign x-amz-checksum-sha256 (issue 11 item 6): byte for
    byte botocore's put_object with ChecksumSHA256, which S3 verifies against the body."""
    digest = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg="
    want = _botocore_presign(target, "put_object",
                             {"Key": key, "ContentType": "image/png", "ContentLength": 1234567,
                              "ChecksumSHA256": digest}, 900)
    assert ("&X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost"
            "%3Bx-amz-checksum-sha256&") in want
    got = _tool_presign(target, "PUT", key, 900,
                        headers=[("content-type", "image/png"), ("content-length", "1234567"),
                                 ("x-amz-checksum-sha256", digest)])
    assert got == want


@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
@pytest.mark.parametrize("key", KEYS[:2], ids=["plain", "odd"])
def test_presigned_put_matches_botocore(target, key):
    want = _botocore_presign(target, "put_object",
                             {"Key": key, "ContentType": "image/png", "ContentLength": 1234567}, 900)
    # botocore signs both headers natter requires
    assert "&X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost&" in want
    got = _tool_presign(target, "PUT", key, 900,
                        headers=[("content-type", "image/png"), ("content-length", "1234567")])
    assert got == want


def test_published_aws_example():
    """S3 docs, "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)"."""
    published = (
        "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    target = ("virtual", "https://s3.amazonaws.com", "us-east-1")
    when = datetime.datetime(2013, 5, 24)
    assert _botocore_presign(target, "get_object", {"Key": "test.txt"}, 86400,
                             bucket="examplebucket", when=when) == published
    out = _tool(target, "presign", "GET", "test.txt", calendar.timegm(when.timetuple()), 86400,
                bucket="examplebucket").output
    assert out == published + "\n"


# --------------------------------------------------------------------------- verification

def _verify(target, method, url, now, headers=(), required=()):
    args = ["verify", method, url, now]
    for name, value in headers:
        args += ["--header", f"{name}={value}"]
    for name in required:
        args += ["--require", name]
    proc = _tool(target, *args, ok=False)
    assert proc.returncode in (0, 1), proc.output
    return proc.output.strip()


@pytest.mark.parametrize("target", TARGETS[:3], ids=TARGET_IDS[:3])
def test_verify_accepts_botocore_urls(target):
    get = _botocore_presign(target, "get_object",
                            {"Key": KEYS[1], "ResponseContentDisposition": DISPOSITIONS[0]}, 300)
    assert _verify(target, "GET", get, NOW_S + 10) == "OK"
    assert _verify(target, "GET", get, NOW_S + 301) == "EXPIRED"
    assert _verify(target, "HEAD", get, NOW_S + 10) == "BAD_SIGNATURE"
    tampered = get.replace("filename%3D%22r", "filename%3D%22R", 1)
    assert tampered != get
    assert _verify(target, "GET", tampered, NOW_S + 10) == "BAD_SIGNATURE"

    put = _botocore_presign(target, "put_object",
                            {"Key": KEYS[0], "ContentType": "image/png", "ContentLength": 99}, 300)
    sent = [("content-type", "image/png"), ("content-length", "99")]
    required = ["content-length", "content-type"]
    assert _verify(target, "PUT", put, NOW_S, sent, required) == "OK"
    assert _verify(target, "PUT", put, NOW_S, [("content-type", "image/png"),
                                               ("content-length", "100")], required) \
        == "BAD_SIGNATURE"
    unsigned = _botocore_presign(target, "put_object", {"Key": KEYS[0]}, 300)
    assert _verify(target, "PUT", unsigned, NOW_S, sent, required) == "HEADER_UNSIGNED"

    # what the embedded store requires of an upload (issue 11 item 6): the digest signed
    digest, other = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=", "A" * 43 + "="
    put = _botocore_presign(target, "put_object",
                            {"Key": KEYS[0], "ContentType": "image/png", "ContentLength": 99,
                             "ChecksumSHA256": digest}, 300)
    required = ["content-length", "content-type", "x-amz-checksum-sha256"]
    assert _verify(target, "PUT", put, NOW_S, sent + [("x-amz-checksum-sha256", digest)],
                   required) == "OK"
    assert _verify(target, "PUT", put, NOW_S, sent + [("x-amz-checksum-sha256", other)],
                   required) == "BAD_SIGNATURE"
    no_digest = _botocore_presign(target, "put_object", {
        "Key": KEYS[0], "ContentType": "image/png", "ContentLength": 99}, 300)
    assert _verify(target, "PUT", no_digest, NOW_S, sent, required) == "HEADER_UNSIGNED"


# --------------------------------------------------------------------------- header signing

@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
@pytest.mark.parametrize("method", ["HEAD", "DELETE"])
def test_header_signing_matches_botocore(target, method):
    addressing, endpoint, region = target
    key = KEYS[1]
    out = _tool(target, "sign", method, key, NOW_S).output.splitlines()
    assert len(out) == 4, out
    url, authorization, amz_date, content_sha256 = out

    scheme, rest = endpoint.split("://", 1)
    path = "/" + percent_encode(key, safe="/~")
    if addressing == "virtual":
        assert url == f"{scheme}://{BUCKET}.{rest}{path}"
    else:
        assert url == f"{endpoint}/{BUCKET}{path}"

    request = AWSRequest(method=method, url=url)
    request.context["client_config"] = botocore.config.Config(
        s3={"payload_signing_enabled": False})
    with _frozen_clock():
        S3SigV4Auth(Credentials(AK, SK), "s3", region).add_auth(request)
    assert authorization == "Authorization: " + request.headers["Authorization"]
    assert amz_date == "x-amz-date: " + request.headers["X-Amz-Date"]
    assert content_sha256 == "x-amz-content-sha256: " + request.headers["X-Amz-Content-SHA256"]
