"""Silent badge updates and push acks (docs/CONTRACT.md, issue 14 items 3 and 4).

Badge: when a user reads on one device, the user's other devices with a push token that
are not polling get a silent push (kind "badge") with the new total unread count,
coalesced like message pushes (NATTER_PUSH_COALESCE_MS, 1 s in the tests); the reading
device gets none.

Push ack: POST /v1/devices/{id}/push-ack {"push_id"} from a phone that got a push moves the
user's delivered markers over the messages that push covered and writes the `delivered`
receipts, exactly as a poll ack does; idempotent; only the device's own pushes.

Each test runs its own natter-api + natter-worker (pushlib's push_stack) sending to a
webhook receiver."""
import time

from chatlib import chat_path, events, inbox_rows, make_direct, make_group, receipts, send
from natterlib import assert_problem, assert_status, new_account, wait_for
from pushlib import QUIET, check_push_body, new_push_token, push_account, push_stack, set_push_token  # noqa: F401

WAIT = 20.0


def read(client, tok, chat_id, seq):
    r = client.post(chat_path(chat_id, "read"), json={"seq": seq}, token=tok)
    assert_status(r, 200)
    return r.json()


def kind_of(req):
    return (req.json or {}).get("kind")


# --------------------------------------------------------------------------- badge

def test_reading_on_one_device_sends_a_silent_badge_update_to_the_others(push_stack):
    """B has two phones with push tokens and no poll. A sends B 2 messages in a direct chat
    and 1 in a group: each phone gets message pushes. B then reads both chats on phone 0,
    back to back: phone 1 gets exactly ONE push of kind "badge" (the two reads coalesce)
    with badge 0 and count 0, signed like every webhook push; phone 0, which read, gets
    none."""
    stack = push_stack()
    c = stack.client
    a = new_account(c, prefix="ba")
    b, (tok0, tok1) = push_account(c, devices=2, prefix="bb")
    direct = make_direct(c, a.token, b.id)
    group = make_group(c, a.token, "badge group", [b.id])
    send(c, a.token, direct["id"], "one")
    last_direct = send(c, a.token, direct["id"], "two")
    last_group = send(c, a.token, group["id"], "three")
    stack.hook.wait_until(
        lambda recs: {r.token for r in recs if kind_of(r) == "messages" and r.delivered
                      and r.json["badge"] == 3} >= {tok0, tok1} or None,
        WAIT, "message pushes with badge 3 on both phones")

    phone0 = b.sessions[0]["access_token"]
    read(c, phone0, direct["id"], last_direct["seq"])
    read(c, phone0, group["id"], last_group["seq"])
    badge = stack.hook.wait_until(
        lambda recs: [r for r in recs if r.token == tok1 and kind_of(r) == "badge"] or None,
        WAIT, "a badge update on phone 1")[0]
    time.sleep(QUIET)
    body = check_push_body(badge)
    assert (body["badge"], body["count"], body["device_id"]) == \
        (0, 0, b.sessions[1]["device_id"]), badge.summary()
    badges1 = [r for r in stack.hook.for_tokens(tok1) if kind_of(r) == "badge"]
    assert len(badges1) == 1, f"the two reads were not coalesced:\n{stack.hook.dump()}"
    badges0 = [r for r in stack.hook.for_tokens(tok0) if kind_of(r) == "badge"]
    assert badges0 == [], f"the reading phone got a badge update:\n{stack.hook.dump()}"


def test_no_badge_update_when_the_badge_did_not_change(push_stack):
    """A read that leaves the unread count where the other phone's last push put it
    (reading a chat with nothing unread) sends no badge update."""
    stack = push_stack()
    c = stack.client
    a = new_account(c, prefix="na")
    b, (tok0, tok1) = push_account(c, devices=2, prefix="nb")
    chat = make_direct(c, a.token, b.id)
    m = send(c, a.token, chat["id"], "hi")
    stack.hook.wait_count(2, tokens=[tok0, tok1], delivered=True)
    phone0 = b.sessions[0]["access_token"]
    read(c, phone0, chat["id"], m["seq"])
    stack.hook.wait_until(
        lambda recs: [r for r in recs if r.token == tok1 and kind_of(r) == "badge"] or None,
        WAIT, "the first badge update")
    read(c, phone0, chat["id"], m["seq"])       # nothing changes
    time.sleep(QUIET + 1)
    assert len([r for r in stack.hook.for_tokens(tok1) if kind_of(r) == "badge"]) == 1, \
        stack.hook.dump()


# --------------------------------------------------------------------------- push ack

def delivered_receipts(user_id, cid) -> list[dict]:
    return [p for p in events(inbox_rows(user_id), "receipt", cid) if p["kind"] == "delivered"]


def ack(client, tok, device_id, push_id):
    return client.post(f"/v1/devices/{device_id}/push-ack", json={"push_id": push_id}, token=tok)


