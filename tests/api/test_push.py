"""Push notifications (docs/CONTRACT.md, issue 5): who gets a push and what it carries
(coalescing, signature, body, badge), who does not (the sender, online recipients, muted
chats), the device push-token and chat mute API, and the job metrics of natter-api.

Each push test runs its own natter-api + natter-worker on a private Redis (pushlib's
`push_stack`) with a 1 s coalescing window, sending to a webhook receiver started for the
test; pushes are told apart by their per-test push tokens. "No push" is asserted only after
a push to a control recipient arrived and QUIET (2.7 s, the 1 s window plus a margin) passed."""
import time

import pytest

from chatlib import chat_path, get_chat, make_direct, make_group, missing_chat_id, send
from natterlib import assert_problem, assert_status, describe, new_account, psql
from pushlib import (JOB_METRICS, QUIET, Poller, check_push_body, device_push_path,
                     devices_listed, expected_signature, metric_samples, metric_total,
                     new_push_token, parse_signature, push_account, push_stack,  # noqa: F401
                     push_token_db, set_push_token, verify_signature)


def send_burst(client, tok, chat_id, n):
    """n messages sent back to back; the last Message."""
    msg = None
    for i in range(n):
        msg = send(client, tok, chat_id, f"burst message {i}")
    return msg


# --------------------------------------------------------------------------- who gets one

def test_offline_recipient_gets_one_signed_push_per_burst(push_stack):
    """5 messages sent quickly from A to B (B has no poll waiting) make exactly one push to
    B's device: POST application/json, a valid X-Natter-Signature (HMAC-SHA256 over
    "<t>." + raw body), X-Natter-Push-Id = body id, and the body {id, user_id, device_id,
    token, platform, count 5, chat_id, seq of the newest message, badge 5 (B's total
    unread), sent_at}. The sender A, who has a push token too, gets none."""
    stack = push_stack()
    c = stack.client
    a, (a_tok,) = push_account(c, platform="web", prefix="pa")
    b, (b_tok,) = push_account(c, platform="android", prefix="pb")
    chat = make_direct(c, a.token, b.id)
    last = send_burst(c, a.token, chat["id"], 5)

    push = stack.hook.wait_count(1, tokens=b_tok)[0]
    time.sleep(QUIET)
    got = stack.hook.for_tokens(b_tok)
    assert len(got) == 1, f"expected exactly one push to B:\n{stack.hook.dump(got)}"
    assert push.delivered and push.path == "/push", push.summary()
    body = check_push_body(push)
    assert body == {**body, "user_id": b.id, "device_id": b.device_id, "token": b_tok,
                    "platform": "android", "count": 5, "chat_id": chat["id"],
                    "seq": last["seq"], "badge": 5}, push.summary()
    assert stack.hook.for_tokens(a_tok) == [], \
        f"the sender got a push:\n{stack.hook.dump(stack.hook.for_tokens(a_tok))}"
    assert get_chat(c, b.token, chat["id"])["unread_count"] == 5


def test_badge_counts_every_chat(push_stack):
    """The badge is the recipient's total unread count over all chats: B has 2 unread in
    a group, then gets 3 messages in a direct chat: that push has count 3 and badge 5."""
    stack = push_stack()
    c = stack.client
    a, _ = push_account(c, prefix="pa")
    d = new_account(c, prefix="pd")
    b, (b_tok,) = push_account(c, prefix="pb")
    group = make_group(c, d.token, "badge group", [b.id])
    send_burst(c, d.token, group["id"], 2)
    first = stack.hook.wait_count(1, tokens=b_tok)[0]
    assert check_push_body(first)["badge"] == 2, first.summary()

    chat = make_direct(c, a.token, b.id)
    last = send_burst(c, a.token, chat["id"], 3)
    second = stack.hook.wait_count(2, tokens=b_tok)[1]
    body = check_push_body(second)
    assert (body["count"], body["badge"], body["chat_id"], body["seq"]) == \
        (3, 5, chat["id"], last["seq"]), second.summary()
    assert body["id"] != check_push_body(first)["id"], "two pushes share one push id"


