"""Long-poll receive (docs/CONTRACT.md, issue 4: GET /v1/events; DESIGN.md "Long-poll
receive"): prompt wake-ups, timeouts, the head, paging with limit/next, parameter errors,
acks and delivered receipts, read receipts to the reader's other devices, one poll per
device, cursor_expired, revoked devices, typing, abandoned connections and shutdown.

Every poll has an HTTP timeout (poll timeout + a grace); every wait is bounded. Users poll
their head before they share a chat, so that presence events (a contact coming online)
cannot show up in the polls these tests look at."""
import socket
import time

import pytest

from chatlib import (add_members, chat_path, edit_raw, events, inbox_rows, make_direct,
                     make_group, new_user, new_users, react_raw, delete_message_raw, read,
                     receipts, send)
from eventlib import (EVENTS, AsyncPoll, check_batch, device_acked_seq, drain, head,
                      inbox_max_seq, inbox_payloads, of_type, poll, poll_raw, start_poll,
                      stored, typing, typing_raw, wait_acked, waiter_gauge)
from natterlib import (REUSE_GRACE, Client, assert_problem, assert_status, describe, new_account, psql,
                       wait_for)

PROMPT = 5          # seconds: "promptly" (a functional bound, far below the poll timeouts)


def pair(client):
    """Two users who both polled their head (so are online) and then got a direct chat:
    (a, ta, b, tb, chat_id)."""
    (a, ta), (b, tb) = new_users(client, 2, prefix="e")
    head(client, ta)
    head(client, tb)
    cid = make_direct(client, ta, b["id"])["id"]
    return a, ta, b, tb, cid


def assert_matches_inbox(user_id, evs):
    """Each stored event equals its inbox row: seq, type, chat_id and data = payload."""
    rows = inbox_payloads(user_id)
    for e in stored(evs):
        assert e["seq"] in rows, f"event {e} has no inbox row of user {user_id}"
        typ, chat_id, payload = rows[e["seq"]]
        assert (e["type"], e["chat_id"], e["data"]) == (typ, chat_id, payload), \
            f"event {e} differs from inbox row {(e['seq'], typ, chat_id, payload)}"


# --------------------------------------------------------------------------- basics

def test_waiting_poll_gets_message_promptly(client):
    """B's poll (timeout 20) is already waiting when A sends: it answers well before its
    timeout (< 5 s after the send) with exactly the `message` event — seq head+1, type
    message, the chat's id, data {chat_id, message} equal to the 201 Message — and next =
    that seq."""
    a, ta, b, tb, cid = pair(client)
    hb = head(client, tb)
    p = start_poll(client, tb, hb, timeout=20)
    t0 = time.monotonic()
    msg = send(client, ta, cid, "hello B")
    body = p.body(within=20 + 5)
    assert p.answered_at - t0 < PROMPT, \
        f"the waiting poll answered {p.answered_at - t0:.2f} s after the send"
    assert len(body["events"]) == 1, body
    ev = body["events"][0]
    assert ev["seq"] == hb + 1 and body["next"] == hb + 1, body
    assert ev["type"] == "message" and ev["chat_id"] == cid, ev
    assert ev["data"] == {"chat_id": cid, "message": msg}, ev
    assert_matches_inbox(b["id"], body["events"])


def test_poll_with_no_events_times_out_empty(client):
    """A poll with nothing after `since` answers after its timeout (1 s) with exactly
    {"events": [], "next": since} — for a user with no events at all (head 0) and for one
    at the head of a non-empty inbox."""
    (c, tc) = new_user(client, prefix="e")
    assert head(client, tc) == 0
    t0 = time.monotonic()
    r = poll_raw(client, tc, since=0, timeout=1)
    elapsed = time.monotonic() - t0
    assert_status(r, 200)
    assert r.json() == {"events": [], "next": 0}, describe(r)
    assert 0.9 <= elapsed < PROMPT, f"timeout=1 answered after {elapsed:.2f} s"

    a, ta, b, tb, cid = pair(client)
    send(client, ta, cid, "x")
    hb = head(client, tb)
    assert hb > 0
    t0 = time.monotonic()
    r = poll_raw(client, tb, since=hb, timeout=1)
    elapsed = time.monotonic() - t0
    assert_status(r, 200)
    assert r.json() == {"events": [], "next": hb}, describe(r)
    assert 0.9 <= elapsed < PROMPT, f"timeout=1 answered after {elapsed:.2f} s"


def test_no_since_answers_the_head_at_once(client):
    """No `since`: 200 at once (even with timeout=30) with {"events": [], "next": H}, H = the
    user's newest inbox seq (0 for a new user; users.inbox_seq = max inbox seq after a chat
    and messages). It does not ack anything (devices.acked_seq stays 0)."""
    acct = new_account(client, prefix="e")
    assert head(client, acct.token) == 0
    (b, tb) = new_user(client, prefix="e")
    cid = make_direct(client, tb, acct.id)["id"]
    for i in range(3):
        send(client, tb, cid, f"m{i}")
    expected = inbox_max_seq(acct.id)
    assert expected >= 4
    assert psql("SELECT inbox_seq FROM users WHERE id = $1", acct.id) == str(expected)
    t0 = time.monotonic()
    r = poll_raw(client, acct.token, timeout=30)
    assert_status(r, 200)
    assert time.monotonic() - t0 < 3, "a poll without since must not wait"
    assert r.json() == {"events": [], "next": expected}, describe(r)
    assert head(client, acct.token) == expected
    assert device_acked_seq(acct.device_id) == 0


def test_paging_through_a_backlog_with_limit(client):
    """A backlog of ~40 events of every stored type (membership, system and text messages,
    rename, edit, reaction, delete, read receipt) is paged with limit=7 from since=0: every
    page answers at once with 1..7 events, seqs consecutive after `since`, next = the last
    seq; the pages together are exactly seqs 1..K (K = max inbox seq) with no gaps or
    repeats, and each event equals its inbox row (type, chat_id, data = payload)."""
    (a, ta), (b, tb) = new_users(client, 2, prefix="e")
    cid = make_group(client, ta, "backlog", [b["id"]])["id"]
    r = client.patch(chat_path(cid), json={"title": "backlog 2"}, token=ta)
    assert_status(r, 200)
    msgs = [send(client, ta, cid, f"m{i}") for i in range(30)]
    assert_status(edit_raw(client, ta, cid, msgs[0]["seq"], "edited"), 200)
    assert_status(react_raw(client, ta, cid, msgs[1]["seq"], "👍"), 200)
    assert_status(delete_message_raw(client, ta, cid, msgs[2]["seq"]), 204)
    read(client, tb, cid, msgs[5]["seq"])
    k = inbox_max_seq(b["id"])
    assert k >= 36

    got, since, pages = [], 0, 0
    while since < k:
        pages += 1
        assert pages <= k, "paging does not end"
        body = poll(client, tb, since, timeout=5, limit=7, max_elapsed=3)
        page = stored(body["events"])
        assert 1 <= len(page) <= 7, f"page after {since}: {body}"
        got += page
        since = body["next"]
    assert since == k
    assert [e["seq"] for e in got] == list(range(1, k + 1))
    assert pages >= -(-k // 7)
    assert {e["type"] for e in got} >= {"membership", "message", "rename", "edit", "reaction",
                                        "delete", "receipt"}
    assert_matches_inbox(b["id"], got)
    body = poll(client, tb, k, timeout=0)
    assert body == {"events": [], "next": k}


BAD_PARAMS = [
    ({"since": 0, "timeout": 61}, "timeout"),
    ({"since": 0, "timeout": -1}, "timeout"),
    ({"since": 0, "timeout": "abc"}, "timeout"),
    ({"since": 0, "timeout": "1.5"}, "timeout"),
    ({"since": 0, "timeout": ""}, "timeout"),
    ({"since": 0, "limit": 0}, "limit"),
    ({"since": 0, "limit": 501}, "limit"),
    ({"since": 0, "limit": -5}, "limit"),
    ({"since": 0, "limit": "x"}, "limit"),
    ({"since": -1}, "since"),
    ({"since": "abc"}, "since"),
    ({"since": ""}, "since"),
    ({"since": "1e3"}, "since"),
    ({"since": "0x10"}, "since"),
    ({"since": "99999999999999999999999"}, "since"),
    ({"timeout": 61}, "timeout"),
    ({"limit": 0}, "limit"),
]


@pytest.mark.parametrize("params,field", BAD_PARAMS,
                         ids=[f"{f}={p.get(f)!r}" + ("" if "since" in p else "-nosince")
                              for p, f in BAD_PARAMS])
def test_bad_poll_parameters(client, params, field):
    """since/timeout/limit that are not integers in range (timeout 0..60, limit 1..500,
    since >= 0) answer 400 invalid_parameter naming the field, at once, and ack nothing."""
    acct = new_account(client, prefix="e")
    t0 = time.monotonic()
    r = client.get(EVENTS, token=acct.token, params=params, timeout=35)
    assert_problem(r, 400, "invalid_parameter", field=field)
    assert time.monotonic() - t0 < 3
    assert device_acked_seq(acct.device_id) == 0


def test_since_beyond_head(client):
    """since > the user's head → 400 invalid_parameter field=since (head+1, and the largest
    int64); since = head is fine."""
    a, ta, b, tb, cid = pair(client)
    send(client, ta, cid, "x")
    hb = head(client, tb)
    for since in (hb + 1, hb + 1000, 2**63 - 1):
        r = poll_raw(client, tb, since=since, timeout=0)
        assert_problem(r, 400, "invalid_parameter", field="since")
    assert poll(client, tb, hb, timeout=0) == {"events": [], "next": hb}


def test_poll_boundaries_accepted(client):
    """timeout 0 and 60 and limit 1 and 500 are valid: with events after since the poll
    answers at once, with at most `limit` events."""
    a, ta, b, tb, cid = pair(client)
    send(client, ta, cid, "x")
    send(client, ta, cid, "y")
    for timeout, limit, n in ((0, 1, 1), (60, 1, 1), (0, 500, None), (60, 500, None)):
        body = poll(client, tb, 0, timeout=timeout, limit=limit, max_elapsed=3)
        assert len(stored(body["events"])) == (n or inbox_max_seq(b["id"])), body
    assert poll(client, tb, inbox_max_seq(b["id"]), timeout=0, max_elapsed=3)["events"] == []


def test_events_need_auth(client):
    """GET /v1/events, POST /v1/presence/heartbeat, GET /v1/presence and POST typing
    without a token are 401 unauthorized; with a garbage token 401 invalid_token."""
    calls = [("GET", EVENTS + "?since=0&timeout=1", None), ("POST", "/v1/presence/heartbeat", None),
             ("GET", "/v1/presence?user_ids=1", None),
             ("POST", chat_path(1, "typing"), {"typing": True})]
    for method, path, body in calls:
        r = client.request(method, path, json=body)
        assert_problem(r, 401, "unauthorized")
        r = client.request(method, path, json=body, token="garbage.token.here")
        assert_problem(r, 401, "invalid_token")


# --------------------------------------------------------------------------- wake-ups

def test_every_stored_change_wakes_a_waiting_poll(client):
    """A waiting poll of B is answered promptly (< 5 s) for each kind of change A makes in
    their group: edit, reaction, delete, rename, adding a member (membership + system
    message); the first event answered is the right type and every event equals its inbox
    row."""
    (a, ta), (b, tb), (c, tc) = new_users(client, 3, prefix="e")
    for tok in (ta, tb, tc):
        head(client, tok)
    cid = make_group(client, ta, "wake", [b["id"]])["id"]
    m = send(client, ta, cid, "orig")
    m2 = send(client, ta, cid, "doomed")
    since = head(client, tb)
    steps = [
        ("edit", lambda: assert_status(edit_raw(client, ta, cid, m["seq"], "new"), 200)),
        ("reaction", lambda: assert_status(react_raw(client, ta, cid, m["seq"], "🎉"), 200)),
        ("delete", lambda: assert_status(delete_message_raw(client, ta, cid, m2["seq"]), 204)),
        ("rename", lambda: assert_status(client.patch(chat_path(cid), json={"title": "t2"},
                                                      token=ta), 200)),
        ("membership", lambda: add_members(client, ta, cid, [c["id"]])),
    ]
    for typ, action in steps:
        p = start_poll(client, tb, since, timeout=20)
        t0 = time.monotonic()
        action()
        body = p.body(within=25)
        assert p.answered_at - t0 < PROMPT, f"{typ}: answered after {p.answered_at - t0:.2f} s"
        evs = stored(body["events"])
        assert evs, f"{typ}: woken without events: {body}"
        more, since = drain(client, tb, body["next"])
        evs += more
        types = [e["type"] for e in evs]
        assert typ in types, f"{typ}: got {types}"
        assert_matches_inbox(b["id"], evs)
        if typ == "edit":
            assert of_type(evs, "edit")[0]["data"]["message"]["text"] == "new"
        if typ == "membership":
            mem = of_type(evs, "membership")[0]["data"]
            assert mem["action"] == "added" and mem["user_ids"] == [c["id"]], mem
            assert "message" in types, f"no system message event: {types}"


def test_second_poll_of_the_same_device_replaces_the_first(client):
    """Device 1 of B polls while a poll of device 1 waits: the first answers at once with
    200 {"events": [], "next": since}; the second, and device 2's poll (another device of
    the same user), keep waiting and both get A's next message."""
    (a, ta) = new_user(client, prefix="e")
    acct = new_account(client, devices=2, prefix="e")
    t1, t2 = acct.sessions[0]["access_token"], acct.sessions[1]["access_token"]
    for tok in (ta, t1, t2):
        head(client, tok)
    cid = make_direct(client, ta, acct.id)["id"]
    h = head(client, t1)
    p_dev2 = AsyncPoll(client, t2, since=h, timeout=20)
    first = start_poll(client, t1, h, timeout=20)
    second = AsyncPoll(client, t1, since=h, timeout=20)
    t0 = time.monotonic()
    body = first.body(within=10)
    assert body == {"events": [], "next": h}, body
    assert first.answered_at - t0 < 3, f"replaced poll answered after {first.answered_at - t0:.2f} s"
    time.sleep(0.3)
    second.assert_waiting("(it replaced the older one)")
    p_dev2.assert_waiting("(another device of the user)")
    msg = send(client, ta, cid, "to both")
    for p in (second, p_dev2):
        got = p.body(within=PROMPT)
        assert [e["data"]["message"] for e in of_type(got["events"], "message")] == [msg], got


# --------------------------------------------------------------------------- receipts

def test_ack_moves_delivered_marker_and_sends_receipt(client):
    """B polls with since past A's messages: A's waiting poll gets a `receipt` event
    {chat_id, user_id: B, kind: delivered, seq} promptly (several messages acked at once:
    one receipt for the newest), GET /receipts shows B's last_delivered_seq = that seq, and
    devices.acked_seq = since. The ack only moves forward: a later poll with a smaller since
    (and B's other device acking the same range) moves nothing back and sends no second
    receipt. A acking its own message sends nobody a receipt."""
    (a, ta) = new_user(client, prefix="e")
    bacct = new_account(client, devices=2, prefix="e")
    tb, tb2 = bacct.sessions[0]["access_token"], bacct.sessions[1]["access_token"]
    for tok in (ta, tb, tb2):
        head(client, tok)
    cid = make_direct(client, ta, bacct.id)["id"]
    hb = head(client, tb)
    m1 = send(client, ta, cid, "one")
    m2 = send(client, ta, cid, "two")
    ha = head(client, ta)
    poll(client, ta, ha, timeout=0)                        # A acks its own messages
    assert receipts(client, ta, cid)[bacct.id]["last_delivered_seq"] < m1["seq"]

    pa = start_poll(client, ta, ha, timeout=20)
    body = poll(client, tb, hb, timeout=0)                 # receives both, acks nothing new
    assert [e["data"]["message"]["seq"] for e in of_type(body["events"], "message")] == \
        [m1["seq"], m2["seq"]]
    time.sleep(0.3)
    pa.assert_waiting("(B has not acked yet)")
    t0 = time.monotonic()
    acked = body["next"]
    poll(client, tb, acked, timeout=0)                      # the ack
    got = pa.body(within=PROMPT + 20)
    assert pa.answered_at - t0 < PROMPT
    recs = of_type(got["events"], "receipt")
    want = {"chat_id": cid, "user_id": bacct.id, "kind": "delivered", "seq": m2["seq"],
            "members": [{"user_id": bacct.id, "seq": m2["seq"]}]}
    assert [e["data"] for e in recs] == [want], got
    assert recs[0]["chat_id"] == cid
    assert receipts(client, ta, cid)[bacct.id]["last_delivered_seq"] == m2["seq"]
    assert device_acked_seq(bacct.device_id) == acked

    # smaller since: replayed events, nothing moves back
    replay = poll(client, tb, hb, timeout=0)
    assert stored(replay["events"])
    assert device_acked_seq(bacct.device_id) == acked
    poll(client, tb2, acked, timeout=0)                     # the other device acks the same
    wait_acked(bacct.sessions[1]["device_id"], acked)
    assert receipts(client, ta, cid)[bacct.id]["last_delivered_seq"] == m2["seq"]
    time.sleep(0.3)
    delivered = [p for p in events(inbox_rows(a["id"]), "receipt", cid)
                 if p["kind"] == "delivered"]
    assert delivered == [want], \
        f"A's inbox should hold exactly one delivered receipt (none for A's own ack): {delivered}"


def test_read_receipt_reaches_readers_other_device(client):
    """B has two devices; B reads on device 1: device 2's waiting poll gets the `receipt`
    event {chat_id, user_id: B, kind: read, seq} promptly, and A (the sender) gets it in
    the inbox too."""
    (a, ta) = new_user(client, prefix="e")
    bacct = new_account(client, devices=2, prefix="e")
    t1, t2 = bacct.sessions[0]["access_token"], bacct.sessions[1]["access_token"]
    for tok in (ta, t1, t2):
        head(client, tok)
    cid = make_direct(client, ta, bacct.id)["id"]
    m = send(client, ta, cid, "read me")
    h2 = head(client, t2)
    p = start_poll(client, t2, h2, timeout=20)
    t0 = time.monotonic()
    read(client, t1, cid, m["seq"])
    body = p.body(within=25)
    assert p.answered_at - t0 < PROMPT
    want = {"chat_id": cid, "user_id": bacct.id, "kind": "read", "seq": m["seq"]}
    assert want in [e["data"] for e in of_type(body["events"], "receipt")], body
    assert want in events(inbox_rows(a["id"]), "receipt", cid)


# --------------------------------------------------------------------------- expiry, revocation

def test_cursor_expired(client):
    """After the oldest inbox rows of B (seq <= Y) are deleted, a poll with since < Y
    answers 410 cursor_expired with oldest_seq = Y+1; since = Y still works (the events
    after Y), and a poll without since gives the head. With every row deleted, since =
    head still works and head-1 is 410."""
    a, ta, b, tb, cid = pair(client)
    for i in range(10):
        send(client, ta, cid, f"m{i}")
    k = head(client, tb)
    y = 5
    assert k > y + 3
    psql("DELETE FROM inbox WHERE user_id = $1 AND seq <= $2", b["id"], y)
    for since in (0, 1, y - 1):
        r = poll_raw(client, tb, since=since, timeout=0)
        body = assert_problem(r, 410, "cursor_expired")
        assert body.get("oldest_seq") == y + 1, describe(r)
    body = poll(client, tb, y, timeout=0, limit=3)
    assert [e["seq"] for e in body["events"]] == [y + 1, y + 2, y + 3]
    assert head(client, tb) == k

    psql("DELETE FROM inbox WHERE user_id = $1", b["id"])
    assert_problem(poll_raw(client, tb, since=k - 1, timeout=0), 410, "cursor_expired")
    assert poll(client, tb, k, timeout=0) == {"events": [], "next": k}


@pytest.mark.parametrize("how", ["delete_device", "logout", "refresh_token_reuse"])
def test_revoked_device_poll_ends_401(client, how):
    """A device's waiting poll ends promptly with 401 device_revoked when the device is
    revoked (DELETE /v1/devices/{id} from another device of the user, logout, or reuse of
    a rotated refresh token); the other device's poll keeps waiting; later polls with the
    revoked device's token are 401 device_revoked."""
    acct = new_account(client, devices=2, prefix="e")
    t1, t2 = acct.sessions[0]["access_token"], acct.sessions[1]["access_token"]
    d2 = acct.sessions[1]["device_id"]
    h = head(client, t2)
    p1 = AsyncPoll(client, t1, since=h, timeout=20)
    p2 = start_poll(client, t2, h, timeout=20)
    t0 = time.monotonic()
    if how == "delete_device":
        assert_status(client.delete(f"/v1/devices/{d2}", token=t1), 204)
    elif how == "logout":
        assert_status(client.post("/v1/auth/logout", token=t2), 204)
    else:
        old = acct.sessions[1]["refresh_token"]
        assert_status(client.post("/v1/auth/refresh", json={"refresh_token": old}), 200)
        time.sleep(REUSE_GRACE + 0.5)                    # reuse counts after the grace window
        t0 = time.monotonic()
        r = client.post("/v1/auth/refresh", json={"refresh_token": old})
        assert_problem(r, 401, "refresh_token_reused")
    r = p2.wait(within=PROMPT)
    assert_problem(r, 401, "device_revoked")
    assert p2.answered_at - t0 < PROMPT
    time.sleep(0.2)
    p1.assert_waiting("(device 1 was not revoked)")
    assert_problem(poll_raw(client, t2, since=h, timeout=1), 401, "device_revoked")
    poll_raw(client, t1, since=h, timeout=1)               # replaces device 1's poll
    assert p1.body(within=PROMPT) == {"events": [], "next": h}


# --------------------------------------------------------------------------- typing

def test_typing_reaches_other_members_only(client):
    """A POSTs typing:true (204) in a group with B and C: B's and C's waiting polls get one
    `typing` event {seq: null, chat_id, data {chat_id, user_id: A, typing: true}} promptly,
    next unchanged; A's own poll and D's (D shares another chat with A, not this one) get
    no typing event. typing:false reaches B the same way. Typing is not stored: B's inbox
    head does not move and a replay from the old since has no typing event."""
    (a, ta), (b, tb), (c, tc), (d, td) = new_users(client, 4, prefix="e")
    for tok in (ta, tb, tc, td):
        head(client, tok)
    cid = make_group(client, ta, "typing", [b["id"], c["id"]])["id"]
    make_direct(client, ta, d["id"])
    heads = {tok: head(client, tok) for tok in (ta, tb, tc, td)}
    members = [AsyncPoll(client, tok, since=heads[tok], timeout=20) for tok in (tb, tc)]
    others = [AsyncPoll(client, tok, since=heads[tok], timeout=2) for tok in (ta, td)]
    time.sleep(0.4)
    for p in members + others:
        p.assert_waiting()
    t0 = time.monotonic()
    typing(client, ta, cid, True)
    for p, tok in zip(members, (tb, tc)):
        body = p.body(within=PROMPT)
        assert p.answered_at - t0 < PROMPT
        assert body["next"] == heads[tok], body
        assert body["events"] == [{"seq": None, "type": "typing", "chat_id": cid,
                                   "created_at": body["events"][0]["created_at"],
                                   "data": {"chat_id": cid, "user_id": a["id"],
                                            "typing": True}}], body
    for p, tok in zip(others, (ta, td)):
        body = p.body(within=2 + 5)
        assert not of_type(body["events"], "typing"), f"typing leaked: {body}"
        assert body["next"] == heads[tok]
    assert inbox_max_seq(b["id"]) == heads[tb]

    p = start_poll(client, tb, heads[tb], timeout=20)
    typing(client, ta, cid, False)
    body = p.body(within=PROMPT)
    assert [e["data"] for e in body["events"]] == \
        [{"chat_id": cid, "user_id": a["id"], "typing": False}], body
    assert poll(client, tb, heads[tb], timeout=0) == {"events": [], "next": heads[tb]}


def test_typing_errors(client):
    """POST typing by a non-member, on a missing chat or a non-numeric id → 404
    chat_not_found; bodies that are not {"typing": bool} → 422 validation_failed (field
    typing where it names one); invalid JSON → 400 malformed_json; nothing is delivered."""
    (a, ta), (d, td) = new_users(client, 2, prefix="e")
    cid = make_group(client, ta, "t")["id"]
    assert_problem(typing_raw(client, td, cid, {"typing": True}), 404, "chat_not_found")
    missing = int(psql("SELECT coalesce(max(id), 0) + 100000 FROM chats"))
    assert_problem(typing_raw(client, ta, missing, {"typing": True}), 404, "chat_not_found")
    r = client.post("/v1/chats/abc/typing", json={"typing": True}, token=ta)
    assert_problem(r, 404, "chat_not_found")
    for body in ({"typing": "yes"}, {"typing": 1}, {"typing": None}, {}):
        assert_problem(typing_raw(client, ta, cid, body), 422, "validation_failed",
                       field="typing")
    assert_problem(typing_raw(client, ta, cid, {"typing": True, "extra": 1}), 422,
                   "validation_failed")
    r = client.post(chat_path(cid, "typing"), data=b'{"typing":', token=ta,
                    headers={"Content-Type": "application/json"})
    assert_problem(r, 400, "malformed_json")


# --------------------------------------------------------------------------- robustness

def raw_poll_then_close(port: int, tok: str, since: int, hold: float = 0.3):
    """Send GET /v1/events?since=…&timeout=30 on a raw socket and close it after `hold` s
    without reading the answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall((f"GET {EVENTS}?since={since}&timeout=30 HTTP/1.1\r\n"
                   f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {tok}\r\n\r\n").encode())
        time.sleep(hold)
    finally:
        s.close()


def test_client_disconnect_while_suspended_leaves_no_stuck_state(api, client):
    """A client that sends a poll (timeout 30) and closes the socket 0.3 s later leaves
    nothing stuck: a message sent right after is returned to the same device's next poll
    at once, and a fresh waiting poll of that device is woken promptly by the next message.
    Another user abandons a poll and leaves it for longer than the server's socket check
    (~2 s); the server keeps serving and that user's next poll works. If /metrics has a
    gauge of waiting polls, it counts a waiting poll and, once the abandoned poll is
    noticed (well before its 30 s timeout), drops back to its level before."""
    a, ta, b, tb, cid = pair(client)
    (c, tc) = new_user(client, prefix="e")
    hb = head(client, tb)
    gauge0 = waiter_gauge(client)

    raw_poll_then_close(api.port, tb, hb)
    m1 = send(client, ta, cid, "after the hang-up")
    body = poll(client, tb, hb, timeout=10, max_elapsed=3)
    assert [e["data"]["message"] for e in of_type(body["events"], "message")] == [m1], body
    hb = body["next"]

    raw_poll_then_close(api.port, tb, hb)
    p = start_poll(client, tb, hb, timeout=20)
    if gauge0 is not None:
        assert waiter_gauge(client)[1] >= 1, f"{gauge0[0]} does not count a waiting poll"
    t0 = time.monotonic()
    m2 = send(client, ta, cid, "second")
    body = p.body(within=25)
    assert p.answered_at - t0 < PROMPT
    assert [e["data"]["message"] for e in of_type(body["events"], "message")] == [m2], body

    hc = head(client, tc)
    raw_poll_then_close(api.port, tc, hc)
    assert_status(client.get("/healthz"), 200)
    if gauge0 is not None:                                # the server peeks every ~5 s
        name, level = gauge0
        wait_for(lambda: waiter_gauge(client)[1] <= level, 15,
                 f"{name} to drop back to {level} (the abandoned poll freed)")
    assert poll(client, tc, hc, timeout=1) == {"events": [], "next": hc}


def test_server_stop_answers_waiting_polls(start_api, spec):
    """SIGTERM while a poll waits: the poll answers 200 {"events": [], "next": since}
    before the server exits, and the server exits 0."""
    srv = start_api()
    c = Client(srv.base_url, spec)
    try:
        acct = new_account(c, prefix="e")
        h = head(c, acct.token)
        p = start_poll(c, acct.token, h, timeout=30)
        srv.stop()
        assert p.body(within=PROMPT) == {"events": [], "next": h}
        srv.assert_clean_exit()
    finally:
        c.close()


def test_batch_checker_rejects_gaps():
    """Self-check of the helper the event tests rely on: check_batch fails on a gap, a
    repeat or a wrong next (no server involved)."""
    ev = {"type": "message", "chat_id": 1, "created_at": "2026-01-01T00:00:00Z",
          "data": {"chat_id": 1}}
    ok = {"events": [dict(ev, seq=3), dict(ev, seq=4)], "next": 4}
    assert check_batch(ok, 2) is ok
    for bad, since in (({"events": [dict(ev, seq=3), dict(ev, seq=5)], "next": 5}, 2),
                       ({"events": [dict(ev, seq=3), dict(ev, seq=3)], "next": 3}, 2),
                       ({"events": [dict(ev, seq=3)], "next": 4}, 2),
                       ({"events": [dict(ev, seq=4)], "next": 4}, 2)):
        with pytest.raises(AssertionError):
            check_batch(bad, since)