def test_push_ack_delivers_what_the_push_covered(push_stack):
    """A sends B 3 messages; B (one phone, never polling) gets one push. Before the ack, B's
    delivered marker is 0 and A has no delivered receipt. The phone acks the push id: 204;
    B's last_delivered_seq becomes the newest seq and A gets ONE `delivered` receipt
    {chat_id, user_id B, kind delivered, seq, members [{user_id B, seq}]}, the event a poll
    ack writes. Acking again is 204 and writes nothing more (idempotent)."""
    stack = push_stack()
    c = stack.client
    a = new_account(c, prefix="ka")
    b, (btok,) = push_account(c, prefix="kb")
    chat = make_direct(c, a.token, b.id)
    for i in range(2):
        send(c, a.token, chat["id"], f"m{i}")
    last = send(c, a.token, chat["id"], "last")
    push = stack.hook.wait_count(1, tokens=btok, delivered=True)[0]
    pid = check_push_body(push)["id"]
    assert receipts(c, a.token, chat["id"])[b.id]["last_delivered_seq"] == 0
    assert delivered_receipts(a.id, chat["id"]) == []

    r = ack(c, b.token, b.device_id, pid)
    assert_status(r, 204)
    got = wait_for(lambda: delivered_receipts(a.id, chat["id"]), WAIT, "A's delivered receipt")
    assert got == [{"chat_id": chat["id"], "user_id": b.id, "kind": "delivered",
                    "seq": last["seq"], "members": [{"user_id": b.id, "seq": last["seq"]}]}], got
    assert receipts(c, a.token, chat["id"])[b.id]["last_delivered_seq"] == last["seq"]

    assert_status(ack(c, b.token, b.device_id, pid), 204)
    time.sleep(1.0)
    assert delivered_receipts(a.id, chat["id"]) == got


def test_push_ack_only_for_the_devices_own_pushes(push_stack):
    """The push id names its device: B's other device acking it is 404 push_not_found, a
    well-formed id that was never sent is 404 push_not_found, a device of another user is
    404 device_not_found, a malformed id 422 validation_failed (field push_id), a missing
    body 400/422 — and none of them moves a marker."""
    stack = push_stack()
    c = stack.client
    a = new_account(c, prefix="oa")
    b, (tok0,) = push_account(c, prefix="ob")
    other = b.login(c, device_name="tablet", platform="web")
    set_push_token(c, other["access_token"], other["device_id"], new_push_token())
    chat = make_direct(c, a.token, b.id)
    send(c, a.token, chat["id"], "x")
    push = stack.hook.wait_count(1, tokens=tok0, delivered=True)[0]
    pid = check_push_body(push)["id"]
    phone = b.sessions[0]

    assert_problem(ack(c, other["access_token"], other["device_id"], pid), 404, "push_not_found")
    flush = pid.rsplit("-", 1)[0]
    assert_problem(ack(c, phone["access_token"], phone["device_id"],
                       f"{'0' * len(flush)}-{phone['device_id']}"), 404, "push_not_found")
    assert_problem(ack(c, a.token, phone["device_id"], pid), 404, "device_not_found")
    assert_problem(ack(c, phone["access_token"], phone["device_id"], "no-such-thing!"), 422,
                   "validation_failed", field="push_id")
    r = c.post(f"/v1/devices/{phone['device_id']}/push-ack", json={}, token=phone["access_token"])
    assert r.status_code in (400, 422), r.text
    time.sleep(0.5)
    assert receipts(c, a.token, chat["id"])[b.id]["last_delivered_seq"] == 0
    assert delivered_receipts(a.id, chat["id"]) == []


def test_push_ack_is_rate_limited_per_user(start_api, spec):
    """NATTER_RATE_PUSH_ACK_BURST=3 (1 a minute): the 4th push ack of a user in a row gets
    429 rate_limited (limit "push_ack") with Retry-After 1..60, whatever the push id;
    GET /v1/limits lists `push_ack`; another user still acks (its answer is its own 404)."""
    from natterlib import Client
    srv = start_api(NATTER_RATE_PUSH_ACK_BURST="3", NATTER_RATE_PUSH_ACK_PER_MIN="1")
    c = Client(srv.base_url, spec)
    u = new_account(c, prefix="rl")
    fake = f"{'a' * 32}-{u.device_id}"
    for _ in range(3):
        assert_problem(ack(c, u.token, u.device_id, fake), 404, "push_not_found")
    r = ack(c, u.token, u.device_id, fake)
    body = assert_problem(r, 429, "rate_limited")
    assert body.get("limit") == "push_ack", body
    assert 1 <= int(r.headers["Retry-After"]) <= 60, r.headers
    other = new_account(c, prefix="rm")
    assert_problem(ack(c, other.token, other.device_id, f"{'b' * 32}-{other.device_id}"), 404,
                   "push_not_found")
    lim = c.get("/v1/limits", token=u.token)
    assert_status(lim, 200)
    assert lim.json()["rates"]["push_ack"]["burst"] == 3, lim.json()
