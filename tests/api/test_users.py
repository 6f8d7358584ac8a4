"""Users: me, profile update, lookup by id and by username."""
import json
from urllib.parse import quote

import pytest

from natterlib import assert_problem, assert_status, new_account, psql

ME = "/v1/users/me"
JSON = {"Content-Type": "application/json"}
EMOJI64 = "".join(chr(0x1F600 + i) for i in range(64))


def stored_display_name(user_id):
    return psql("SELECT display_name FROM users WHERE id = $1", user_id)


def test_me(client):
    """GET /v1/users/me returns the caller's User."""
    acct = new_account(client)
    r = client.get(ME, token=acct.token)
    assert_status(r, 200)
    assert r.json() == acct.user


def test_patch_display_name(client):
    """PATCH /v1/users/me changes display_name; the change persists and others see it."""
    acct = new_account(client)
    other = new_account(client)
    r = client.patch(ME, json={"display_name": "Ada L."}, token=acct.token)
    assert_status(r, 200)
    assert r.json()["display_name"] == "Ada L."
    assert r.json()["id"] == acct.id
    assert r.json()["username"] == acct.username
    assert client.get(ME, token=acct.token).json()["display_name"] == "Ada L."
    seen = client.get(f"/v1/users/{acct.id}", token=other.token).json()
    assert seen["display_name"] == "Ada L."
    assert stored_display_name(acct.id) == "Ada L."


def test_display_name_counts_characters(client):
    """display_name length counts Unicode characters: 64 emoji (256 bytes) are accepted,
    65 refused with 422 and the name unchanged."""
    acct = new_account(client)
    r = client.patch(ME, json={"display_name": EMOJI64}, token=acct.token)
    assert_status(r, 200)
    assert r.json()["display_name"] == EMOJI64
    r = client.patch(ME, json={"display_name": EMOJI64 + "\U0001F680"}, token=acct.token)
    assert_problem(r, 422, "validation_failed", field="display_name")
    assert client.get(ME, token=acct.token).json()["display_name"] == EMOJI64


@pytest.mark.parametrize("body,field", [
    ({"display_name": ""}, "display_name"),
    ({"display_name": "x" * 65}, "display_name"),
    ({"display_name": "bell\x07"}, "display_name"),
    ({"display_name": "new\nline"}, "display_name"),
    ({"display_name": "tab\there"}, "display_name"),
    ({"display_name": "del\x7f"}, "display_name"),
    ({"display_name": "c1\x85"}, "display_name"),
    ({"display_name": 42}, "display_name"),
    ({"display_name": None}, "display_name"),
    ({"display_name": ["a"]}, "display_name"),
    ({}, "display_name"),
    ({"display_name": "fine", "is_admin": True}, "is_admin"),
    ({"username": "renamed"}, "username"),
])
def test_patch_invalid(client, body, field):
    """Invalid display_name (empty, 65 chars, control chars, wrong type, missing) or
    unknown members give 422 validation_failed with the field; nothing changes."""
    acct = new_account(client)
    r = client.patch(ME, json=body, token=acct.token)
    assert_problem(r, 422, "validation_failed", field=field)
    after = client.get(ME, token=acct.token).json()
    assert after == acct.user
    assert stored_display_name(acct.id) == acct.user["display_name"]


@pytest.mark.parametrize("raw", [b'{"display_name":', b"[]", b'{"display_name":"\xc3"}'])
def test_patch_malformed_json(client, raw):
    """Malformed JSON bodies give 400 malformed_json; nothing changes."""
    acct = new_account(client)
    r = client.patch(ME, data=raw, headers=JSON, token=acct.token)
    assert_problem(r, 400, "malformed_json")
    assert stored_display_name(acct.id) == acct.user["display_name"]


def test_patch_wrong_content_type(client):
    """A PATCH body not declared as JSON gives 415; nothing changes."""
    acct = new_account(client)
    r = client.patch(ME, data=json.dumps({"display_name": "X"}).encode(),
                     headers={"Content-Type": "text/plain"}, token=acct.token)
    assert_problem(r, 415, "unsupported_media_type")
    assert stored_display_name(acct.id) == acct.user["display_name"]


def test_patch_too_large(client):
    """A PATCH body past 16 KiB gives 413; nothing changes."""
    acct = new_account(client)
    body = json.dumps({"display_name": "y" * 17000}).encode()
    r = client.patch(ME, data=body, headers=JSON, token=acct.token)
    assert_problem(r, 413, "payload_too_large")
    assert stored_display_name(acct.id) == acct.user["display_name"]


def test_get_user_by_id(client):
    """GET /v1/users/{id} returns that User to any logged-in user."""
    acct = new_account(client)
    other = new_account(client, display_name="Other One")
    r = client.get(f"/v1/users/{other.id}", token=acct.token)
    assert_status(r, 200)
    assert r.json() == other.user


@pytest.mark.parametrize("uid", ["9223372036854775807", "0", "-1"])
def test_get_user_unknown(client, uid):
    """An id that is no user gives 404 user_not_found."""
    acct = new_account(client)
    r = client.get(f"/v1/users/{uid}", token=acct.token)
    assert_problem(r, 404, "user_not_found")


@pytest.mark.parametrize("uid", ["abc", "1x", "99999999999999999999", "1.5", "0x10"])
def test_get_user_non_numeric(client, uid):
    """A non-numeric or out-of-range id gives 404."""
    acct = new_account(client)
    r = client.get(f"/v1/users/{uid}", token=acct.token)
    assert_problem(r, 404, {"user_not_found", "not_found"})


def test_lookup_by_username(client):
    """GET /v1/users?username= finds a user case-insensitively."""
    acct = new_account(client)
    other = new_account(client)
    for variant in (other.username, other.username.upper()):
        r = client.get(f"/v1/users?username={quote(variant)}", token=acct.token)
        assert_status(r, 200)
        assert r.json() == other.user


def test_lookup_by_username_miss(client):
    """An unknown username gives 404 user_not_found; a prefix is not a match."""
    acct = new_account(client)
    assert_problem(client.get("/v1/users?username=nobody-here-xyz", token=acct.token),
                   404, "user_not_found")
    assert_problem(client.get(f"/v1/users?username={acct.username[:-1]}", token=acct.token),
                   404, "user_not_found")


@pytest.mark.parametrize("query", ["", "?username=", "?name=bob"])
def test_lookup_by_username_missing_param(client, query):
    """A missing or empty username parameter gives 400 invalid_parameter."""
    acct = new_account(client)
    r = client.get("/v1/users" + query, token=acct.token)
    assert_problem(r, 400, "invalid_parameter")


def test_users_need_auth(client):
    """The user endpoints need a token."""
    acct = new_account(client)
    assert_problem(client.get(ME), 401, "unauthorized")
    assert_problem(client.patch(ME, json={"display_name": "x"}), 401, "unauthorized")
    assert_problem(client.get(f"/v1/users/{acct.id}"), 401, "unauthorized")
    assert_problem(client.get(f"/v1/users?username={acct.username}"), 401, "unauthorized")
    assert stored_display_name(acct.id) == acct.user["display_name"]
