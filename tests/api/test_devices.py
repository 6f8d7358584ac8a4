"""Devices: list and revoke."""
import pytest

from natterlib import RFC3339_UTC_RE, assert_problem, assert_status, new_account, psql_int

DEVICES = "/v1/devices"
ME = "/v1/users/me"


def active_devices(user_id):
    return psql_int("SELECT count(*) FROM devices WHERE user_id = $1 AND revoked_at IS NULL",
                    user_id)


def test_list_devices(client):
    """GET /v1/devices lists the active devices with name, platform and times, newest
    first, `current` only on the caller's."""
    acct = new_account(client, devices=0)
    acct.login(client, device_name="Work laptop", platform="desktop")
    acct.login(client, device_name="Phone", platform="ios")
    r = client.get(DEVICES, token=acct.sessions[0]["access_token"])
    assert_status(r, 200)
    devices = r.json()["devices"]
    assert [(d["name"], d["platform"], d["current"]) for d in devices] == [
        ("Phone", "ios", False), ("Work laptop", "desktop", True)]
    assert [d["id"] for d in devices] == [s["device_id"] for s in reversed(acct.sessions)]
    for d in devices:
        assert RFC3339_UTC_RE.match(d["created_at"]) and RFC3339_UTC_RE.match(d["last_active_at"])
        assert not [k for k in d if "token" in k or "hash" in k]


def test_revoke_other_device(client):
    """Revoking another own device answers 204; its token then gets 401 device_revoked,
    its refresh token stops working, and the list no longer shows it."""
    acct = new_account(client, devices=2)
    keep, gone = acct.sessions
    r = client.delete(f"{DEVICES}/{gone['device_id']}", token=keep["access_token"])
    assert_status(r, 204)
    assert r.content == b""
    assert_problem(client.get(ME, token=gone["access_token"]), 401, "device_revoked")
    r = client.post("/v1/auth/refresh", json={"refresh_token": gone["refresh_token"]})
    assert_problem(r, 401, {"invalid_refresh_token", "device_revoked"})
    listed = client.get(DEVICES, token=keep["access_token"]).json()["devices"]
    assert [d["id"] for d in listed] == [keep["device_id"]]
    assert_status(client.get(ME, token=keep["access_token"]), 200)
    assert active_devices(acct.id) == 1


def test_revoke_current_device(client):
    """A device may revoke itself; its token then gets 401 device_revoked."""
    acct = new_account(client)
    r = client.delete(f"{DEVICES}/{acct.device_id}", token=acct.token)
    assert_status(r, 204)
    assert_problem(client.get(ME, token=acct.token), 401, "device_revoked")


def test_revoke_someone_elses_device(client):
    """Revoking another user's device gives 404 device_not_found and the device keeps
    working."""
    me = new_account(client)
    other = new_account(client)
    r = client.delete(f"{DEVICES}/{other.device_id}", token=me.token)
    assert_problem(r, 404, "device_not_found")
    assert_status(client.get(ME, token=other.token), 200)
    assert active_devices(other.id) == 1


def test_revoke_twice(client):
    """Revoking an already revoked device gives 404 device_not_found."""
    acct = new_account(client, devices=2)
    keep, gone = acct.sessions
    path = f"{DEVICES}/{gone['device_id']}"
    assert_status(client.delete(path, token=keep["access_token"]), 204)
    assert_problem(client.delete(path, token=keep["access_token"]), 404, "device_not_found")


@pytest.mark.parametrize("did", ["9223372036854775807", "0", "abc", "99999999999999999999"])
def test_revoke_unknown_device(client, did):
    """Unknown or non-numeric device ids give 404 and revoke nothing."""
    acct = new_account(client)
    r = client.delete(f"{DEVICES}/{did}", token=acct.token)
    assert_problem(r, 404, {"device_not_found", "not_found"})
    assert_status(client.get(ME, token=acct.token), 200)


def test_devices_need_auth(client):
    """The device endpoints need a token."""
    acct = new_account(client)
    assert_problem(client.get(DEVICES), 401, "unauthorized")
    assert_problem(client.delete(f"{DEVICES}/{acct.device_id}"), 401, "unauthorized")
    assert active_devices(acct.id) == 1
