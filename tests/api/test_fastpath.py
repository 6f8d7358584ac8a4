"""Wake-ups carry the committed events, and polls are answered from memory when that is
provably right (api/realtime/hub.h, recent.h; DESIGN.md "Wake-ups carry the events"): a
woken poll whose cursor the events continue, and a renewal that finds nothing new, cost no
SQL at all (authentication included, once the device is known live). Anything memory
cannot prove — an event too large to carry, a gap, wake-ups arriving out of order, an
instance that missed a publish — is read from the database: no gap, no duplicate.

These tests run their own natter-api so that the counters they read (`/metrics`:
natter_db_statements_total, natter_poll_answers_total) move only with what they do."""
import subprocess
import time

import pytest

from chatlib import make_direct, new_users, send
from eventlib import AsyncPoll, head, poll, start_poll, stored
from natterlib import Client, metric_samples, need_env, psql, wait_for

MEM = 'natter_poll_answers_total{source="memory"}'
DB = 'natter_poll_answers_total{source="database"}'
STMTS = "natter_db_statements_total"


def metrics(c: Client) -> dict:
    return metric_samples(c.get("/metrics").text)


def subscribed(c: Client):
    wait_for(lambda: metrics(c).get("natter_bus_subscribed") == 1, 20,
             "natter-api to subscribe to the Redis bus")


def pair(c: Client):
    (a, ta), (b, tb) = new_users(c, 2, prefix="fp")
    cid = make_direct(c, ta, b["id"])["id"]
    return a, ta, b, tb, cid


def messages(body) -> list[dict]:
    return [e["data"]["message"] for e in stored(body["events"])]


def test_woken_poll_and_empty_renewal_cost_no_sql(start_api, spec):
    """Once B's head is known (one poll through the database), B's poll that waits and is
    woken by A's message is answered from the event the wake-up carried, and B's renewals
    that find nothing new (timeout 0 and a poll that times out) are answered without a
    single SQL statement of B's: the statements counted across B's poll equal those of A's
    send alone (measured on a send nobody waited for)."""
    srv = start_api()
    c = Client(srv.base_url, spec)
    subscribed(c)
    a, ta, b, tb, cid = pair(c)
    send(c, ta, cid, "warm-up")                       # A's token and membership are known now
    h = head(c, tb)                                   # B: the database, once
    nxt = poll(c, tb, h, timeout=0)["next"]
    assert nxt == h

    m0 = metrics(c)
    send(c, ta, cid, "nobody waits")                  # the cost of a send on its own
    m1 = metrics(c)
    send_cost = m1[STMTS] - m0[STMTS]                 # (the pipeline's own statements are not counted)

    body = poll(c, tb, h, timeout=0)                  # B catches up (events from memory)
    h = body["next"]
    m2 = metrics(c)
    assert m2[STMTS] == m1[STMTS], "B's catch-up poll ran SQL"
    assert m2[MEM] == m1[MEM] + 1 and m2[DB] == m1[DB]

    p = start_poll(c, tb, h, timeout=20)              # waits: no SQL
    msg = send(c, ta, cid, "to a waiting poll")
    got = p.body(within=25)
    assert messages(got) == [msg]
    m3 = metrics(c)
    assert m3[STMTS] - m2[STMTS] == send_cost, \
        f"B's woken poll ran {m3[STMTS] - m2[STMTS] - send_cost} SQL statements"
    assert m3[MEM] >= m2[MEM] + 1 and m3[DB] == m2[DB]

    # renewals that find nothing: timeout 0, and a poll that waits out its timeout
    h = got["next"]
    assert poll(c, tb, h, timeout=0) == {"events": [], "next": h}
    assert poll(c, tb, h, timeout=1) == {"events": [], "next": h}
    m4 = metrics(c)
    assert m4[STMTS] == m3[STMTS], "an empty renewal ran SQL"
    assert m4[DB] == m3[DB]
    cached = 'natter_auth_device_checks_total{result="cached"}'
    assert m4[cached] > m3[cached], "authentication should have come from the cache"


@pytest.mark.parametrize("limit", [None, 1])
def test_event_too_large_for_a_wake_up_is_read_from_the_database(start_api, spec, limit):
    """With NATTER_WAKE_EVENT_MAX = 600 bytes, a long message travels as an id-only
    wake-up: B's waiting poll reads it from the database, and small and large messages
    mixed arrive in order, each exactly once (also one at a time with limit=1)."""
    srv = start_api(NATTER_WAKE_EVENT_MAX="600")
    c = Client(srv.base_url, spec)
    subscribed(c)
    a, ta, b, tb, cid = pair(c)
    h = head(c, tb)
    m0 = metrics(c)
    p = start_poll(c, tb, h, timeout=20)
    big = send(c, ta, cid, "x" * 2000)
    got = p.body(within=25)
    assert messages(got) == [big]
    assert metrics(c)[DB] > m0[DB], "the large event must come from the database"

    sent = []
    for i, text in enumerate(["small 1", "y" * 1500, "small 2", "small 3", "z" * 900]):
        sent.append(send(c, ta, cid, text))
    seen, cur = [], got["next"]
    for _ in range(20):
        body = poll(c, tb, cur, timeout=0, limit=limit)
        if not body["events"]:
            break
        seen += messages(body)
        cur = body["next"]
    assert [m["seq"] for m in seen] == [m["seq"] for m in sent]
    assert [m["text"] for m in seen] == [m["text"] for m in sent]


