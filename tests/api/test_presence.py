"""Presence (docs/CONTRACT.md issue 4, "Presence"): heartbeats and polls mark a user online,
contacts (users sharing a chat) get `presence` events on the online and offline
transitions, a reconnect inside the TTL is debounced, GET /v1/presence reports the state
and validates its ids.

The transition tests run against their own natter-api with NATTER_PRESENCE_TTL=2 and a
private Redis of its own, so that its fast sweeper never touches the presence of the
users of other tests (the presence set lives in Redis)."""
import time

import pytest

from chatlib import make_direct, make_group, new_user, new_users
from eventlib import (Listener, head, heartbeat, last_seen_db, parse_time, presence,
                      presence_raw)
from natterlib import Client, PrivateRedis, assert_problem, assert_status, new_account, psql

TTL = 2
SWEEP = 2                   # the sweeper runs every 2 s
OFFLINE_WITHIN = TTL + SWEEP + 3    # seconds after the last heartbeat, with slack


@pytest.fixture(scope="module")
def fast(start_api_module, spec):
    """A Client for a natter-api with NATTER_PRESENCE_TTL=2 and a private Redis."""
    redis = PrivateRedis()
    try:
        srv = start_api_module(NATTER_PRESENCE_TTL=str(TTL), NATTER_REDIS_URL=redis.url,
                               label="natter-api with NATTER_PRESENCE_TTL=2")
        c = Client(srv.base_url, spec)
        yield c
        c.close()
        srv.stop()                    # before its Redis goes away
        srv.assert_clean_exit()
    finally:
        redis.stop()


def is_presence(user_id, online=None):
    return lambda e: (e["type"] == "presence" and e["data"]["user_id"] == user_id
                      and (online is None or e["data"]["online"] is online))


def test_online_offline_and_debounce(fast):
    """A and B share a direct chat, C shares a chat with D only; B and C listen.
    - A never seen: GET /v1/presence says online false, last_seen_at null.
    - A's first poll gives B one `presence` event {user_id: A, online: true, last_seen_at}
      promptly; GET /v1/presence shows A online; users.last_seen_at is still NULL (written
      only on going offline).
    - A heartbeats every second for 5 s (> TTL 2 s + the 2 s sweep): B sees no offline event
      and no second online event in that period.
    - A goes silent: B gets an offline event for A no sooner than the TTL and within
      TTL + sweep (+ slack) after the last heartbeat; GET /v1/presence shows online false
      with last_seen_at set (close to the event's), and users.last_seen_at is set.
    - A heartbeats again: B gets a new online event.
    - C (no chat with A) never gets a presence event about A."""
    (a, ta), (b, tb), (c, tc), (d, td) = new_users(fast, 4, prefix="p")
    make_direct(fast, ta, b["id"])
    make_group(fast, tc, "c and d", [d["id"]])
    got = presence(fast, tb, [a["id"]])
    assert got == {a["id"]: {"user_id": a["id"], "online": False, "last_seen_at": None}}

    lb = Listener(fast, tb, head(fast, tb), timeout=25, label="B")
    lc = Listener(fast, tc, head(fast, tc), timeout=25, label="C")
    try:
        time.sleep(0.5)
        t_on = time.monotonic()
        head(fast, ta)                                     # A's first poll
        t, ev = lb.wait_for(is_presence(a["id"], True), 5, "online event for A")
        assert t - t_on < 3, f"online event {t - t_on:.2f} s after A's poll"
        assert ev["chat_id"] is None and ev["seq"] is None, ev
        p = presence(fast, tb, [a["id"], b["id"]])
        assert p[a["id"]]["online"] is True and p[a["id"]]["last_seen_at"], p
        assert abs((parse_time(p[a["id"]]["last_seen_at"])
                    - parse_time(ev["data"]["last_seen_at"])).total_seconds()) < 2, (p, ev)
        assert last_seen_db(a["id"]) == "", "last_seen_at written while A is online"

        last_beat = t_on
        for i in range(1, 6):
            time.sleep(max(0.0, t_on + i - time.monotonic()))
            last_beat = time.monotonic()
            heartbeat(fast, ta)
        time.sleep(0.3)
        about_a = [e for _, e in lb.matching(is_presence(a["id"]))]
        assert [e["data"]["online"] for e in about_a] == [True], \
            f"heartbeats every 1 s (TTL {TTL} s) must not flap: B saw {about_a}"
        assert presence(fast, tb, [a["id"]])[a["id"]]["online"] is True

        t_off, off = lb.wait_for(is_presence(a["id"], False), OFFLINE_WITHIN + 1,
                                 "offline event for A")
        assert t_off - last_beat >= TTL - 0.1, \
            f"offline event {t_off - last_beat:.2f} s after the last heartbeat (TTL {TTL})"
        assert t_off - last_beat <= OFFLINE_WITHIN, \
            f"offline event {t_off - last_beat:.2f} s after the last heartbeat"
        p = presence(fast, tb, [a["id"]])[a["id"]]
        assert p["online"] is False and p["last_seen_at"], p
        assert abs((parse_time(p["last_seen_at"])
                    - parse_time(off["data"]["last_seen_at"])).total_seconds()) < 1, (p, off)
        assert last_seen_db(a["id"]) != "", "users.last_seen_at not set after going offline"

        heartbeat(fast, ta)
        lb.wait_for(lambda e: is_presence(a["id"], True)(e) and e is not ev, 5,
                    "a second online event for A")
        time.sleep(0.3)
        assert not lc.matching(is_presence(a["id"])), \
            f"C shares no chat with A but got {lc.matching(is_presence(a['id']))}"
    finally:
        lb.stop(fast)
        lc.stop(fast)


