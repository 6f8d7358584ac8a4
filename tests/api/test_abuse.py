"""Abuse limits (issue 11 items 1, 2, 4, 12; DESIGN.md "Abuse and limits"):

- registration is rate-limited per client address and overall (429 + Retry-After) and
  runs in its own lane of the hashing pool, so a registration flood cannot starve logins;
- failed logins are counted per (username, address) and per address, never per username
  alone: nobody can lock the owner out;
- per-user token buckets on sends, edits, reactions, typing, chat creation, member changes
  and attachment requests answer 429 rate_limited with Retry-After; typing is coalesced;
  a retried send that is already stored is not charged;
- GET /v1/limits reports the limits in force, from the configuration;
- GET /v1/presence shows online state and last-seen only of people who share a chat.

Tests that need tight limits start their own natter-api. Several client addresses come
from binding 127.0.0.x (natterlib Client(source_ip=...))."""
import hashlib
import threading
import time

from chatlib import (add_members_raw, chat_path, cmid, create_chat_raw, delete_message_raw,
                     edit_raw, make_direct, make_group, new_user, new_users, react_raw,
                     remove_member_raw, send, send_raw, set_role_raw)
from eventlib import Listener, head, presence, typing_raw
from natterlib import (TEST_PASSWORD, Client, assert_problem, assert_status, login, register,
                       unique_username)

REGISTER = "/v1/auth/register"
LOGIN = "/v1/auth/login"


def assert_limited(r, limit: str, max_wait: int):
    body = assert_problem(r, 429, "rate_limited")
    assert body.get("limit") == limit, body
    assert 1 <= int(r.headers["Retry-After"]) <= max_wait, r.headers


def register_raw(c: Client):
    return c.post(REGISTER, json={"username": unique_username("ab"), "password": TEST_PASSWORD})


# ------------------------------------------------------------------ item 1: registration

def test_register_rate_limited_per_address_and_overall(start_api, spec):
    """NATTER_RATE_REGISTER_IP_BURST=3 (1 a minute): the 4th registration from one address
    gets 429 rate_limited (limit "register") with Retry-After 1..60 and creates nothing;
    another address still registers. NATTER_RATE_REGISTER_ALL_BURST=6: the 7th
    registration over all addresses gets 429 (limit "register_all")."""
    srv = start_api(NATTER_RATE_REGISTER_IP_BURST="3", NATTER_RATE_REGISTER_IP_PER_MIN="1",
                    NATTER_RATE_REGISTER_ALL_BURST="6", NATTER_RATE_REGISTER_ALL_PER_MIN="1")
    a = Client(srv.base_url, spec, source_ip="127.0.0.1")
    for _ in range(3):
        assert_status(register_raw(a), 201)
    name = unique_username("ab")
    r = a.post(REGISTER, json={"username": name, "password": TEST_PASSWORD})
    assert_limited(r, "register", 60)
    b = Client(srv.base_url, spec, source_ip="127.0.0.2")
    assert_status(b.post(REGISTER, json={"username": name, "password": TEST_PASSWORD}), 201)
    for _ in range(2):
        assert_status(register_raw(b), 201)
    c = Client(srv.base_url, spec, source_ip="127.0.0.3")
    assert_limited(register_raw(c), "register_all", 60)


def test_register_flood_does_not_starve_logins(start_api, spec):
    """With real argon2id cost (interactive), 2 hashing threads and queues of 3, twelve
    clients flooding POST /v1/auth/register from one address (its limit lifted) fill the
    registration lane (201 or 503, never anything else) — yet 8 logins from another
    address, one after the other during the flood, all answer 200: logins have their own
    queue and at least one thread of the pool."""
    srv = start_api(NATTER_PWHASH_COST="interactive", NATTER_HASH_THREADS="2",
                    NATTER_HASH_QUEUE="3", NATTER_HASH_REGISTER_QUEUE="3",
                    NATTER_HASH_REGISTER_THREADS="1", NATTER_RATE_REGISTER_IP_BURST="0",
                    NATTER_RATE_REGISTER_ALL_BURST="0")
    c = Client(srv.base_url, spec, source_ip="127.0.0.5")
    user = register(c)
    stop = threading.Event()
    statuses, lock = [], threading.Lock()

    def flood():
        fc = Client(srv.base_url, spec, source_ip="127.0.0.6")
        try:
            for _ in range(400):                           # bounded; stop ends it first
                if stop.is_set():
                    return
                s = register_raw(fc).status_code
                with lock:
                    statuses.append(s)
        finally:
            fc.close()

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(12)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:                 # the flood is on: some refused
            with lock:
                if 503 in statuses:
                    break
            time.sleep(0.05)
        with lock:
            assert 503 in statuses, f"the flood never filled the registration lane: {statuses}"
        for _ in range(8):
            r = c.post(LOGIN, json={"username": user["username"], "password": TEST_PASSWORD})
            assert_status(r, 200)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert set(statuses) <= {201, 503}, set(statuses)


