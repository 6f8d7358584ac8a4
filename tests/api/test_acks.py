"""Coalesced poll acks (api/chat/acks.c): a poll's `since` is noted in memory and flushed
with every other device's in one transaction NATTER_ACK_FLUSH_MS later, which moves the
delivered markers and writes ONE `delivered` receipt per (chat, sender) listing every
member that moved. A crash loses only unflushed acks (the device's next poll acks the
same range again: receipts come late, never wrong, never twice); SIGTERM flushes them.
These tests run their own natter-api with a long flush window so what they observe does
not depend on timing. No timed assertions."""
import signal
import time

from chatlib import events, inbox_rows, make_direct, make_group, new_users, receipts, send
from eventlib import device_acked_seq, head, poll, wait_acked
from natterlib import Client, metric_samples, psql_int, wait_for

WINDOW_MS = 3000


def device_of(user) -> int:
    """The user's (only) device."""
    return psql_int("SELECT max(id) FROM devices WHERE user_id = $1", user["id"])


def delivered_receipts(user_id, cid) -> list[dict]:
    return [p for p in events(inbox_rows(user_id), "receipt", cid) if p["kind"] == "delivered"]


def fetch_then_ack(c, tok, since) -> int:
    """Receives the events after `since` (acking only `since`), then acks them; the new
    cursor."""
    nxt = poll(c, tok, since, timeout=0)["next"]
    poll(c, tok, nxt, timeout=0)
    return nxt


def ack_pending(start_api, spec, prefix, text):
    """A natter-api with a 10 s ack flush window; A sends B a message and B receives and
    acks it, so that ack is pending in memory. Returns the server, a client, both users,
    the chat, the message, B's device's acked_seq before the ack and B's new cursor."""
    srv = start_api(NATTER_ACK_FLUSH_MS="10000")
    c = Client(srv.base_url, spec)
    (a, ta), (b, tb) = new_users(c, 2, prefix=prefix)
    cid = make_direct(c, ta, b["id"])["id"]
    hb = head(c, tb)
    m = send(c, ta, cid, text)
    before = device_acked_seq(device_of(b))
    nxt = fetch_then_ack(c, tb, hb)
    return srv, c, (a, ta), (b, tb), cid, m, before, nxt


def test_group_acks_become_one_receipt_per_sender(start_api, spec):
    """Five members of a group ack A's and C's messages within one flush window: A and C
    each get ONE delivered receipt listing the four other members at the newest seq (not
    C in A's: C's own send already moved its marker past A's message; never the sender
    itself), every marker moved, and a second round of the same acks writes nothing
    more."""
    srv = start_api(NATTER_ACK_FLUSH_MS=str(WINDOW_MS))
    c = Client(srv.base_url, spec)
    users = new_users(c, 6, prefix="ak")
    (a, ta), (cu, tc) = users[0], users[1]
    cid = make_group(c, ta, "acks", [u["id"] for u, _ in users[1:]])["id"]
    heads = {u["id"]: head(c, tok) for u, tok in users[1:]}
    m1 = send(c, ta, cid, "from a")
    m2 = send(c, tc, cid, "from c")
    recv = [(u, tok) for u, tok in users[1:]]

    t0 = time.monotonic()
    cursors = {u["id"]: fetch_then_ack(c, tok, heads[u["id"]]) for u, tok in recv}
    quick = (time.monotonic() - t0) * 1000 < WINDOW_MS
    for u, _ in recv:
        wait_acked(device_of(u), cursors[u["id"]])
    rec = receipts(c, ta, cid)
    assert all(rec[u["id"]]["last_delivered_seq"] == m2["seq"] for u, _ in recv), rec

    got_a = delivered_receipts(a["id"], cid)
    got_c = delivered_receipts(cu["id"], cid)
    want_a = want_c = sorted(u["id"] for u, _ in recv if u["id"] != cu["id"])
    # every member that moved is listed exactly once over the sender's receipts
    listed_a = sorted(m["user_id"] for p in got_a for m in p["members"])
    listed_c = sorted(m["user_id"] for p in got_c for m in p["members"])
    assert listed_a == want_a, got_a
    assert listed_c == want_c, got_c
    assert all(m["seq"] == m2["seq"] for p in got_a + got_c for m in p["members"])
    assert all(p["seq"] == m2["seq"] and p["user_id"] == p["members"][0]["user_id"] and
               [m["user_id"] for m in p["members"]] == sorted(m["user_id"] for m in p["members"])
               for p in got_a + got_c), (got_a, got_c)
    if quick:   # all five acks were recorded inside one window: one flush, one receipt each
        assert len(got_a) == 1 and len(got_c) == 1, (got_a, got_c)
    assert m1["seq"] < m2["seq"]

    # the same acks again: on this instance a repeated since is not even recorded (its
    # previous poll acked the same); through a second instance, which knows nothing of
    # these devices, they are flushed again: nothing moves, nothing more
    f1 = metric_samples(c.get("/metrics").text)["natter_ack_flushes_total"]
    for u, tok in recv:
        poll(c, tok, cursors[u["id"]], timeout=0)
    srv2 = start_api(NATTER_ACK_FLUSH_MS=str(WINDOW_MS), label="a second instance")
    c2 = Client(srv2.base_url, spec)
    for u, tok in recv:
        poll(c2, tok, cursors[u["id"]], timeout=0)
    wait_for(lambda: metric_samples(c2.get("/metrics").text)["natter_ack_flushes_total"] > 0,
             WINDOW_MS / 1000 + 20, "the flush of the repeated acks")
    assert metric_samples(c.get("/metrics").text)["natter_ack_flushes_total"] == f1
    assert delivered_receipts(a["id"], cid) == got_a
    assert delivered_receipts(cu["id"], cid) == got_c


