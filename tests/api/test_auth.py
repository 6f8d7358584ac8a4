"""Auth: register, login, refresh rotation, logout, token verification, login rate limits."""
import json
import re
import threading
import time

import pytest
import requests

from natterlib import (REUSE_GRACE, TEST_JWT_SECRET, TEST_PASSWORD, Client, access_claims,
                       assert_problem, assert_status, b64url, decode_jwt, jwt_signature_ok, login, make_jwt,
                       make_jwt_none, new_account, psql, psql_int, register,
                       unique_username, user_count)

REGISTER = "/v1/auth/register"
LOGIN = "/v1/auth/login"
REFRESH = "/v1/auth/refresh"
LOGOUT = "/v1/auth/logout"
ME = "/v1/users/me"
JSON = {"Content-Type": "application/json"}


def device_rows(user_id, active_only=False):
    sql = "SELECT count(*) FROM devices WHERE user_id = $1"
    if active_only:
        sql += " AND revoked_at IS NULL"
    return psql_int(sql, user_id)


def sized_body(size, username):
    """A register body of exactly `size` bytes (with an unknown `pad` member)."""
    head = json.dumps({"username": username, "password": TEST_PASSWORD, "pad": ""})[:-2]
    fill = size - len(head) - 2                      # head ends with the opening quote
    body = (head + "p" * fill + '"}').encode()
    assert len(body) == size
    return body


# ---------------------------------------------------------------- register

def test_register_happy_path(client):
    """Register answers 201 with the User, a Location to it, display_name defaulting to
    the username, and stores an argon2id hash (never the password)."""
    name = unique_username()
    r = client.post(REGISTER, json={"username": name, "password": TEST_PASSWORD})
    assert_status(r, 201)
    user = r.json()
    assert {"id", "username", "display_name", "created_at"} <= set(user)
    assert not [k for k in user if "password" in k or "hash" in k]
    assert user["username"] == name
    assert user["display_name"] == name
    assert isinstance(user["id"], int) and user["id"] > 0
    assert r.headers["Location"].endswith(f"/v1/users/{user['id']}")
    stored = psql("SELECT password_hash FROM users WHERE id = $1", user["id"])
    assert stored.startswith("$argon2id$")
    assert TEST_PASSWORD not in stored


def test_register_with_display_name(client):
    """display_name given at registration is kept, Unicode included."""
    user = register(client, display_name="Zoë \U0001F600")
    assert user["display_name"] == "Zoë \U0001F600"


def test_register_username_bounds(client):
    """Usernames of exactly 3 and 32 characters are accepted."""
    for name in [unique_username("z")[:3], unique_username("long").ljust(32, "x")]:
        assert len(name) in (3, 32)
        r = client.post(REGISTER, json={"username": name, "password": TEST_PASSWORD})
        assert_status(r, 201)


def test_register_duplicate_username(client):
    """A taken username, in any case, gives 409 username_taken and no second user."""
    name = unique_username()
    register(client, name)
    for variant in [name, name.upper(), name.capitalize()]:
        r = client.post(REGISTER, json={"username": variant, "password": TEST_PASSWORD})
        assert_problem(r, 409, "username_taken")
    assert user_count(name) == 1


def test_register_concurrent_same_username(client, api):
    """Racing registrations of one username: exactly one 201, the others 409."""
    name = unique_username()
    clients = [Client(api.base_url) for _ in range(4)]
    barrier = threading.Barrier(len(clients))
    results = [None] * len(clients)

    def go(i):
        barrier.wait()
        results[i] = clients[i].post(REGISTER, json={"username": name,
                                                     "password": TEST_PASSWORD})

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    statuses = sorted(r.status_code for r in results)
    assert statuses == [201, 409, 409, 409], statuses
    for r in results:
        if r.status_code == 409:
            assert_problem(r, 409, "username_taken")
    assert user_count(name) == 1


@pytest.mark.parametrize("bad", [
    "", "ab", "a" * 33, "bad name", "bad/char", "bad@char", "ünïcode", ".leading",
    "_leading", "-leading", "tab\tname",
])
def test_register_invalid_username(client, bad):
    """Invalid usernames give 422 validation_failed field=username and create nothing."""
    before = user_count()
    r = client.post(REGISTER, json={"username": bad, "password": TEST_PASSWORD})
    assert_problem(r, 422, "validation_failed", field="username")
    assert user_count() == before


@pytest.mark.parametrize("kind", ["short", "same_char", "username", "username_case",
                                  "password", "12345678", "qwertyuiop", "short_unicode"])
def test_register_weak_password(client, kind):
    """Weak passwords (< 8 chars, one repeated char, the username in any case, common
    ones; length counted in characters) give 422 weak_password and create nothing."""
    name = unique_username()
    password = {
        "short": "aB3$xyz",
        "same_char": "aaaaaaaaaaaa",
        "username": name,
        "username_case": name.upper(),
        "password": "password",
        "12345678": "12345678",
        "qwertyuiop": "qwertyuiop",
        "short_unicode": "\U0001F600\U0001F601\U0001F602\U0001F603\U0001F604\U0001F605\U0001F606",
    }[kind]
    r = client.post(REGISTER, json={"username": name, "password": password})
    assert_problem(r, 422, "weak_password", field="password")
    assert user_count(name) == 0


def test_register_password_length_in_characters(client):
    """Password length is counted in characters: 8 emoji (32 bytes) and 256 varied
    characters are accepted, 257 are refused with 422 and nothing created."""
    emoji8 = "".join(chr(0x1F600 + i) for i in range(8))
    register(client, password=emoji8)
    long256 = "".join(chr(0x4E00 + i) for i in range(256))       # 768 bytes
    register(client, password=long256)
    name = unique_username()
    r = client.post(REGISTER, json={"username": name, "password": long256 + "x"})
    assert_problem(r, 422, {"validation_failed", "weak_password"}, field="password")
    assert user_count(name) == 0


@pytest.mark.parametrize("body,field", [
    ({"password": TEST_PASSWORD}, "username"),
    ({"username": "@NAME"}, "password"),
    ({"username": "@NAME", "password": TEST_PASSWORD, "admin": True}, "admin"),
    ({"username": 123, "password": TEST_PASSWORD}, "username"),
    ({"username": ["x"], "password": TEST_PASSWORD}, "username"),
    ({"username": "@NAME", "password": None}, "password"),
    ({"username": "@NAME", "password": 12345678}, "password"),
    ({"username": "@NAME", "password": TEST_PASSWORD, "display_name": 5}, "display_name"),
    ({"username": "@NAME", "password": TEST_PASSWORD, "display_name": ""}, "display_name"),
    ({"username": "@NAME", "password": TEST_PASSWORD, "display_name": "a\nb"},
     "display_name"),
])
def test_register_validation(client, body, field):
    """Missing, unknown or wrongly typed members give 422 validation_failed naming the
    field, and create nothing."""
    name = unique_username()
    body = {k: (name if v == "@NAME" else v) for k, v in body.items()}
    before = user_count()
    r = client.post(REGISTER, json=body)
    assert_problem(r, 422, "validation_failed", field=field)
    assert user_count() == before


@pytest.mark.parametrize("raw", [
    b'{"a":', b"[]", b'"str"', b"42", b"null", b"", b'{"username":"\xff"}',
    b'{"username":"ok1","password":"' + TEST_PASSWORD.encode() + b'"} trailing',
    b"{'username': 'single'}",
])
def test_register_malformed_json(client, raw):
    """Bodies that are not one JSON object in valid UTF-8 give 400 malformed_json and
    create nothing."""
    before = user_count()
    r = client.post(REGISTER, data=raw, headers=JSON)
    assert_problem(r, 400, "malformed_json")
    assert user_count() == before


def test_register_body_exactly_16k_is_read(client):
    """A 16384-byte body is within the bound (here refused for its unknown member, not
    for its size)."""
    name = unique_username()
    r = client.post(REGISTER, data=sized_body(16384, name), headers=JSON)
    assert_problem(r, 422, "validation_failed", field="pad")
    assert user_count(name) == 0


def test_register_body_too_large(client):
    """A body past 16 KiB with Content-Length gives 413 payload_too_large, nothing
    created."""
    name = unique_username()
    r = client.post(REGISTER, data=sized_body(16385, name), headers=JSON)
    assert_problem(r, 413, "payload_too_large")
    name2 = unique_username()
    r = Client(client.base_url).post(REGISTER, data=sized_body(200_000, name2), headers=JSON)
    assert_problem(r, 413, "payload_too_large")
    assert user_count(name) == 0 and user_count(name2) == 0


def test_register_body_too_large_chunked(client):
    """A chunked body past 16 KiB (no Content-Length) gives 413 while reading, nothing
    created."""
    name = unique_username()
    body = sized_body(20000, name)

    def chunks():
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    try:
        r, error = client.post(REGISTER, data=chunks(), headers=JSON), None
    except requests.RequestException as exc:
        r, error = None, exc
    if error is not None:
        pytest.fail(f"no answer to a chunked body past 16 KiB: {error!r}", pytrace=False)
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert_problem(r, 413, "payload_too_large")
    assert user_count(name) == 0


def test_register_chunked_small_body(client):
    """A small chunked body is accepted like any other."""
    name = unique_username()
    body = json.dumps({"username": name, "password": TEST_PASSWORD}).encode()
    r = client.post(REGISTER, data=iter([body[:10], body[10:]]), headers=JSON)
    assert_status(r, 201)
    assert user_count(name) == 1


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "application/jsonx"])
def test_register_wrong_content_type(client, ctype):
    """A body that is not declared application/json gives 415 unsupported_media_type and
    creates nothing."""
    name = unique_username()
    body = json.dumps({"username": name, "password": TEST_PASSWORD}).encode()
    headers = {"Content-Type": ctype} if ctype else {}
    r = client.post(REGISTER, data=body, headers=headers)
    assert_problem(r, 415, "unsupported_media_type")
    assert user_count(name) == 0


@pytest.mark.parametrize("ctype", ["application/json; charset=utf-8", "Application/JSON"])
def test_register_content_type_parameters(client, ctype):
    """application/json with a charset parameter or in another case is accepted."""
    name = unique_username()
    body = json.dumps({"username": name, "password": TEST_PASSWORD}).encode()
    r = client.post(REGISTER, data=body, headers={"Content-Type": ctype})
    assert_status(r, 201)


# ---------------------------------------------------------------- login

def test_login_happy_path(client):
    """Login answers a TokenResponse whose access token is an HS256 JWT signed with the
    server secret, with sub/did/iat/exp/iss claims and a 900 s lifetime."""
    user = register(client)
    t0 = int(time.time())
    r = client.post(LOGIN, json={"username": user["username"], "password": TEST_PASSWORD,
                                 "device_name": "Pixel 9", "platform": "android"})
    assert_status(r, 200)
    tok = r.json()
    assert tok["token_type"] == "Bearer"
    assert tok["expires_in"] == 900
    assert tok["user"] == user
    assert isinstance(tok["device_id"], int)
    assert tok["refresh_token"] and tok["refresh_token"] != tok["access_token"]
    assert len(tok["access_token"].split(".")) == 3
    header, claims, _ = decode_jwt(tok["access_token"])
    assert header["alg"] == "HS256"
    assert jwt_signature_ok(tok["access_token"], TEST_JWT_SECRET)
    assert claims["sub"] == str(user["id"])
    assert claims["did"] == tok["device_id"]
    assert claims["iss"] == "natter"
    assert abs(claims["exp"] - claims["iat"] - 900) <= 1
    assert t0 - 5 <= claims["iat"] <= time.time() + 5
    me = client.get(ME, token=tok["access_token"])
    assert_status(me, 200)
    assert me.json() == user
    devices = client.get("/v1/devices", token=tok["access_token"]).json()["devices"]
    assert [(d["name"], d["platform"]) for d in devices] == [("Pixel 9", "android")]


def test_login_defaults(client):
    """Without device_name/platform the device is "unnamed device" / "other"."""
    user = register(client)
    tok = login(client, user["username"])
    dev = client.get("/v1/devices", token=tok["access_token"]).json()["devices"][0]
    assert (dev["name"], dev["platform"]) == ("unnamed device", "other")


def test_login_bad_credentials_indistinguishable(client):
    """Wrong password and unknown user both give 401 invalid_credentials with the same
    body (request_id and instance aside), and create no device."""
    user = register(client)
    r1 = client.post(LOGIN, json={"username": user["username"], "password": "Wrong-pass-99"})
    b1 = assert_problem(r1, 401, "invalid_credentials")
    r2 = client.post(LOGIN, json={"username": unique_username(), "password": "Wrong-pass-99"})
    b2 = assert_problem(r2, 401, "invalid_credentials")
    for b in (b1, b2):
        b.pop("request_id")
        b.pop("instance")
    assert b1 == b2
    assert device_rows(user["id"]) == 0


@pytest.mark.parametrize("extra,field", [
    ({"platform": "windows"}, "platform"),
    ({"platform": 3}, "platform"),
    ({"device_name": ""}, "device_name"),
    ({"device_name": "d" * 65}, "device_name"),
    ({"device_name": "a\x07b"}, "device_name"),
    ({"remember_me": True}, "remember_me"),
])
def test_login_validation(client, extra, field):
    """Bad device_name / platform / unknown members give 422 validation_failed with the
    field and create no device."""
    user = register(client)
    body = {"username": user["username"], "password": TEST_PASSWORD, **extra}
    r = client.post(LOGIN, json=body)
    assert_problem(r, 422, "validation_failed", field=field)
    assert device_rows(user["id"]) == 0


def test_login_missing_password(client):
    """A login body without password gives 422 validation_failed field=password."""
    user = register(client)
    r = client.post(LOGIN, json={"username": user["username"]})
    assert_problem(r, 422, "validation_failed", field="password")
    assert device_rows(user["id"]) == 0


def test_each_login_is_a_new_device(client):
    """Every login creates a device; GET /v1/devices lists them newest first and marks
    only the caller's device current."""
    acct = new_account(client, devices=3)
    ids = [s["device_id"] for s in acct.sessions]
    assert len(set(ids)) == 3
    r = client.get("/v1/devices", token=acct.sessions[1]["access_token"])
    assert_status(r, 200)
    devices = r.json()["devices"]
    assert [d["id"] for d in devices] == sorted(ids, reverse=True)
    assert [d["current"] for d in devices] == [d["id"] == ids[1] for d in devices]
    assert device_rows(acct.id) == 3


# ---------------------------------------------------------------- refresh

def test_refresh_rotation_and_reuse(client):
    """Refresh returns a new refresh token; presenting the rotated one again after the
    grace window (NATTER_REFRESH_REUSE_GRACE) gives 401 refresh_token_reused and revokes
    the device: its access tokens get device_revoked and the newest refresh token stops
    working. Other devices are unaffected."""
    acct = new_account(client, devices=2)
    first = acct.sessions[0]
    r = client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
    assert_status(r, 200)
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["device_id"] == first["device_id"]
    assert second["user"]["id"] == acct.id
    assert_status(client.get(ME, token=second["access_token"]), 200)

    time.sleep(REUSE_GRACE + 0.5)
    r = client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
    assert_problem(r, 401, "refresh_token_reused")

    for tok in (first["access_token"], second["access_token"]):
        assert_problem(client.get(ME, token=tok), 401, "device_revoked")
    r = client.post(REFRESH, json={"refresh_token": second["refresh_token"]})
    assert_problem(r, 401, {"invalid_refresh_token", "refresh_token_reused", "device_revoked"})

    other = acct.sessions[1]["access_token"]
    assert_status(client.get(ME, token=other), 200)
    listed = [d["id"] for d in client.get("/v1/devices", token=other).json()["devices"]]
    assert listed == [acct.sessions[1]["device_id"]]


def test_refresh_unknown_token(client):
    """An unknown refresh token gives 401 invalid_refresh_token."""
    r = client.post(REFRESH, json={"refresh_token": "not-a-real-refresh-token-0123456789"})
    assert_problem(r, 401, "invalid_refresh_token")


def test_refresh_validation(client):
    """A refresh body without refresh_token (or of a wrong type) gives 422."""
    assert_problem(client.post(REFRESH, json={}), 422, "validation_failed",
                   field="refresh_token")
    assert_problem(client.post(REFRESH, json={"refresh_token": 7}), 422,
                   "validation_failed", field="refresh_token")


def test_refresh_race(client, api):
    """Concurrent refreshes with one token (two tabs, a client's retry) all succeed with the
    same successor refresh token, and the device stays signed in: the successor works."""
    acct = new_account(client)
    token = acct.refresh_token
    clients = [Client(api.base_url) for _ in range(4)]
    barrier = threading.Barrier(len(clients))
    results = [None] * len(clients)

    def go(i):
        barrier.wait()
        results[i] = clients[i].post(REFRESH, json={"refresh_token": token})

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for r in results:
        assert_status(r, 200)
    successors = {r.json()["refresh_token"] for r in results}
    assert len(successors) == 1, successors
    for r in results:
        assert_status(client.get(ME, token=r.json()["access_token"]), 200)
    r = client.post(REFRESH, json={"refresh_token": successors.pop()})
    assert_status(r, 200)
    assert_status(client.get(ME, token=r.json()["access_token"]), 200)


def test_refresh_reuse_grace(client):
    """Within the grace window a rotated refresh token returns the same successor (not a
    revocation); once that successor has been used, the old token is reuse even within the
    window and revokes the device; a token is reuse after the window too."""
    acct = new_account(client)
    old = acct.refresh_token
    first = client.post(REFRESH, json={"refresh_token": old})
    assert_status(first, 200)
    again = client.post(REFRESH, json={"refresh_token": old})
    assert_status(again, 200)
    assert again.json()["refresh_token"] == first.json()["refresh_token"]
    assert again.json()["device_id"] == first.json()["device_id"]
    assert_status(client.get(ME, token=again.json()["access_token"]), 200)

    third = client.post(REFRESH, json={"refresh_token": first.json()["refresh_token"]})
    assert_status(third, 200)
    assert_problem(client.post(REFRESH, json={"refresh_token": old}), 401, "refresh_token_reused")
    assert_problem(client.get(ME, token=third.json()["access_token"]), 401, "device_revoked")


def test_refresh_reuse_after_grace_revokes(client):
    """A rotated token presented after the grace window revokes the device, even though
    its successor was never used."""
    acct = new_account(client)
    old = acct.refresh_token
    nxt = client.post(REFRESH, json={"refresh_token": old})
    assert_status(nxt, 200)
    time.sleep(REUSE_GRACE + 0.5)
    assert_problem(client.post(REFRESH, json={"refresh_token": old}), 401, "refresh_token_reused")
    assert_problem(client.get(ME, token=nxt.json()["access_token"]), 401, "device_revoked")


# ---------------------------------------------------------------- logout

def test_logout(client):
    """Logout answers 204 and revokes only the calling device: its token then gets 401
    device_revoked, its refresh token stops working, the other device still works."""
    acct = new_account(client, devices=2)
    a, b = acct.sessions
    r = client.post(LOGOUT, token=a["access_token"])
    assert_status(r, 204)
    assert r.content == b""
    assert_problem(client.get(ME, token=a["access_token"]), 401, "device_revoked")
    assert_problem(client.post(LOGOUT, token=a["access_token"]), 401, "device_revoked")
    r = client.post(REFRESH, json={"refresh_token": a["refresh_token"]})
    assert_problem(r, 401, {"invalid_refresh_token", "device_revoked"})
    assert_status(client.get(ME, token=b["access_token"]), 200)
    assert device_rows(acct.id, active_only=True) == 1


def test_logout_requires_token(client):
    """Logout without a token gives 401 unauthorized."""
    assert_problem(client.post(LOGOUT), 401, "unauthorized")


# ---------------------------------------------------------------- token attacks

@pytest.fixture
def victim(client):
    return new_account(client)


def test_forged_valid_token_accepted(client, victim):
    """Sanity for the attacks below: a token made with the server secret and correct
    claims is accepted."""
    token = make_jwt(access_claims(victim.id, victim.device_id), TEST_JWT_SECRET)
    assert_status(client.get(ME, token=token), 200)


@pytest.mark.parametrize("authz,code", [
    (None, "unauthorized"),
    ("Basic dXNlcjpwYXNz", "unauthorized"),
    ("Bearer", "unauthorized"),
    ("Token abc.def.ghi", "unauthorized"),
    ("Bearer garbage", "invalid_token"),
    ("Bearer a.b.c", "invalid_token"),
    ("Bearer " + "x" * 5000, "invalid_token"),
])
def test_malformed_authorization(client, authz, code):
    """Missing or ill-formed Authorization gives 401 unauthorized; a Bearer with garbage
    gives 401 invalid_token."""
    headers = {"Authorization": authz} if authz is not None else {}
    r = client.get(ME, headers=headers)
    if authz == "Bearer":
        assert_problem(r, 401, {"unauthorized", "invalid_token"})
    else:
        assert_problem(r, 401, code)


@pytest.mark.parametrize("attack", [
    "other_secret", "alg_none", "hs384", "hs512", "missing_did", "missing_sub",
    "missing_exp", "wrong_iss", "tampered", "sub_not_string_number", "device_unknown",
])
def test_token_attacks(client, victim, attack):
    """Tokens with a bad signature, another algorithm (none, HS384, HS512), missing or
    wrong claims or a tampered payload give 401 invalid_token."""
    uid, did = victim.id, victim.device_id
    good = access_claims(uid, did)
    token = {
        "other_secret": lambda: make_jwt(good, "another-secret-" + "x" * 40),
        "alg_none": lambda: make_jwt_none(good),
        "hs384": lambda: make_jwt(good, TEST_JWT_SECRET, alg="HS384"),
        "hs512": lambda: make_jwt(good, TEST_JWT_SECRET, alg="HS512"),
        "missing_did": lambda: make_jwt(access_claims(uid, did, did=None)),
        "missing_sub": lambda: make_jwt(access_claims(uid, did, sub=None)),
        "missing_exp": lambda: make_jwt(access_claims(uid, did, exp=None)),
        "wrong_iss": lambda: make_jwt(access_claims(uid, did, iss="evil")),
        "tampered": lambda: _tamper(victim.token),
        "sub_not_string_number": lambda: make_jwt(access_claims(uid, did, sub="abc")),
        "device_unknown": lambda: make_jwt(access_claims(uid, 9_000_000_000_000)),
    }[attack]()
    r = client.get(ME, token=token)
    if attack == "device_unknown":
        assert_problem(r, 401, {"invalid_token", "device_revoked"})
    else:
        assert_problem(r, 401, "invalid_token")


def _tamper(token):
    """Change `sub` in the payload, keep header and signature."""
    head, payload, sig = token.split(".")
    _, claims, _ = decode_jwt(token)
    claims["sub"] = str(int(claims["sub"]) + 1)
    return ".".join([head, b64url(json.dumps(claims, separators=(",", ":")).encode()), sig])


def test_expired_token(client, victim):
    """A correctly signed token with exp in the past gives 401 token_expired."""
    now = int(time.time())
    token = make_jwt(access_claims(victim.id, victim.device_id, iat=now - 1000, ttl=900))
    assert_problem(client.get(ME, token=token), 401, "token_expired")


def test_token_for_someone_elses_device(client, victim):
    """A token whose did belongs to another user gives 401."""
    other = new_account(client)
    token = make_jwt(access_claims(victim.id, other.device_id))
    assert_problem(client.get(ME, token=token), 401, {"invalid_token", "device_revoked"})
    assert_status(client.get(ME, token=other.token), 200)


def test_secured_operations_need_a_token(client, spec):
    """Every operation the spec marks as secured answers 401 unauthorized without a token
    (authentication comes before validation and lookup)."""
    global_security = spec.doc.get("security") or []
    checked = []
    for method, template, op in spec.operations():
        security = op.get("security", global_security)
        if not security or any(s == {} for s in security):
            continue
        path = re.sub(r"\{[^}/]+\}", "1", template)
        body = {} if method in ("POST", "PUT", "PATCH") else None
        r = client.request(method, path, json=body)
        assert_problem(r, 401, "unauthorized")
        checked.append((method, template))
    assert ("GET", "/v1/users/me") in checked, "the spec marks no security on /v1/users/me"


# ---------------------------------------------------------------- rate limits

def test_login_rate_limit_per_user(start_api, private_redis):
    """With NATTER_LOGIN_MAX_PER_USER=3, after 3 failed logins for a username from one
    address the 4th attempt from that address (even with the right password, in any case)
    gets 429 rate_limited with Retry-After 1..60, while the owner logging in from another
    address is not refused, and the first address still logs in another username."""
    srv = start_api(NATTER_REDIS_URL=private_redis.url, NATTER_LOGIN_MAX_PER_USER="3",
                    NATTER_LOGIN_WINDOW="60")
    c = Client(srv.base_url)
    victim = register(c)
    bystander = register(c)
    for _ in range(3):
        r = c.post(LOGIN, json={"username": victim["username"], "password": "Wrong-pass-99"})
        assert_problem(r, 401, "invalid_credentials")
    for name in (victim["username"], victim["username"].upper()):
        r = c.post(LOGIN, json={"username": name, "password": TEST_PASSWORD})
        assert_problem(r, 429, "rate_limited")
        assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert device_rows(victim["id"]) == 0
    login(c, bystander["username"])
    owner = Client(srv.base_url, source_ip="127.0.0.2")
    login(owner, victim["username"])
    assert device_rows(victim["id"]) == 1


def test_login_rate_limit_per_ip(start_api, private_redis):
    """With NATTER_LOGIN_MAX_PER_IP=5 the 6th attempt from one IP, across usernames, gets
    429 rate_limited with Retry-After."""
    srv = start_api(NATTER_REDIS_URL=private_redis.url, NATTER_LOGIN_MAX_PER_IP="5",
                    NATTER_LOGIN_MAX_PER_USER="1000", NATTER_LOGIN_WINDOW="60")
    c = Client(srv.base_url)
    user = register(c)
    for _ in range(5):
        r = c.post(LOGIN, json={"username": unique_username(), "password": "Wrong-pass-99"})
        assert_problem(r, 401, "invalid_credentials")
    r = c.post(LOGIN, json={"username": user["username"], "password": TEST_PASSWORD})
    assert_problem(r, 429, "rate_limited")
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert device_rows(user["id"]) == 0


def test_login_rate_limit_window_passes(start_api, private_redis):
    """After Retry-After seconds the window has passed and the login works again."""
    srv = start_api(NATTER_REDIS_URL=private_redis.url, NATTER_LOGIN_MAX_PER_USER="1",
                    NATTER_LOGIN_WINDOW="2")
    c = Client(srv.base_url)
    user = register(c)
    r = c.post(LOGIN, json={"username": user["username"], "password": "Wrong-pass-99"})
    assert_problem(r, 401, "invalid_credentials")
    r = c.post(LOGIN, json={"username": user["username"], "password": TEST_PASSWORD})
    assert_problem(r, 429, "rate_limited")
    wait = int(r.headers["Retry-After"])
    assert 1 <= wait <= 2
    time.sleep(wait + 0.2)
    deadline = time.monotonic() + 3
    while True:
        r = c.post(LOGIN, json={"username": user["username"], "password": TEST_PASSWORD})
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert_status(r, 200)