# ------------------------------------------------------------------ item 2: login failures

def test_failed_logins_from_many_addresses_do_not_lock_the_owner(start_api, private_redis, spec):
    """11 addresses each fail 3 logins for the victim (NATTER_LOGIN_MAX_PER_USER=3): each
    of them is then refused (429) for that username, but the owner with the right password
    from an address that did not fail logs in (200)."""
    srv = start_api(NATTER_REDIS_URL=private_redis.url, NATTER_LOGIN_MAX_PER_USER="3",
                    NATTER_LOGIN_WINDOW="300")
    owner = Client(srv.base_url, spec, source_ip="127.0.0.1")
    victim = register(owner)
    for i in range(11):
        bad = Client(srv.base_url, spec, source_ip=f"127.0.1.{10 + i}")
        for _ in range(3):
            r = bad.post(LOGIN, json={"username": victim["username"], "password": "Wrong-pass-99"})
            assert_problem(r, 401, "invalid_credentials")
        r = bad.post(LOGIN, json={"username": victim["username"], "password": "Wrong-pass-99"})
        assert_problem(r, 429, "rate_limited")
        bad.close()
    tokens = login(owner, victim["username"])
    assert tokens["user"]["id"] == victim["id"]


def test_successful_logins_are_not_counted(start_api, private_redis, spec):
    """NATTER_LOGIN_MAX_PER_IP=3 counts failures only: 6 successful logins from one address
    all answer 200; after 3 failures that address gets 429 for every username."""
    srv = start_api(NATTER_REDIS_URL=private_redis.url, NATTER_LOGIN_MAX_PER_IP="3",
                    NATTER_LOGIN_WINDOW="300")
    c = Client(srv.base_url, spec, source_ip="127.0.0.4")
    user = register(c)
    for _ in range(6):
        login(c, user["username"])
    for _ in range(3):
        r = c.post(LOGIN, json={"username": unique_username(), "password": "Wrong-pass-99"})
        assert_problem(r, 401, "invalid_credentials")
    r = c.post(LOGIN, json={"username": user["username"], "password": TEST_PASSWORD})
    assert_problem(r, 429, "rate_limited")
    assert 1 <= int(r.headers["Retry-After"]) <= 300


# ------------------------------------------------------------------ item 4: write rates

def test_send_rate_limit(start_api, spec):
    """NATTER_RATE_SEND_BURST=5 (6 a minute): the burst's 5 sends → 201, then 429
    rate_limited (limit "send", Retry-After 1..10), nothing stored for it; a retry of a
    stored message (same client_msg_id and text) still answers 200 with the original;
    another user is not limited; after Retry-After the sender sends again. On a slow
    machine a token may come back while the burst is sent (one per 10 s): the sends that
    pass are bounded by the burst plus what the elapsed time refilled."""
    srv = start_api(NATTER_RATE_SEND_BURST="5", NATTER_RATE_SEND_PER_MIN="6")
    c = Client(srv.base_url, spec)
    (a, ta), (b, tb) = new_users(c, 2, prefix="rl")
    cid = make_direct(c, ta, b["id"])["id"]
    first_id = cmid()
    started = time.monotonic()
    first = send(c, ta, cid, "m0", client_msg_id=first_id)
    passed = 1
    while True:
        r = send_raw(c, ta, cid, f"m{passed}")
        if r.status_code != 201:
            break
        passed += 1
        assert passed <= 20, "the send limit never refused"
    refilled = int((time.monotonic() - started) * 6 / 60)
    assert 5 <= passed <= 5 + refilled, (passed, refilled)
    assert_limited(r, "send", 10)
    wait = int(r.headers["Retry-After"])
    again = send_raw(c, ta, cid, "m0", client_msg_id=first_id)
    assert_status(again, 200)
    assert again.json() == first
    send(c, tb, cid, "b is not limited")
    time.sleep(wait + 0.2)
    deadline = time.monotonic() + 5
    while True:                                   # a busy machine may need a moment more
        r = send_raw(c, ta, cid, "after the wait")
        if r.status_code == 201 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert_status(r, 201)
    assert r.json()["seq"] == passed + 2, \
        f"a's {passed}, b's 1, then this one (the refused one stored nothing): {r.json()}"