def test_acks_lost_in_a_crash_are_made_good_by_the_next_poll(start_api, spec):
    """B acks A's message and natter-api is SIGKILLed inside the flush window: nothing of
    the ack was written (acked_seq, delivered marker, receipt). B's next poll through a
    fresh natter-api acks the same range: the marker moves, A gets exactly one receipt
    with the right seq, and further polls add none."""
    srv, c, (a, ta), (b, tb), cid, m, before, nxt = ack_pending(start_api, spec, "ac", "deliver me")
    srv.send_signal(signal.SIGKILL)
    srv.stop(timeout=10)
    start_api.__self__.procs.remove(srv)                 # its exit is expected: not a clean one
    assert device_acked_seq(device_of(b)) == before, "the ack was flushed before the kill"
    assert delivered_receipts(a["id"], cid) == []

    srv2 = start_api()
    c2 = Client(srv2.base_url, spec)
    assert receipts(c2, ta, cid)[b["id"]]["last_delivered_seq"] < m["seq"]
    poll(c2, tb, nxt, timeout=0)                          # the device's next poll re-acks
    wait_acked(device_of(b), nxt)
    assert receipts(c2, ta, cid)[b["id"]]["last_delivered_seq"] == m["seq"]
    want = [{"chat_id": cid, "user_id": b["id"], "kind": "delivered", "seq": m["seq"],
             "members": [{"user_id": b["id"], "seq": m["seq"]}]}]
    assert delivered_receipts(a["id"], cid) == want
    poll(c2, tb, nxt, timeout=0)
    poll(c2, tb, nxt, timeout=0)
    time.sleep(0.3)
    assert delivered_receipts(a["id"], cid) == want


def test_sigterm_flushes_pending_acks(start_api, spec):
    """Acks waiting in a long flush window are written when natter-api stops on SIGTERM,
    before it exits cleanly."""
    srv, c, (a, ta), (b, tb), cid, m, _, nxt = ack_pending(start_api, spec, "as", "flush me")
    srv.stop(signal.SIGTERM)
    srv.assert_clean_exit()
    assert device_acked_seq(device_of(b)) == nxt
    assert [p["seq"] for p in delivered_receipts(a["id"], cid)] == [m["seq"]]



def group_round(c, users, cid_group, cid_direct):
    """A and C post into a group and A into a direct chat with B; every other member
    fetches and acks. Returns what each poster holds as delivered receipts, with user
    ids replaced by their index in `users` (comparable across servers)."""
    ta, tc = users[0][1], users[2][1]
    heads = {u["id"]: head(c, tok) for u, tok in users[1:]}
    for u, tok in users[1:]:                             # a first ack: what it covers is old
        poll(c, tok, heads[u["id"]], timeout=0)
        wait_acked(device_of(u), heads[u["id"]])
    send(c, ta, cid_group, "g1")
    send(c, tc, cid_group, "g2")
    send(c, ta, cid_direct, "d1")
    send(c, ta, cid_group, "g3")
    for u, tok in users[1:]:
        cur = heads[u["id"]]
        for _ in range(10):                              # fetch everything, then ack it
            body = poll(c, tok, cur, timeout=0)
            if not body["events"]:
                break
            cur = body["next"]
        wait_acked(device_of(u), cur)
    index = {u["id"]: k for k, (u, _) in enumerate(users)}
    out = {}
    for k in (0, 2):
        uid = users[k][0]["id"]
        recs = [p for cid in (cid_group, cid_direct) for p in delivered_receipts(uid, cid)]
        out[k] = sorted((p["chat_id"] == cid_group, index[p["user_id"]], p["seq"],
                         tuple((index[m["user_id"]], m["seq"]) for m in p["members"]))
                        for p in recs)
    return out


def test_receipts_are_the_same_from_memory_and_from_the_database(start_api, spec):
    """The flush learns what an ack covers from the events natter-api's polls answered
    (hints: natter_acks_hinted_total moves) or, when memory cannot tell, from the inbox
    and the messages. The same traffic against a server whose wake-ups carry no events
    (NATTER_WAKE_EVENT_MAX=0: nothing is hinted) gives exactly the same delivered
    receipts, markers relative to the chats' seqs alike."""
    got = {}
    for label, env in (("memory", {}), ("database", {"NATTER_WAKE_EVENT_MAX": "0"})):
        srv = start_api(**env)
        c = Client(srv.base_url, spec)
        users = new_users(c, 4, prefix="ah")
        ta, b = users[0][1], users[1][0]
        gid = make_group(c, ta, "hints", [u["id"] for u, _ in users[1:]])["id"]
        did = make_direct(c, ta, b["id"])["id"]
        m0 = metric_samples(c.get("/metrics").text)["natter_acks_hinted_total"]
        got[label] = group_round(c, users, gid, did)
        hinted = metric_samples(c.get("/metrics").text)["natter_acks_hinted_total"] - m0
        if label == "memory":
            assert hinted > 0, "no ack was described from memory"
        else:
            assert hinted == 0, "acks were described from memory with id-only wake-ups"
    assert got["memory"] == got["database"], got
    assert got["memory"][0] and got["memory"][2], got
