"""JWTs: HMAC-signed and `alg: none` tokens the tests forge, decoding, the claims of an
access token.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json as jsonlib
import time

from .env import TEST_JWT_SECRET


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _compact_json(obj) -> bytes:
    return jsonlib.dumps(obj, separators=(",", ":")).encode()


_HMAC_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def make_jwt(claims: dict, secret: str | bytes = TEST_JWT_SECRET, alg: str = "HS256",
             header: dict | None = None) -> str:
    """A JWS compact token signed with HMAC (HS256/HS384/HS512)."""
    head = {"alg": alg, "typ": "JWT"}
    head.update(header or {})
    signing_input = b64url(_compact_json(head)) + "." + b64url(_compact_json(claims))
    key = secret.encode() if isinstance(secret, str) else secret
    sig = hmac.new(key, signing_input.encode("ascii"), _HMAC_HASHES[alg]).digest()
    return signing_input + "." + b64url(sig)


def make_jwt_none(claims: dict) -> str:
    """An unsigned `alg: none` token (empty signature part)."""
    head = {"alg": "none", "typ": "JWT"}
    return b64url(_compact_json(head)) + "." + b64url(_compact_json(claims)) + "."


def decode_jwt(token: str) -> tuple[dict, dict, bytes]:
    """(header, claims, signature) without verifying anything."""
    head, payload, sig = token.split(".")
    return (jsonlib.loads(b64url_decode(head)), jsonlib.loads(b64url_decode(payload)),
            b64url_decode(sig))


def jwt_signature_ok(token: str, secret: str = TEST_JWT_SECRET) -> bool:
    head, payload, sig = token.split(".")
    expected = hmac.new(secret.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return hmac.compare_digest(expected, b64url_decode(sig))


def access_claims(user_id, device_id, *, iat: int | None = None, ttl: int = 900,
                  **extra) -> dict:
    """Claims of a normal access token (extra=None removes a claim)."""
    now = int(time.time()) if iat is None else iat
    claims = {"sub": str(user_id), "did": int(device_id), "iat": now, "exp": now + ttl,
              "iss": "natter"}
    for key, value in extra.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims
