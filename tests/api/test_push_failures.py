"""Push failures (docs/CONTRACT.md, issue 5, job flow 5 and 7): retries with backoff on
5xx/429/timeouts (same X-Natter-Push-Id every time), dead letters after
NATTER_JOB_MAX_ATTEMPTS (3 here) in the stream natter:jobs:dead, token removal on 404/410,
other 4xx dead-lettered at once, and garbage stream entries dead-lettered while the worker
carries on.

Every test runs its own natter-api + natter-worker on a private Redis (pushlib's
`push_stack`: retry base 100 ms, 3 attempts, visibility 1.5 s, push timeout 3 s) against a
webhook receiver whose answers the test scripts."""
import datetime
import json
import time

import pytest

from chatlib import make_direct, send
from natterlib import new_account, wait_for
from pushlib import (DEAD_STREAM, JOBS_STREAM, MAX_ATTEMPTS, QUIET, Reply,
                     always, check_push_body, devices_listed, first_stalls,
                     metric_samples, metric_total, per_push, push_account,
                     push_stack, push_token_db)  # noqa: F401

DEAD_WAIT = 10      # seconds until a failed job shows up in natter:jobs:dead


def one_message(stack, prefix="pf"):
    """A sends one message to B (B: one device with a push token, offline):
    (A, B, B's push token, the Message)."""
    c = stack.client
    a = new_account(c, prefix=prefix + "a")
    b, (b_tok,) = push_account(c, prefix=prefix + "b")
    chat = make_direct(c, a.token, b.id)
    return a, b, b_tok, send(c, a.token, chat["id"], "hello")


def assert_push_job(raw: str, b):
    """A dead-lettered job is the JSON of a push job (push_flush, or a per-device job the
    flush spawned) of this user / device."""
    job = json.loads(raw)
    assert isinstance(job, dict) and str(job.get("type", "")).startswith("push_") \
        and job["type"] != "push_message", f"not a push job: {raw}"
    assert job.get("user_id", b.id) == b.id and job.get("device_id", b.device_id) == \
        b.device_id, f"the dead job is not B's push: {raw}"


def wait_dead(stack, pred, what, timeout=DEAD_WAIT):
    """The dead letters once pred(list of (id, fields)) holds."""
    return wait_for(lambda: pred(stack.dead_letters()) and stack.dead_letters(), timeout,
                    f"{what} in {DEAD_STREAM}")


@pytest.mark.parametrize("status", [500, 503, 429])
def test_retried_until_delivered(push_stack, status):
    """The receiver answers `status` twice, then 200: the push is delivered on the third
    try — 3 requests with the same X-Natter-Push-Id and body id, each signed, only the last
    answered 2xx — and nothing follows it; no dead letter."""
    stack = push_stack(script=per_push([status, status, 200]))
    _, b, b_tok, msg = one_message(stack)
    stack.hook.wait_count(1, tokens=b_tok, delivered=True)
    time.sleep(QUIET)
    got = stack.hook.for_tokens(b_tok)
    assert [r.status for r in got] == [status, status, 200], stack.hook.dump()
    assert len({r.push_id for r in got}) == 1, f"retries changed the push id:\n" \
        + stack.hook.dump()
    for r in got:
        body = check_push_body(r)
        assert (body["user_id"], body["count"], body["seq"]) == (b.id, 1, msg["seq"]), \
            r.summary()
    assert stack.dead_letters() == []


def test_timeout_is_retried(push_stack):
    """With NATTER_PUSH_TIMEOUT_MS=1000 (and a visibility timeout of 10 s, so that no other
    thread reclaims the job meanwhile) the receiver holds the first request without
    answering: the worker gives up on it within the push timeout and retries; the second
    request, with the same push id, is delivered; nothing follows."""
    stack = push_stack(script=first_stalls(6), NATTER_PUSH_TIMEOUT_MS="1000",
                       NATTER_JOB_VISIBILITY_MS="10000")
    _, _, b_tok, _ = one_message(stack)
    stack.hook.wait_count(1, tokens=b_tok, delivered=True)
    stack.hook.wait_settled()
    time.sleep(QUIET)
    got = stack.hook.for_tokens(b_tok)
    dump = stack.hook.dump()
    assert len(got) == 2, f"expected the timed-out request and one retry:\n{dump}"
    first, second = got
    assert first.outcome == "client gone", f"the stalled request was answered:\n{dump}"
    assert first.answered - first.arrived < 1.0 + 1.5, \
        f"the worker held the request past NATTER_PUSH_TIMEOUT_MS:\n{dump}"
    assert second.delivered and second.push_id == first.push_id, dump
    assert stack.dead_letters() == []