def test_simultaneous_offline_transitions_all_reach_a_contact(fast):
    """A1 and A2 both share a chat with B, come online one after the other and then fall
    silent at the same moment (so one sweep finds both): B, polling all along, gets an
    offline event for each of them — not only for the first one announced (the second
    must not be lost while B's poll, answered with the first, is being renewed)."""
    (a1, t1), (a2, t2), (b, tb) = new_users(fast, 3, prefix="p")
    make_direct(fast, t1, b["id"])
    make_direct(fast, t2, b["id"])
    lb = Listener(fast, tb, head(fast, tb), timeout=25, label="B")
    try:
        for tok, who in ((t1, a1), (t2, a2)):       # one at a time: B re-polls in between
            time.sleep(0.5)
            heartbeat(fast, tok)
            lb.wait_for(is_presence(who["id"], True), 5, f"online event for {who['id']}")
        t_last = time.monotonic()
        heartbeat(fast, t1)
        heartbeat(fast, t2)
        deadline = t_last + OFFLINE_WITHIN + 1
        for who in (a1, a2):
            lb.wait_for(is_presence(who["id"], False), max(0.1, deadline - time.monotonic()),
                        f"offline event for user {who['id']}")
        for who in (a1, a2):
            assert presence(fast, tb, [who["id"]])[who["id"]]["online"] is False
    finally:
        lb.stop(fast)


def test_presence_query(client):
    """GET /v1/presence?user_ids=… answers the ids that exist, ordered by user id (unknown
    ids left out, order of the query irrelevant): a user who polled is online with
    last_seen_at set, one never seen is offline with last_seen_at null (both share a chat
    with the caller: presence is visible between contacts only). 200 ids are fine."""
    (a, ta), (b, tb), (n, tn) = new_users(client, 3, prefix="p")
    make_group(client, tb, "contacts", [a["id"], n["id"]])
    head(client, ta)
    missing = int(psql("SELECT coalesce(max(id), 0) + 100000 FROM users"))
    got = presence(client, tb, [missing, a["id"], n["id"]])
    assert sorted(got) == sorted([a["id"], n["id"]]), got
    assert got[a["id"]]["online"] is True and got[a["id"]]["last_seen_at"], got
    assert got[n["id"]] == {"user_id": n["id"], "online": False, "last_seen_at": None}, got
    ids = [a["id"]] + list(range(missing, missing + 199))
    assert list(presence(client, tb, ids)) == [a["id"]]


def test_heartbeat(client):
    """POST /v1/presence/heartbeat (no body) → 204 and marks the caller online."""
    acct = new_account(client, prefix="p")
    assert presence(client, acct.token, [acct.id])[acct.id]["online"] is False
    heartbeat(client, acct.token)
    got = presence(client, acct.token, [acct.id])[acct.id]
    assert got["online"] is True and got["last_seen_at"], got


BAD_IDS = ["", "x", "1,,2", "1,", ",1", "0", "-3", "1.5", "1 2", "1;2", "0x10",
           "99999999999999999999999", ",".join(str(i) for i in range(1, 202))]


@pytest.mark.parametrize("value", BAD_IDS, ids=lambda v: repr(v)[:20] if len(v) < 30
                         else "201 ids")
def test_presence_bad_user_ids(client, value):
    """user_ids that are not 1..200 comma-separated positive ids → 400 invalid_parameter
    field=user_ids."""
    (u, tok) = new_user(client, prefix="p")
    assert_problem(presence_raw(client, tok, value), 400, "invalid_parameter", field="user_ids")


def test_presence_user_ids_missing(client):
    """GET /v1/presence without user_ids → 400 invalid_parameter field=user_ids."""
    (u, tok) = new_user(client, prefix="p")
    r = client.get("/v1/presence", token=tok)
    assert_problem(r, 400, "invalid_parameter", field="user_ids")
    assert_status(client.get("/v1/presence", token=tok, params={"user_ids": u["id"]}), 200)