def frame(instance: str, rows: list[tuple]) -> str:
    """A wake-up frame as natter-api publishes it (api/realtime/wake.h): rows are
    (user, seq, event body text)."""
    bodies = "".join(f"{len(t.encode())}\n{t}\n" for _, _, t in rows)
    wakes = "".join(f"{u} {s} {i}\n" for i, (u, s, _) in enumerate(rows))
    return f"W {instance}\n{len(rows)} {len(rows)}\n{bodies}{wakes}"


def inbox_body(user_id, seq) -> str:
    """The stored event as a wake-up carries it: its JSON without the seq."""
    return psql("SELECT '\"type\":\"' || type || '\",\"chat_id\":' || coalesce(chat_id::text, 'null')"
                " || ',\"created_at\":\"' || to_char(created_at AT TIME ZONE 'UTC',"
                " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') || '\",\"data\":' || payload::text || '}'"
                " FROM inbox WHERE user_id = $1 AND seq = $2", user_id, seq)


def publish(text: str):
    sock = need_env("NATTER_TEST_REDIS_SOCKET")
    r = subprocess.run(["redis-cli", "-s", sock, "PUBLISH", "natter:bus", text],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.strip().isdigit(), r


def test_wake_ups_out_of_order_and_missed_publishes(start_api, spec, private_redis):
    """Instance A publishes to a Redis nobody else listens to, so instance B misses its
    wake-ups. A commits two messages for B; then B learns of them out of order (the second
    first, as another instance's publish could overtake the first): B's waiting poll
    answers both, in order, exactly once; a message committed by A that B never hears of
    is found by B's next poll that falls back to the database (a gap in what B knows), and
    B's renewal at the head finds nothing more."""
    a_srv = start_api(NATTER_REDIS_URL=private_redis.url, label="instance A (Redis of its own)")
    b_srv = start_api(label="instance B")
    ca, cb = Client(a_srv.base_url, spec), Client(b_srv.base_url, spec)
    subscribed(cb)
    a, ta, b, tb, cid = pair(ca)
    h = head(cb, tb)
    p = start_poll(cb, tb, h, timeout=30)
    m1 = send(ca, ta, cid, "first")
    m2 = send(ca, ta, cid, "second")
    time.sleep(0.3)
    p.assert_waiting("(B heard nothing of A's sends)")
    publish(frame("test-instance", [(b["id"], h + 2, inbox_body(b["id"], h + 2))]))
    got = p.body(within=10)
    publish(frame("test-instance", [(b["id"], h + 1, inbox_body(b["id"], h + 1))]))
    assert messages(got) == [m1, m2], got
    assert got["next"] == h + 2
    cur = got["next"]
    assert poll(cb, tb, cur, timeout=0) == {"events": [], "next": cur}

    m3 = send(ca, ta, cid, "never published to B")           # B knows nothing of it...
    body = poll(cb, tb, cur, timeout=0)
    # ... so B may still say "nothing new" from memory; the re-check (every 10 s) or the
    # database on B's next unknown poll brings it, exactly once
    if not body["events"]:
        p2 = AsyncPoll(cb, tb, since=cur, timeout=30)
        body = p2.body(within=35)
    assert messages(body) == [m3], body
    cur = body["next"]
    assert poll(cb, tb, cur, timeout=0) == {"events": [], "next": cur}


def test_revoked_elsewhere_is_refused_at_once_here(start_api, spec):
    """A device known live to instance B (its device check cached) is signed out through
    instance A: B refuses its token at once (the revocation is published), without
    waiting for the cache lifetime."""
    a_srv = start_api(NATTER_AUTH_CACHE_TTL="300", label="instance A")
    b_srv = start_api(NATTER_AUTH_CACHE_TTL="300", label="instance B")
    ca, cb = Client(a_srv.base_url, spec), Client(b_srv.base_url, spec)
    subscribed(ca)
    subscribed(cb)
    (u, tok), = new_users(ca, 1, prefix="rv")
    assert cb.get("/v1/users/me", token=tok).status_code == 200
    assert cb.get("/v1/users/me", token=tok).status_code == 200      # now cached on B
    assert ca.post("/v1/auth/logout", token=tok).status_code == 204
    wait_for(lambda: cb.get("/v1/users/me", token=tok).status_code == 401, 5,
             "instance B to refuse the signed-out device")
    r = cb.get("/v1/users/me", token=tok)
    assert r.status_code == 401 and r.json()["code"] == "device_revoked"