def test_one_push_per_device_with_a_token(push_stack):
    """A recipient with three devices, two of them with push tokens, gets one push on each
    of those two (own device_id, token and platform, distinct push ids, same count) and
    none on the device without a token."""
    stack = push_stack()
    c = stack.client
    a = new_account(c, prefix="pa")
    b, tokens = push_account(c, devices=2, platform="ios", prefix="pb")
    b.login(c, device_name="no token", platform="desktop")
    chat = make_direct(c, a.token, b.id)
    last = send_burst(c, a.token, chat["id"], 2)

    stack.hook.wait_count(2, tokens=tokens)
    time.sleep(QUIET)
    got = stack.hook.for_tokens(tokens)
    assert len(got) == 2, stack.hook.dump()
    bodies = {check_push_body(r)["token"]: r.json for r in got}
    assert set(bodies) == set(tokens), stack.hook.dump()
    for session, tok in zip(b.sessions, tokens):
        assert bodies[tok]["device_id"] == session["device_id"], bodies[tok]
        assert (bodies[tok]["count"], bodies[tok]["seq"], bodies[tok]["user_id"]) == \
            (2, last["seq"], b.id), bodies[tok]
    assert len({r.push_id for r in got}) == 2, "two devices got the same push id"
    assert len(stack.hook.requests()) == 2, f"unexpected pushes:\n{stack.hook.dump()}"


def test_online_recipient_gets_no_push(push_stack):
    """In a group of A, B and C, B has a long-poll waiting (and keeps polling) while A sends
    3 messages: C (offline) gets a push, B gets none."""
    stack = push_stack()
    c = stack.client
    a = new_account(c, prefix="pa")
    b, (b_tok,) = push_account(c, prefix="pb")
    cc, (c_tok,) = push_account(c, prefix="pc")
    group = make_group(c, a.token, "online test", [b.id, cc.id])
    poller = Poller(c, b.token, timeout=10)
    try:
        time.sleep(0.5)                       # the poll reaches the server and waits
        last = send_burst(c, a.token, group["id"], 3)
        stack.hook.wait_count(1, tokens=c_tok)
        time.sleep(QUIET)
        assert poller.polls >= 1, "B's poll was not answered by the new messages"
    finally:
        poller.stop(c)
    assert stack.hook.for_tokens(b_tok) == [], \
        f"B was polling but got a push:\n{stack.hook.dump()}"
    pushes_c = stack.hook.for_tokens(c_tok)
    assert pushes_c and pushes_c[-1].json["seq"] == last["seq"], stack.hook.dump()


def test_muted_chat_gets_no_push(push_stack):
    """B mutes a group (PUT /v1/chats/{id}/mute) and is offline: A's 3 messages push to C,
    not to B. After B unmutes (DELETE) the next message pushes to B again."""
    stack = push_stack()
    c = stack.client
    a = new_account(c, prefix="pa")
    b, (b_tok,) = push_account(c, prefix="pb")
    cc, (c_tok,) = push_account(c, prefix="pc")
    group = make_group(c, a.token, "mute test", [b.id, cc.id])
    r = c.put(chat_path(group["id"], "mute"), token=b.token)
    assert_status(r, 200)
    assert r.json()["muted"] is True, describe(r)
    send_burst(c, a.token, group["id"], 3)
    stack.hook.wait_count(1, tokens=c_tok)
    time.sleep(QUIET)
    assert stack.hook.for_tokens(b_tok) == [], \
        f"B muted the chat but got a push:\n{stack.hook.dump()}"

    r = c.delete(chat_path(group["id"], "mute"), token=b.token)
    assert_status(r, 200)
    assert r.json()["muted"] is False, describe(r)
    last = send(c, a.token, group["id"], "after unmute")
    push = stack.hook.wait_count(1, tokens=b_tok)[0]
    body = check_push_body(push)
    assert (body["count"], body["seq"]) == (1, last["seq"]), push.summary()
    time.sleep(QUIET)
    assert len(stack.hook.for_tokens(b_tok)) == 1, stack.hook.dump()


# --------------------------------------------------------------------------- signatures

