"""Redis stopped mid-test (DESIGN.md invariant 7; CONTRACT.md issue 4, "Several
instances"): sends still succeed and waiting polls are still answered (the database
re-check), and once Redis is back on the same socket the subscribers reconnect by
themselves and cross-instance wake-ups are immediate again.

Two natter-api instances share the test database and a private redis-server of this test
(RestartableRedis, stopped at the end), so stopping it disturbs no other test. With one
instance a send wakes its local polls without Redis at all; with two, the poll on
instance 2 woken by a send through instance 1 shows what Redis (or its fallback) does."""
import time

import pytest

from chatlib import make_direct, new_users, send
from eventlib import (AsyncPoll, RestartableRedis, head, of_type, poll, poll_raw, start_poll,
                      stored, typing)
from natterlib import Client, assert_problem, assert_status

OUTAGE_WAKE = 5         # seconds: a poll woken by the database re-check (every ~1 s)
IMMEDIATE = 1.0         # seconds: a pub/sub wake-up
RECONNECT_WITHIN = 10   # seconds for the subscribers to come back after Redis restarts


@pytest.fixture
def outage_redis():
    """A private redis-server this test may stop and restart; always stopped at the end."""
    redis = RestartableRedis()
    yield redis
    redis.close()


def message_of(body):
    return [e["data"]["message"] for e in stored(body["events"])]


@pytest.mark.parametrize("how", ["shutdown", "kill"])
def test_redis_outage_and_recovery(outage_redis, start_api, spec, how):
    """Instances 1 and 2 on a private Redis; B polls on instance 2, A sends through 1.
    - Redis up: the poll is answered < 1 s after the send.
    - Redis stopped (SHUTDOWN NOSAVE, or SIGKILL) while B's poll waits: A's sends still get
      201, and the waiting poll — and a poll started during the outage — get the message
      within 5 s (a poll on the sending instance itself at once); /readyz says 503
      not_ready with checks.redis "fail".
    - Redis restarted on the same socket: within 10 s typing sent through instance 1
      reaches a poll on instance 2 again (the subscribers reconnected), then three sends in
      a row each answer the waiting poll < 1 s, and /readyz is 200 on both."""
    redis = outage_redis
    s1 = start_api(NATTER_REDIS_URL=redis.url, label="instance 1 (private Redis)")
    s2 = start_api(NATTER_REDIS_URL=redis.url, label="instance 2 (private Redis)")
    c1, c2 = Client(s1.base_url, spec), Client(s2.base_url, spec)
    try:
        (a, ta), (b, tb) = new_users(c1, 2, prefix="o")
        head(c1, ta)
        head(c2, tb)
        cid = make_direct(c1, ta, b["id"])["id"]
        hb = head(c2, tb)

        def wake_via_instance_1(label, bound, poll_on=c2):
            nonlocal hb
            p = start_poll(poll_on, tb, hb, timeout=20)
            t0 = time.monotonic()
            msg = send(c1, ta, cid, label)
            body = p.body(within=25)
            took = p.answered_at - t0
            assert message_of(body) == [msg], f"{label}: {body}"
            hb = body["next"]
            assert took < bound, f"{label}: poll answered {took:.2f} s after the send"
            return took

        wake_via_instance_1("redis up", IMMEDIATE)

        # ---- outage, with a poll waiting
        p = start_poll(c2, tb, hb, timeout=20)
        redis.stop(how)
        assert not redis.running()
        time.sleep(0.3)
        t0 = time.monotonic()
        msg = send(c1, ta, cid, "during the outage")
        body = p.body(within=25)
        assert message_of(body) == [msg], body
        assert p.answered_at - t0 < OUTAGE_WAKE, \
            f"waiting poll answered {p.answered_at - t0:.2f} s after the send (Redis down)"
        hb = body["next"]
        wake_via_instance_1("outage, poll started during it", OUTAGE_WAKE)
        wake_via_instance_1("outage, poll and send on instance 1", IMMEDIATE, poll_on=c1)
        more = [send(c1, ta, cid, f"outage burst {i}") for i in range(3)]
        body = poll(c2, tb, hb, timeout=5, max_elapsed=3)
        assert message_of(body) == more, body
        hb = body["next"]
        r = c1.get("/readyz")
        body = assert_problem(r, 503, "not_ready")
        assert body.get("checks", {}).get("redis") == "fail", body

        # ---- Redis back on the same socket
        redis.start()
        deadline = time.monotonic() + RECONNECT_WITHIN
        attempt = 0
        while True:
            attempt += 1
            p = start_poll(c2, tb, hb, timeout=20)
            typing(c1, ta, cid, True)
            if _answers_within(p, IMMEDIATE):
                r = p.wait(within=0)
                assert_status(r, 200)
                evs = r.json()["events"]
                assert not stored(evs), r.json()
                if of_type(evs, "typing", user_id=a["id"]):
                    break
            else:
                _end_waiting(c2, tb, hb, p)
            assert time.monotonic() < deadline, \
                f"typing through instance 1 did not reach instance 2 within " \
                f"{RECONNECT_WITHIN} s of Redis restarting ({attempt} attempts)"
            time.sleep(0.3)
        for i in range(3):
            wake_via_instance_1(f"redis back #{i}", IMMEDIATE)
        for c in (c1, c2):
            r = c.get("/readyz")
            assert_status(r, 200)
            assert r.json()["checks"] == {"postgres": "ok", "redis": "ok"}
    finally:
        c1.close()
        c2.close()
        s2.stop()                      # while Redis (if restarted) is still up
        s1.stop()
    s1.assert_clean_exit()
    s2.assert_clean_exit()


def _answers_within(p: AsyncPoll, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and not p.done():
        time.sleep(0.02)
    return p.done()


def _end_waiting(client, tok, since, p: AsyncPoll):
    """End a still waiting poll by polling again from the same device (it is replaced)."""
    if not p.done():
        poll_raw(client, tok, since=since, timeout=1)
        p.wait(within=5)