def test_write_rate_limits(start_api, spec):
    """With every write bucket at burst 2: edits (PATCH/DELETE a message), reactions,
    chat creation (and rename), member changes and attachment requests each answer their
    3rd request in a row 429 rate_limited with the limit's name and Retry-After."""
    env = {f"NATTER_RATE_{k}_BURST": "2" for k in ("EDIT", "REACTION", "CHAT", "MEMBER",
                                                  "ATTACHMENT")}
    env.update({f"NATTER_RATE_{k}_PER_MIN": "1" for k in ("EDIT", "REACTION", "CHAT", "MEMBER",
                                                         "ATTACHMENT")})
    srv = start_api(**env)
    c = Client(srv.base_url, spec)
    (a, ta), (b, tb), (d, td), (e, te) = new_users(c, 4, prefix="rw")
    gid = make_group(c, ta, "limits", [b["id"]])["id"]
    cid2 = make_direct(c, ta, d["id"])["id"]
    assert_limited(create_chat_raw(c, ta, {"kind": "direct", "user_id": e["id"]}), "chat", 60)

    seqs = [send(c, ta, gid, f"m{i}")["seq"] for i in range(3)]
    assert_status(edit_raw(c, ta, gid, seqs[0], "edited"), 200)
    assert_status(delete_message_raw(c, ta, gid, seqs[1]), 204)
    assert_limited(edit_raw(c, ta, gid, seqs[2], "edited"), "edit", 60)

    assert_status(react_raw(c, tb, gid, seqs[2], "👍"), 200)
    assert_status(react_raw(c, tb, gid, seqs[2], "👍", method="DELETE"), 200)
    assert_limited(react_raw(c, tb, gid, seqs[2], "🎉"), "reaction", 60)

    assert_status(add_members_raw(c, ta, gid, [d["id"]]), 200)
    assert_status(set_role_raw(c, ta, gid, d["id"], "admin"), 200)
    assert_limited(remove_member_raw(c, ta, gid, d["id"]), "member", 60)

    body = {"filename": "a.txt", "content_type": "text/plain", "size": 3,
            "sha256": hashlib.sha256(b"abc").hexdigest()}
    for _ in range(2):
        assert_status(c.post(chat_path(cid2, "attachments"), json=body, token=td), 201)
    assert_limited(c.post(chat_path(cid2, "attachments"), json=body, token=td), "attachment", 60)


def test_typing_is_coalesced_and_limited(start_api, spec):
    """A posts typing:true 10 times in a row (204 each): B's waiting poll gets one typing
    event, not 10; typing:false then reaches B at once. With NATTER_RATE_TYPING_BURST=12,
    the 13th typing request in a row is refused 429 (limit "typing")."""
    srv = start_api(NATTER_TYPING_COALESCE_MS="20000", NATTER_RATE_TYPING_BURST="12",
                    NATTER_RATE_TYPING_PER_MIN="1")
    c = Client(srv.base_url, spec)
    (a, ta), (b, tb) = new_users(c, 2, prefix="ty")
    cid = make_direct(c, ta, b["id"])["id"]
    lb = Listener(c, tb, head(c, tb), timeout=20, label="B")
    try:
        time.sleep(0.5)
        for _ in range(10):
            assert_status(typing_raw(c, ta, cid, {"typing": True}), 204)
        lb.wait_for(lambda ev: ev["type"] == "typing" and ev["data"]["typing"] is True, 10,
                    "a typing event")
        assert_status(typing_raw(c, ta, cid, {"typing": False}), 204)
        lb.wait_for(lambda ev: ev["type"] == "typing" and ev["data"]["typing"] is False, 10,
                    "the typing:false event")
        time.sleep(0.5)
        got = [(ev["data"]["typing"]) for ev in lb.events if ev["type"] == "typing"]
        assert got == [True, False], f"typing events reaching B: {got}"
    finally:
        lb.stop(c)
    assert_status(typing_raw(c, ta, cid, {"typing": True}), 204)      # the 12th
    assert_limited(typing_raw(c, ta, cid, {"typing": True}), "typing", 60)


# ------------------------------------------------------------------ GET /v1/limits

def test_limits_report_the_configuration(start_api, spec):
    """GET /v1/limits (no credentials needed) reports what this server enforces: the
    configured rates (a rate with burst 0 is not in force and is left out), upload size and
    types, typing coalescing, login failure limits, and the fixed message, group and page
    limits; the message length it reports is the one a send is held to."""
    srv = start_api(NATTER_RATE_SEND_BURST="7", NATTER_RATE_SEND_PER_MIN="70",
                    NATTER_RATE_EDIT_BURST="0", NATTER_ATTACHMENT_MAX_BYTES="12345",
                    NATTER_ATTACHMENT_TYPES="image/png, text/plain", NATTER_TYPING_COALESCE_MS="1500",
                    NATTER_LOGIN_MAX_PER_USER="4", NATTER_LOGIN_MAX_PER_IP="40",
                    NATTER_LOGIN_WINDOW="120", NATTER_POLL_TIMEOUT_MAX="45",
                    NATTER_RATE_REGISTER_IP_BURST="10", NATTER_RATE_REGISTER_IP_PER_MIN="2",
                    NATTER_ATTACHMENT_PENDING_MAX="5", NATTER_ATTACHMENT_PENDING_MAX_BYTES="99999",
                    NATTER_ATTACHMENT_PENDING_TTL="7200")
    c = Client(srv.base_url, spec)
    r = c.get("/v1/limits")
    assert_status(r, 200)
    lim = r.json()
    assert lim["rates"]["send"] == {"burst": 7, "per_minute": 70, "scope": "user"}
    assert "edit" not in lim["rates"]
    assert lim["rates"]["register"] == {"burst": 10, "per_minute": 2, "scope": "address"}
    assert "register_all" not in lim["rates"]                 # lifted (burst 0) by the tests' env
    assert set(lim["rates"]) >= {"reaction", "typing", "chat", "member", "attachment"}
    assert lim["attachments"]["max_bytes"] == 12345
    assert lim["attachments"]["content_types"] == ["image/png", "text/plain"]
    assert (lim["attachments"]["max_pending"], lim["attachments"]["max_pending_bytes"],
            lim["attachments"]["pending_ttl"]) == (5, 99999, 7200)
    assert lim["typing"]["coalesce_ms"] == 1500
    assert lim["login"]["max_failures_per_username_address"] == 4
    assert lim["login"]["max_failures_per_address"] == 40
    assert lim["login"]["window_seconds"] == 120
    assert lim["pages"]["events"]["max_timeout"] == 45
    assert lim["group"]["max_members"] == 100
    assert lim["pages"]["messages"]["max"] == 100

    (a, ta), (b, tb) = new_users(c, 2, prefix="li")
    cid = make_direct(c, ta, b["id"])["id"]
    n = lim["message"]["max_chars"]
    assert_status(send_raw(c, ta, cid, "x" * n), 201)
    assert_problem(send_raw(c, ta, cid, "x" * (n + 1)), 422, "validation_failed", field="text")


# ------------------------------------------------------------------ item 12: presence

def test_presence_only_of_people_sharing_a_chat(client):
    """A polls (online). B shares a chat with A and sees A online with last_seen_at; S
    shares no chat with A and sees A exactly like someone never seen: online false,
    last_seen_at null. Everyone sees their own presence."""
    (a, ta), (b, tb), (s, ts) = new_users(client, 3, prefix="pv")
    make_direct(client, ta, b["id"])
    head(client, ta)
    head(client, ts)
    seen_by_b = presence(client, tb, [a["id"]])[a["id"]]
    assert seen_by_b["online"] is True and seen_by_b["last_seen_at"], seen_by_b
    assert presence(client, ts, [a["id"]]) == {
        a["id"]: {"user_id": a["id"], "online": False, "last_seen_at": None}}
    me = presence(client, ts, [s["id"]])[s["id"]]
    assert me["online"] is True and me["last_seen_at"], me