def test_signature_helper_rejects_tampering():
    """The receiver's signature check itself (no server): a correct header verifies; a
    changed body, another secret, a malformed header or an old timestamp do not."""
    raw = b'{"id":"p1","count":1}'
    t = int(time.time())
    good = {"x-natter-signature": f"t={t},v1={expected_signature('s3cret', t, raw)}"}
    assert verify_signature(good, raw, "s3cret") is None
    assert verify_signature(good, raw + b" ", "s3cret") is not None
    assert verify_signature(good, raw, "other") is not None
    assert verify_signature({"x-natter-signature": "v1=abc"}, raw, "s3cret") is not None
    old = t - 3600
    stale = {"x-natter-signature": f"t={old},v1={expected_signature('s3cret', old, raw)}"}
    assert verify_signature(stale, raw, "s3cret") is not None
    assert parse_signature(good["x-natter-signature"]) == (t, good["x-natter-signature"]
                                                           .split("v1=")[1])


# --------------------------------------------------------------------------- token API

def test_put_push_token(client):
    """PUT /v1/devices/{id}/push on an own device answers 200 with the Device carrying
    push_provider; GET /v1/devices shows it, the token is stored; a second PUT replaces it
    (provider `log` too)."""
    acct = new_account(client, devices=2)
    mine, other = acct.sessions
    tok = new_push_token()
    dev = set_push_token(client, mine["access_token"], mine["device_id"], tok)
    assert dev["current"] is True and "token" not in dev, dev
    listed = devices_listed(client, mine["access_token"])
    assert listed[mine["device_id"]]["push_provider"] == "webhook"
    assert listed[other["device_id"]]["push_provider"] is None
    assert push_token_db(mine["device_id"]) == tok

    # another own device, from this one; then the log provider
    tok2 = new_push_token()
    dev = set_push_token(client, mine["access_token"], other["device_id"], tok2,
                         provider="log")
    assert dev["current"] is False
    assert push_token_db(other["device_id"]) == tok2
    tok3 = new_push_token()
    set_push_token(client, mine["access_token"], mine["device_id"], tok3)
    assert push_token_db(mine["device_id"]) == tok3


@pytest.mark.parametrize("body, field", [
    ({"provider": "gcm", "token": "tok-1"}, "provider"),
    ({"provider": "", "token": "tok-1"}, "provider"),
    ({"provider": 1, "token": "tok-1"}, "provider"),
    ({"token": "tok-1"}, "provider"),
    ({"provider": "webhook", "token": ""}, "token"),
    ({"provider": "webhook"}, "token"),
    ({"provider": "webhook", "token": 42}, "token"),
    ({"provider": "webhook", "token": "a\nb"}, "token"),
    ({"provider": "webhook", "token": "x" * 4097}, "token"),
    ({"provider": "webhook", "token": "tok-1", "extra": 1}, "extra"),
])
def test_put_push_token_validation(client, body, field):
    """A bad provider, an empty / missing / non-string / control-character / 4,097-char
    token and an unknown field get 422 validation_failed naming the field; nothing is
    stored."""
    acct = new_account(client)
    r = client.put(device_push_path(acct.device_id), json=body, token=acct.token)
    assert_problem(r, 422, "validation_failed", field)
    assert push_token_db(acct.device_id) == ""


def test_push_token_longest_allowed(client):
    """A 4,096-character token is accepted and stored whole."""
    acct = new_account(client)
    tok = "t" * 4096
    set_push_token(client, acct.token, acct.device_id, tok)
    assert push_token_db(acct.device_id) == tok


def test_push_token_other_users_device(client):
    """PUT and DELETE on another user's device, a revoked own device, or a device that does
    not exist get 404 device_not_found and change nothing."""
    me = new_account(client, devices=2)
    other = new_account(client)
    body = {"provider": "webhook", "token": new_push_token()}
    r = client.put(device_push_path(other.device_id), json=body, token=me.token)
    assert_problem(r, 404, "device_not_found")
    assert_problem(client.delete(device_push_path(other.device_id), token=me.token), 404,
                   "device_not_found")
    assert push_token_db(other.device_id) == ""

    gone = me.sessions[1]["device_id"]
    assert_status(client.delete(f"/v1/devices/{gone}", token=me.token), 204)
    r = client.put(device_push_path(gone), json=body, token=me.token)
    assert_problem(r, 404, "device_not_found")
    assert push_token_db(gone) == ""

    missing = int(psql("SELECT coalesce(max(id), 0) + 1000000 FROM devices"))
    assert_problem(client.put(device_push_path(missing), json=body, token=me.token), 404,
                   "device_not_found")