def test_always_failing_push_is_dead_lettered(push_stack):
    """The receiver always answers 500: after NATTER_JOB_MAX_ATTEMPTS (3) requests, all
    with the same push id, the push job is in natter:jobs:dead with `job` (the
    original JSON), `error` (naming the 500) and `attempts` 3; no further request comes,
    the token stays, and /metrics counts the retries and the dead job."""
    stack = push_stack(script=always(500))
    _, b, b_tok, _ = one_message(stack)
    stack.hook.wait_count(MAX_ATTEMPTS, tokens=b_tok)
    dead = wait_dead(stack, lambda d: len(d) >= 1, "a dead letter")
    time.sleep(QUIET)
    got = stack.hook.for_tokens(b_tok)
    assert len(got) == MAX_ATTEMPTS and all(r.status == 500 for r in got), stack.hook.dump()
    assert len({r.push_id for r in got}) == 1, stack.hook.dump()

    dead = stack.dead_letters()
    assert len(dead) == 1, dead
    _, fields = dead[0]
    assert {"job", "error", "attempts"} <= set(fields), fields
    assert_push_job(fields["job"], b)
    assert "500" in fields["error"], f"the error does not name the 500: {fields}"
    assert int(fields["attempts"]) == MAX_ATTEMPTS, fields
    assert push_token_db(b.device_id) == b_tok, "a 5xx must not remove the push token"

    samples = metric_samples(stack.metrics())
    assert metric_total(samples, "natter_jobs_dead_total") >= 1, samples
    assert metric_total(samples, "natter_jobs_dead") >= 1, samples
    assert metric_total(samples, "natter_jobs_retried_total") >= MAX_ATTEMPTS - 1, samples


def test_stale_push_is_dropped(push_stack):
    """With NATTER_PUSH_TTL=3 and a receiver that always answers 500 (8 attempts allowed,
    retry base 600 ms), the retries stop once the message is older than 3 s: no request
    starts later than the TTL (+ 0.5 s slack) after the message was created, fewer than 8
    requests come, none after that, and the push is counted expired. (On a box slow enough
    that the push is older than the TTL by its first turn — Citus under load: a send alone
    can take ~1 s — it is dropped before any request; that is the same rule.)"""
    ttl = 3
    stack = push_stack(script=always(500), NATTER_PUSH_TTL=str(ttl), NATTER_JOB_MAX_ATTEMPTS="8",
                       NATTER_JOB_RETRY_BASE_MS="600")
    _, _, b_tok, msg = one_message(stack)
    created = datetime.datetime.fromisoformat(msg["created_at"].replace("Z", "+00:00"))

    def expired() -> float:
        return metric_samples(stack.metrics()).get(
            'natter_pushes_total{provider="webhook",outcome="expired"}', 0)

    wait_for(lambda: expired() >= 1, ttl + 20, "the push to be dropped as older than the TTL")
    time.sleep(QUIET)
    got = stack.hook.for_tokens(b_tok)
    assert len(got) < 8, stack.hook.dump()
    late = [r for r in got if r.arrived_wall - created.timestamp() > ttl + 0.5]
    assert not late, f"pushes sent after NATTER_PUSH_TTL:\n{stack.hook.dump(late)}"
    assert all(r.status == 500 for r in got), stack.hook.dump()
    assert len({r.push_id for r in got}) <= 1, stack.hook.dump()
    assert expired() == 1, "one push, dropped once"


