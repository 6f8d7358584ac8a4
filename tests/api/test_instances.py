"""Several natter-api instances behave as one (docs/CONTRACT.md issue 4, "Several
instances"; DESIGN.md "Long-poll receive", wake-ups over Redis pub/sub): the shared server
is instance 1, a second one is started on another port against the same PostgreSQL and
Redis. Every poll and wait is bounded."""
import time

import pytest

from chatlib import make_direct, make_group, new_users, send
from eventlib import AsyncPoll, head, heartbeat, of_type, poll, start_poll, stored, typing
from natterlib import Client, assert_problem, assert_status, new_account

CROSS = 2.0     # seconds: a cross-instance wake-up (pub/sub); the DB re-check is 10 s apart


@pytest.fixture(scope="module")
def second(start_api_module, spec):
    """A Client for a second natter-api (same database and Redis as the shared one)."""
    srv = start_api_module(label="second natter-api instance")
    c = Client(srv.base_url, spec)
    yield c
    c.close()


def setup_pair(c1):
    (a, ta), (b, tb) = new_users(c1, 2, prefix="i")
    head(c1, ta)
    head(c1, tb)
    cid = make_direct(c1, ta, b["id"])["id"]
    return a, ta, b, tb, cid


def test_send_through_one_instance_wakes_poll_on_another(client, second):
    """A poll held by instance 2 is answered promptly (< 2 s; the database re-check alone
    would take up to 10 s) with the message A sends through instance 1 — three times in a
    row — and the other way round (poll on 1, send through 2). The delivered receipt of
    B's ack on instance 2 wakes A's poll on instance 1 as promptly."""
    a, ta, b, tb, cid = setup_pair(client)
    for poll_on, send_via, label in ((second, client, "poll on 2, send via 1"),
                                     (client, second, "poll on 1, send via 2")):
        for i in range(3):
            hb = head(poll_on, tb)
            p = start_poll(poll_on, tb, hb, timeout=20)
            t0 = time.monotonic()
            msg = send(send_via, ta, cid, f"{label} #{i}")
            body = p.body(within=25)
            took = p.answered_at - t0
            assert took < CROSS, f"{label} #{i}: answered {took:.2f} s after the send"
            assert [e["data"]["message"] for e in stored(body["events"])] == [msg], body

    ha = head(client, ta)
    poll(client, ta, ha, timeout=0)
    pa = start_poll(client, ta, ha, timeout=20)
    hb = head(second, tb)
    t0 = time.monotonic()
    poll(second, tb, hb, timeout=0)                           # B acks A's messages
    body = pa.body(within=25)
    assert pa.answered_at - t0 < CROSS
    recs = of_type(body["events"], "receipt", kind="delivered", user_id=b["id"])
    assert recs and recs[-1]["data"]["seq"] == msg["seq"], body


def test_typing_and_presence_cross_instances(client, second):
    """Ephemeral events travel between instances: typing POSTed through instance 1 reaches
    B's poll on instance 2, and C's first heartbeat on instance 1 gives B's poll on
    instance 2 a `presence` online event for C (B and C share a group)."""
    (a, ta), (b, tb), (c, tc) = new_users(client, 3, prefix="i")
    head(client, ta)
    head(second, tb)
    cid = make_group(client, ta, "cross", [b["id"], c["id"]])["id"]
    hb = head(second, tb)
    p = start_poll(second, tb, hb, timeout=20)
    t0 = time.monotonic()
    typing(client, ta, cid, True)
    body = p.body(within=25)
    assert p.answered_at - t0 < CROSS
    assert [e["data"] for e in body["events"]] == \
        [{"chat_id": cid, "user_id": a["id"], "typing": True}], body

    p = start_poll(second, tb, hb, timeout=20)
    t0 = time.monotonic()
    heartbeat(client, tc)
    body = p.body(within=25)
    assert p.answered_at - t0 < CROSS
    pres = of_type(body["events"], "presence", user_id=c["id"])
    assert [e["data"]["online"] for e in pres] == [True], body


def test_revoke_through_one_instance_ends_poll_on_another(client, second):
    """Device 2's poll waits on instance 2; device 1 revokes device 2 through instance 1:
    the poll ends promptly with 401 device_revoked."""
    acct = new_account(client, devices=2, prefix="i")
    t1, t2 = acct.sessions[0]["access_token"], acct.sessions[1]["access_token"]
    h = head(second, t2)
    p = start_poll(second, t2, h, timeout=20)
    t0 = time.monotonic()
    r = client.delete(f"/v1/devices/{acct.sessions[1]['device_id']}", token=t1)
    assert_status(r, 204)
    assert_problem(p.wait(within=25), 401, "device_revoked")
    assert p.answered_at - t0 < CROSS


def test_second_poll_of_a_device_on_another_instance_replaces_the_first(client, second):
    """One poll per device across instances too: device B polls on instance 1, then the
    same device polls on instance 2 (a load balancer moved it): the poll on instance 1
    answers promptly with 200 {"events": [], "next": since}; the one on instance 2 gets
    the next message."""
    a, ta, b, tb, cid = setup_pair(client)
    hb = head(client, tb)
    first = start_poll(client, tb, hb, timeout=20)
    t0 = time.monotonic()
    latest = AsyncPoll(second, tb, since=hb, timeout=20)
    try:
        assert first.body(within=25) == {"events": [], "next": hb}
        assert first.answered_at - t0 < CROSS, \
            f"the older poll on instance 1 answered {first.answered_at - t0:.2f} s later"
    finally:
        msg = send(client, ta, cid, "to the newest poll")
        body = latest.body(within=25)
    assert [e["data"]["message"] for e in stored(body["events"])] == [msg], body