def test_delete_push_token(client):
    """DELETE /v1/devices/{id}/push answers 204 with no body, clears the token
    (push_provider null, devices.push_token NULL), and answers 204 again when there is
    none."""
    acct = new_account(client)
    set_push_token(client, acct.token, acct.device_id, new_push_token())
    for _ in range(2):
        r = client.delete(device_push_path(acct.device_id), token=acct.token)
        assert_status(r, 204)
        assert r.content == b""
        assert devices_listed(client, acct.token)[acct.device_id]["push_provider"] is None
        assert push_token_db(acct.device_id) == ""


def test_push_token_needs_auth(client):
    """Both push-token routes need a token (401 unauthorized)."""
    acct = new_account(client)
    path = device_push_path(acct.device_id)
    assert_problem(client.put(path, json={"provider": "webhook", "token": "t"}), 401,
                   "unauthorized")
    assert_problem(client.delete(path), 401, "unauthorized")


# --------------------------------------------------------------------------- mute API

def test_mute_and_unmute(client):
    """PUT /v1/chats/{id}/mute answers 200 with the Chat, muted true (idempotent: again
    200 true), GET shows it, the other member is not muted; DELETE answers 200 with muted
    false (idempotent too)."""
    a = new_account(client)
    b = new_account(client)
    chat = make_direct(client, a.token, b.id)
    path = chat_path(chat["id"], "mute")
    for _ in range(2):
        r = client.put(path, token=a.token)
        assert_status(r, 200)
        got = r.json()
        assert got["id"] == chat["id"] and got["muted"] is True, describe(r)
    assert get_chat(client, a.token, chat["id"])["muted"] is True
    assert get_chat(client, b.token, chat["id"])["muted"] is False
    for _ in range(2):
        r = client.delete(path, token=a.token)
        assert_status(r, 200)
        assert r.json()["id"] == chat["id"] and r.json()["muted"] is False, describe(r)
    assert get_chat(client, a.token, chat["id"])["muted"] is False


def test_mute_non_member(client):
    """Muting or unmuting a chat the caller is not a member of, or one that does not exist,
    gets 404 chat_not_found and changes nothing."""
    a = new_account(client)
    b = new_account(client)
    outsider = new_account(client)
    group = make_group(client, a.token, "private", [b.id])
    for cid in (group["id"], missing_chat_id()):
        path = chat_path(cid, "mute")
        assert_problem(client.put(path, token=outsider.token), 404, "chat_not_found")
        assert_problem(client.delete(path, token=outsider.token), 404, "chat_not_found")
    assert get_chat(client, a.token, group["id"])["muted"] is False
    assert get_chat(client, b.token, group["id"])["muted"] is False
    assert_problem(client.put(chat_path(group["id"], "mute")), 401, "unauthorized")


# --------------------------------------------------------------------------- metrics

def test_job_metrics(push_stack):
    """After a push went out, natter-api's /metrics (read from Redis) lists every job
    metric of the contract (queue depth, pending, delayed, dead, done/retried/dead/pushes
    counters, latency histogram) with natter_pushes_sent_total > 0 and jobs done > 0."""
    stack = push_stack()
    c = stack.client
    a = new_account(c, prefix="pa")
    b, (b_tok,) = push_account(c, prefix="pb")
    chat = make_direct(c, a.token, b.id)
    send(c, a.token, chat["id"], "metrics")
    stack.hook.wait_count(1, tokens=b_tok, delivered=True)

    def scrape():
        samples = metric_samples(stack.metrics())
        return samples if (metric_total(samples, "natter_pushes_sent_total") or 0) > 0 \
            else None
    deadline = time.monotonic() + 10
    samples = scrape()
    while samples is None and time.monotonic() < deadline:
        time.sleep(0.2)
        samples = scrape()
    text = stack.metrics()
    samples = metric_samples(text)
    missing = [m for m in JOB_METRICS if metric_total(samples, m) is None]
    assert not missing, f"/metrics lacks {missing}:\n{text[-3000:]}"
    assert metric_total(samples, "natter_pushes_sent_total") > 0, text[-3000:]
    assert metric_total(samples, "natter_jobs_done_total") > 0, text[-3000:]
    assert metric_total(samples, "natter_job_latency_seconds_count") > 0, text[-3000:]
    assert metric_total(samples, "natter_jobs_dead") == 0, text[-3000:]
