"""Nothing lost when a part dies (DESIGN.md invariant 7; docs/CONTRACT.md issue 5, job flow
2, 4 and 6): a natter-worker killed while it holds a push job — the job is redone by
another worker after the visibility timeout and no push is delivered twice; Redis down
while messages are sent — the sends succeed and, once Redis is back, the reconciler
re-enqueues the outbox rows and every message is pushed exactly once.

Each test runs its own natter-api + natter-worker processes on a private Redis (pushlib's
`push_stack`, visibility 1.5 s) against a webhook receiver started for the test. Delivered
means answered 2xx by the receiver to a client still connected."""
import time
from collections import Counter, defaultdict

from chatlib import make_direct, send
from natterlib import HTTP_TIMEOUT, new_account
from pushlib import (QUIET, VISIBILITY_MS, check_push_body, delivered, first_stalls,
                     push_account, push_stack, socket_owner_pid)  # noqa: F401

STALL = 20          # seconds the receiver holds the first request
RECOVERY_WAIT = 25  # seconds: redo after visibility / reconcile after the 10 s outbox delay


def assert_no_duplicates(recs, dump):
    """Each push id answered 2xx at most once."""
    ids = Counter(r.push_id for r in delivered(recs))
    dups = {k: n for k, n in ids.items() if n > 1}
    assert not dups, f"push ids delivered more than once {dups}:\n{dump}"


def test_killed_worker_job_is_redone_once(push_stack):
    """Two workers; B has two devices with push tokens; the receiver stalls the first push
    request 20 s. The worker holding that request is SIGKILLed: the other worker redoes the
    job after the visibility timeout (1.5 s), reusing its push id, and that push is
    delivered once per device (the killed worker's unanswered request does not count). No
    push id is delivered twice, and each device's delivered pushes count the four messages
    exactly once, the newest last: one push when the sends fall into one coalescing window,
    more when a slow database (Citus on a loaded box: a send can take ~1 s) spreads them
    over several. The surviving worker then stops on SIGTERM with exit 0."""
    stack = push_stack(script=first_stalls(STALL), workers=2)
    c = stack.client
    a = new_account(c, prefix="ka")
    b, tokens = push_account(c, devices=2, prefix="kb")
    chat = make_direct(c, a.token, b.id)
    send(c, a.token, chat["id"], "kill me")
    for i in range(2):
        send(c, a.token, chat["id"], f"and me {i}")
    last = send(c, a.token, chat["id"], "the last")

    stalled = stack.hook.wait_count(1, tokens=tokens)[0]
    owner = socket_owner_pid(stalled.peer[1], stack.hook.port, [w.pid for w in stack.workers])
    assert owner is not None, \
        f"no worker process holds the stalled connection from port {stalled.peer[1]}"
    victim = next(w for w in stack.workers if w.pid == owner)
    survivor = next(w for w in stack.workers if w.pid != owner)
    stack.kill_worker(victim)
    killed_at = time.monotonic()

    def counted(recs):
        """Messages counted per device by its delivered pushes."""
        n = Counter()
        for r in delivered(recs):
            if r.token in tokens:
                n[r.token] += r.json["count"]
        return n

    stack.hook.wait_until(
        lambda recs: (any(r.push_id == stalled.push_id for r in delivered(recs))
                      and all(counted(recs)[t] >= 4 for t in tokens)) or None,
        RECOVERY_WAIT, "the killed worker's push redone, and the 4 messages pushed to each "
        "of B's devices")
    stack.hook.wait_settled()
    time.sleep(QUIET)
    got = stack.hook.for_tokens(tokens)
    dump = stack.hook.dump()
    assert stalled.outcome == "client gone", f"the stalled request was answered:\n{dump}"
    assert_no_duplicates(got, dump)
    per_device = defaultdict(list)
    for r in delivered(got):
        per_device[r.token].append(check_push_body(r))
    for tok in tokens:
        bodies = per_device[tok]
        assert sum(b["count"] for b in bodies) == 4, \
            f"device {tok}: the 4 messages not counted exactly once:\n{dump}"
        assert max(b["seq"] for b in bodies) == last["seq"], f"device {tok}:\n{dump}"
    redos = [r for r in delivered(got) if r.push_id == stalled.push_id]
    assert len(redos) == 1, f"the killed worker's push (its id) not delivered once:\n{dump}"
    redo = redos[0]
    assert redo.arrived - stalled.arrived >= VISIBILITY_MS / 1000 * 0.6, \
        f"the job was redone before the visibility timeout could pass:\n{dump}"
    assert redo.arrived > killed_at, f"a push was redone before the kill:\n{dump}"

    assert survivor.running(), survivor.log_tail()
    survivor.stop(timeout=15)
    survivor.assert_clean_exit()


def test_pushes_survive_redis_outage(push_stack):
    """With Redis stopped, A's messages to B (2) and to C (1) are still accepted (201,
    each within the HTTP timeout); after Redis is started again (empty) the reconciler
    re-enqueues the outbox rows and, within 25 s, B's and C's devices get pushes that
    count exactly those messages (the newest seq last), with no push id delivered twice.
    natter-api and natter-worker ride out the outage and stop cleanly at the end."""
    stack = push_stack()
    c = stack.client
    a = new_account(c, prefix="ra")
    b, (b_tok,) = push_account(c, prefix="rb")
    cc, (c_tok,) = push_account(c, prefix="rc")
    chat_b = make_direct(c, a.token, b.id)
    chat_c = make_direct(c, a.token, cc.id)
    send(c, a.token, chat_b["id"], "before the outage")
    stack.hook.wait_count(1, tokens=b_tok, delivered=True)
    before = len(stack.hook.requests())

    stack.redis.stop()
    sent_b = []
    for text in ("during the outage 1", "during the outage 2"):
        t0 = time.monotonic()
        sent_b.append(send(c, a.token, chat_b["id"], text))
        assert time.monotonic() - t0 < HTTP_TIMEOUT
    sent_c = send(c, a.token, chat_c["id"], "during the outage 3")
    time.sleep(1)
    stack.redis.start()

    def counted(recs, tok):
        return sum(r.json["count"] for r in delivered(recs[before:]) if r.token == tok)
    stack.hook.wait_until(
        lambda recs: (counted(recs, b_tok) >= 2 and counted(recs, c_tok) >= 1) or None,
        RECOVERY_WAIT, "pushes counting the 3 messages sent while Redis was down")
    time.sleep(QUIET)
    recs = stack.hook.requests()
    dump = stack.hook.dump()
    assert_no_duplicates(recs, dump)
    assert counted(recs, b_tok) == 2 and counted(recs, c_tok) == 1, \
        f"every message must be counted exactly once:\n{dump}"
    new_b = [r for r in delivered(recs[before:]) if r.token == b_tok]
    new_c = [r for r in delivered(recs[before:]) if r.token == c_tok]
    for r in new_b + new_c:
        check_push_body(r)
    assert max(r.json["seq"] for r in new_b) == sent_b[-1]["seq"], dump
    assert new_c[-1].json["seq"] == sent_c["seq"], dump
    assert new_b[-1].json["badge"] == 3, f"B has 3 unread messages:\n{dump}"
    for w in stack.workers:
        assert w.running(), f"a worker died during the Redis outage:\n{w.log_tail()}"
