"""Scale-out on one box and across instances (issue 12; DESIGN.md "Scale-out"):
several natter-api processes share one port (SO_REUSEPORT), a drained poll closes its
connection so the balancer moves the client, and an ephemeral event reaches a device once
however its polls move between instances. Every poll and wait is bounded."""
import http.client
import json
import signal
import time

import pytest

from chatlib import make_direct, new_users, send, send_raw
from eventlib import AsyncPoll, head, poll, start_poll, stored, typing
from natterlib import Client, assert_status, metric_samples, new_account, served_by, wait_for

CROSS = 2.0      # seconds: a wake-up between processes (the DB re-check is 10 s apart)


def listening(objs):
    return any(o.get("msg") == "listening" for o in objs)


def test_two_processes_share_one_port(start_api, spec):
    """A second natter-api started on the port the first listens on starts (SO_REUSEPORT,
    no "address in use"); new connections are spread over both (each process's access log
    has some of 40 requests); and a poll held by one process is answered within 2 s by a
    message sent through the other (seen at least twice: the kernel picks the process of
    each new connection, so the test retries with fresh connections, bounded)."""
    one = start_api(label="process 1")
    two = start_api(label="process 2 (same port)", port=one.port, wait=False)
    two.wait_log(listening, 15, "process 2's `listening` line")
    servers = [one, two]

    ids = []
    for _ in range(40):
        c = Client(one.base_url, spec)                  # a new connection each time
        try:
            r = c.get("/healthz")
            assert_status(r, 200)
            ids.append(r.headers["X-Request-Id"])
        finally:
            c.close()
    where = [served_by(servers, rid) for rid in ids]
    assert set(where) == {0, 1}, f"all 40 connections went to one process: {where}"

    c = Client(one.base_url, spec)
    try:
        (a, ta), (b, tb) = new_users(c, 2, prefix="p")
        cid = make_direct(c, ta, b["id"])["id"]
    finally:
        c.close()
    crossed = 0
    for i in range(30):
        if crossed >= 2:
            break
        pc = Client(one.base_url, spec)
        sc = Client(one.base_url, spec)
        try:
            hb = head(pc, tb)
            p = start_poll(pc, tb, hb, timeout=20)
            t0 = time.monotonic()
            r = send_raw(sc, ta, cid, f"across processes #{i}")
            assert_status(r, 201)
            body = p.body(within=25)
            took = p.answered_at - t0
            assert [e["data"]["message"] for e in stored(body["events"])] == [r.json()], body
            poll_at = served_by(servers, p.resp.headers["X-Request-Id"])
            send_at = served_by(servers, r.headers["X-Request-Id"])
            if poll_at != send_at:
                crossed += 1
                assert took < CROSS, f"#{i}: poll on {poll_at}, send via {send_at}: " \
                                     f"answered {took:.2f} s after the send"
        finally:
            pc.close()
            sc.close()
    assert crossed >= 2, "30 tries never put the poll and the send in different processes"


def test_drained_poll_closes_its_connection(start_api, spec):
    """SIGTERM while a poll waits: the poll answers 200 with `Connection: close`, so the
    client (or the balancer) sends its next poll to another instance."""
    srv = start_api()
    c = Client(srv.base_url, spec)
    try:
        acct = new_account(c, prefix="d")
        h = head(c, acct.token)
    finally:
        c.close()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request("GET", f"/v1/events?since={h}&timeout=30",
                     headers={"Authorization": f"Bearer {acct.token}"})
        time.sleep(0.5)                                   # the poll reaches the server
        srv.send_signal(signal.SIGTERM)
        resp = conn.getresponse()
        body = json.loads(resp.read())
        assert resp.status == 200, (resp.status, body)
        assert body == {"events": [], "next": h}
        assert (resp.getheader("Connection") or "").lower() == "close", resp.getheaders()
    finally:
        conn.close()
    srv.stop()
    srv.assert_clean_exit()