@pytest.mark.parametrize("status", [404, 410])
def test_gone_token_is_removed(push_stack, status):
    """The receiver answers `status` (the token is unknown/gone): exactly one request, no
    retry; B's push token is removed (GET /v1/devices push_provider null,
    devices.push_token NULL); a later message sends nothing."""
    stack = push_stack(script=always(status))
    a, b, b_tok, msg = one_message(stack)
    stack.hook.wait_count(1, tokens=b_tok)
    wait_for(lambda: push_token_db(b.device_id) == "", 10,
             "B's push token to be removed from the database")
    assert devices_listed(stack.client, b.token)[b.device_id]["push_provider"] is None
    time.sleep(QUIET)
    assert len(stack.hook.for_tokens(b_tok)) == 1, f"retried:\n{stack.hook.dump()}"

    send(stack.client, a.token, msg["chat_id"], "after the token is gone")
    time.sleep(QUIET)
    assert len(stack.hook.requests()) == 1, f"pushed without a token:\n{stack.hook.dump()}"


def test_other_4xx_is_dead_lettered_at_once(push_stack):
    """The receiver answers 400: one request only, the job goes to natter:jobs:dead at
    once with an error naming the 400, and the token stays."""
    stack = push_stack(script=always(400))
    _, b, b_tok, _ = one_message(stack)
    stack.hook.wait_count(1, tokens=b_tok)
    dead = wait_dead(stack, lambda d: len(d) >= 1, "a dead letter")
    time.sleep(QUIET)
    assert len(stack.hook.for_tokens(b_tok)) == 1, f"a 400 was retried:\n{stack.hook.dump()}"
    (_, fields), = stack.dead_letters()
    assert "400" in fields.get("error", ""), dead
    assert_push_job(fields["job"], b)
    assert push_token_db(b.device_id) == b_tok


GARBAGE = [
    # (stream entry fields, words of which the error must name one)
    (["job", "not json"], ("json", "parse")),
    (["job", '{"type":"nope"}'], ("nope", "type")),
    (["job", '{"type":"push_message"}'], ("chat_id", "seq", "missing")),
    (["job", '{"type":"push_message","chat_id":"x","seq":1}'], ("chat_id", "integer",
                                                                   "number", "invalid")),
    (["job", "[1,2]"], ("object", "type", "json")),
    (["other", "field"], ("job", "missing", "field")),
]


def test_garbage_jobs_are_dead_lettered(push_stack):
    """Garbage entries XADDed to natter:jobs (not JSON, unknown type, missing or wrong
    fields, a JSON array, no `job` field) each go to natter:jobs:dead with an error naming
    the problem and the original payload in `job`; the worker keeps running and a real
    push still arrives afterwards."""
    stack = push_stack()
    w = stack.workers[0]
    stack.wait_group()
    for fields, _ in GARBAGE:
        stack.rcall("XADD", JOBS_STREAM, "*", *fields)
    wait_dead(stack, lambda d: len(d) >= len(GARBAGE), f"{len(GARBAGE)} dead letters")
    dead = [f for _, f in stack.dead_letters()]
    assert len(dead) == len(GARBAGE), dead
    for fields, words in GARBAGE:
        if fields[0] != "job":
            continue
        match = [d for d in dead if d.get("job") == fields[1]]
        assert len(match) == 1, f"no single dead letter with job={fields[1]!r}: {dead}"
        err = match[0].get("error", "").lower()
        assert err and any(word in err for word in words), \
            f"job {fields[1]!r}: error {err!r} names none of {words}"
    for d in dead:
        assert d.get("error"), f"dead letter without an error: {d}"
    assert w.running(), f"the worker died on garbage:\n{w.log_tail()}"

    _, _, b_tok, _ = one_message(stack)
    push = stack.hook.wait_count(1, tokens=b_tok, delivered=True)[0]
    check_push_body(push)
    assert w.running()


def test_reply_helper():
    """The receiver's script helpers (no server): per_push counts requests per push id."""
    from pushlib import PushRequest
    script = per_push([500, 200])

    class Hook:
        recs = []

        def requests(self):
            return self.recs
    hook = Hook()
    out = []
    for i, pid in enumerate(["a", "a", "b", "a"]):
        req = PushRequest(i, 0.0, 0.0, "POST", "/push", {"x-natter-push-id": pid}, b"",
                          ("127.0.0.1", 1))
        out.append(script(req, hook).status)
        hook.recs.append(req)
    assert out == [500, 200, 500, 200]
    assert Reply(200).stall == 0