def test_typing_event_reaches_a_moving_device_once(start_api, spec):
    """An ephemeral event has a system-wide id: B's device polls on instance 2, then on
    instance 1, where A's typing event answers its poll; its next polls, on instance 2
    and on instance 1 within the 3 s in which instances keep ephemeral events for devices
    between polls, do not get that event again."""
    one = start_api(label="instance 1")
    two = start_api(label="instance 2")
    c1, c2 = Client(one.base_url, spec), Client(two.base_url, spec)
    try:
        (a, ta), (b, tb) = new_users(c1, 2, prefix="y")
        cid = make_direct(c1, ta, b["id"])["id"]
        hb = head(c2, tb)
        assert poll(c2, tb, hb, timeout=1) == {"events": [], "next": hb}   # known on 2
        p = start_poll(c1, tb, hb, timeout=20)
        typing(c1, ta, cid, True)
        body = p.body(within=25)
        assert [e["type"] for e in body["events"]] == ["typing"], body
        time.sleep(0.5)                           # instance 2 has the event by now
        for c in (c2, c1):
            again = AsyncPoll(c, tb, since=hb, timeout=1).body(within=10)
            assert again == {"events": [], "next": hb}, \
                f"the typing event came twice (through {c.base_url}): {again}"
    finally:
        c1.close()
        c2.close()


def bus_counts(c: Client) -> tuple[float, float, float]:
    """(published, received, routed users) of one instance's /metrics."""
    m = metric_samples(c.get("/metrics").text)
    return (m['natter_bus_messages_total{direction="published"}'],
            m['natter_bus_messages_total{direction="received"}'],
            m["natter_bus_routed_users"])


def test_wakeups_are_routed_to_the_instances_that_know_the_user(start_api, spec):
    """Wake-ups go only to instances that know the user (routed, not broadcast): A and B
    poll on instance 1; ten messages between them and their receipts reach instance 1's
    bus, while instance 2, which knows neither, receives not one bus message. Then B polls
    on instance 2 too: A's next messages reach B's poll there (within 2 s), and instance 2
    now receives them; instance 3, which knows neither, still receives nothing."""
    one, two, three = (start_api(label=f"instance {i}") for i in (1, 2, 3))
    c1, c2, c3 = (Client(s.base_url, spec) for s in (one, two, three))
    try:
        for c in (c1, c2, c3):
            wait_for(lambda c=c: metric_samples(c.get("/metrics").text)
                     .get("natter_bus_subscribed") == 1, 20, f"{c.base_url} to subscribe")
        (a, ta), (b, tb) = new_users(c1, 2, prefix="r")
        cid = make_direct(c1, ta, b["id"])["id"]
        head(c1, ta)
        hb = head(c1, tb)                                  # both known (routed) on 1
        wait_for(lambda: bus_counts(c1)[2] >= 2, 20, "instance 1 to route A and B")
        r2 = bus_counts(c2)[1]
        r3 = bus_counts(c3)[1]
        p1 = bus_counts(c1)
        for i in range(10):
            send(c1, ta, cid, f"routed #{i}")
        body = poll(c1, tb, hb, timeout=0, limit=100)      # and its ack: receipts for A
        assert len(stored(body["events"])) == 10, body
        poll(c1, tb, body["next"], timeout=0)
        wait_for(lambda: bus_counts(c1)[1] - p1[1] >= 10, 20,
                 "instance 1 to receive the wake-ups of its users")
        assert bus_counts(c1)[0] - p1[0] >= 10
        time.sleep(1.0)                                    # anything in flight arrives
        assert bus_counts(c2)[1] == r2, "instance 2 knows neither user but got their wake-ups"

        hb2 = head(c2, tb)                                 # B is known on 2 now
        wait_for(lambda: bus_counts(c2)[2] >= 1, 20, "instance 2 to route B")
        for i in range(3):
            p = start_poll(c2, tb, hb2, timeout=20)
            t0 = time.monotonic()
            msg = send(c1, ta, cid, f"to instance 2 #{i}")
            body = p.body(within=25)
            assert p.answered_at - t0 < CROSS, f"answered {p.answered_at - t0:.2f} s later"
            assert [e["data"]["message"] for e in stored(body["events"])] == [msg], body
            hb2 = body["next"]
        assert bus_counts(c2)[1] - r2 >= 3
        time.sleep(1.0)
        assert bus_counts(c3)[1] == r3, "instance 3 knows neither user but got their wake-ups"
    finally:
        for c in (c1, c2, c3):
            c.close()
