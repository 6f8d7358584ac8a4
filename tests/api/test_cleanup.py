"""Periodic tasks of natter-worker (docs/CONTRACT.md, issue 5, "Periodic tasks"): each task
runs under a Redis lock, so two worker processes never run the same task at once; and
`inbox_cleanup` deletes exactly the inbox rows every active device of their user acked plus
every row older than NATTER_INBOX_RETENTION — keeping the rows a slow device still needs,
and making a device whose unacked rows expired get 410 cursor_expired.

Each test runs its own natter-api and natter-worker processes on a private Redis (pushlib's
`push_stack`, NATTER_CLEANUP_INTERVAL=1). The inbox state is set up first (polls with
since=N ack N; rows are backdated with psql), then the workers start with
NATTER_INBOX_RETENTION=3600, and the rows of the test's users are compared exactly after a
cleanup run."""
import datetime
import time

import pytest

from chatlib import make_group, send
from natterlib import assert_problem, assert_status, new_account, psql, wait_for
from pushlib import head, periodic_runs, poll_once, push_stack  # noqa: F401

RETENTION = 3600              # seconds, NATTER_INBOX_RETENTION of these tests
BACKDATE = "2 hours"          # older than RETENTION
CLEANUP_WAIT = 15             # seconds until a cleanup run logged "periodic task done"
OVERLAP_RUN = 4.0             # seconds two workers run side by side
TASKS_EVERY_INTERVAL = ("inbox_cleanup", "outbox_reconcile")


# --------------------------------------------------------------------------- helpers

def log_time(value) -> float | None:
    """A log time (RFC 3339 string, or unix seconds/milliseconds) as unix seconds."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value / 1000 if value > 1e11 else float(value)
    if isinstance(value, str):
        try:
            return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def run_interval(obj: dict) -> tuple[float, float, str]:
    """(start, end, how) of one `periodic task done` log object: started_at/finished_at
    if logged, else started_at + duration_ms, else ts - duration_ms .. ts, else ts .. ts."""
    start, end = log_time(obj.get("started_at")), log_time(obj.get("finished_at"))
    dur = obj.get("duration_ms")
    dur = dur / 1000 if isinstance(dur, (int, float)) and not isinstance(dur, bool) else None
    ts = log_time(obj.get("ts"))
    if start is not None and end is not None:
        return start, end, "started_at/finished_at"
    if start is not None and dur is not None:
        return start, start + dur, "started_at + duration_ms"
    if ts is not None and dur is not None:
        return ts - dur, ts, "ts - duration_ms"
    assert ts is not None, f"periodic task log line without a usable time: {obj}"
    return ts, ts, "ts only"


def inbox_seqs(user_id) -> list[int]:
    out = psql("SELECT coalesce(string_agg(seq::text, ',' ORDER BY seq), '') FROM inbox "
               "WHERE user_id = $1", user_id)
    return [int(x) for x in out.split(",")] if out else []


def active_acks(user_id) -> list[int]:
    out = psql("SELECT coalesce(string_agg(acked_seq::text, ','), '') FROM devices "
               "WHERE user_id = $1 AND revoked_at IS NULL", user_id)
    return [int(x) for x in out.split(",")] if out else []


def backdate(user_id, seqs):
    """Make these inbox rows older than the retention."""
    psql(f"UPDATE inbox SET created_at = now() - interval '{BACKDATE}' "
         "WHERE user_id = $1 AND seq = ANY($2::bigint[])",
         user_id, "{" + ",".join(map(str, seqs)) + "}")


def expected_after_cleanup(user_id, backdated=()) -> list[int]:
    """The user's rows that must survive: seq above the smallest acked_seq of the active
    devices (every row when there is no active device), and not backdated."""
    acks = active_acks(user_id)
    floor = min(acks) if acks else 0
    return [s for s in inbox_seqs(user_id) if s > floor and s not in set(backdated)]


def ack(client, tok, since):
    """Poll with since (timeout 0): acks `since` for the device; the body."""
    r = poll_once(client, tok, since, 0)
    assert_status(r, 200)
    return r.json()


def cleanup_runs(stack) -> list[dict]:
    return periodic_runs(stack.worker_logs(), "inbox_cleanup")


def wait_cleanup(stack, runs: int = 1) -> list[dict]:
    """Wait until the workers logged `runs` inbox_cleanup runs; those log objects."""
    return wait_for(lambda: len(cleanup_runs(stack)) >= runs and cleanup_runs(stack),
                    CLEANUP_WAIT, f"{runs} inbox_cleanup run(s) in the worker logs")


def group_with_messages(client, n_members: int, messages: int = 4):
    """S creates a group with n_members new users and sends `messages` messages:
    (S, [members])."""
    s = new_account(client, prefix="cs")
    members = [new_account(client, prefix="cm") for _ in range(n_members)]
    group = make_group(client, s.token, "cleanup", [m.id for m in members])
    for i in range(messages):
        send(client, s.token, group["id"], f"cleanup {i}")
    return s, members


def start_cleanup_workers(stack, n: int = 1):
    return [stack.start_worker(NATTER_INBOX_RETENTION=str(RETENTION)) for _ in range(n)]


# --------------------------------------------------------------------------- tests

def test_periodic_tasks_never_overlap(push_stack):
    """Two worker processes started together run for 4 s with NATTER_CLEANUP_INTERVAL=1:
    every `periodic task done` log line names its task and an integer `deleted`;
    inbox_cleanup and outbox_reconcile ran; and no two runs of one task (across both
    processes) overlap in time (from started_at/finished_at or duration_ms if logged, else
    the log time)."""
    stack = push_stack(workers=0)
    ws = stack.start_workers_together(2, NATTER_INBOX_RETENTION=str(RETENTION))
    time.sleep(OVERLAP_RUN)
    for w in ws:
        w.stop()
        w.assert_clean_exit()

    runs = periodic_runs(stack.worker_logs())
    assert runs, "no `periodic task done` log line:\n" + "\n".join(w.log_tail() for w in ws)
    by_task: dict[str, list] = {}
    for obj in runs:
        assert isinstance(obj.get("task"), str) and obj["task"], obj
        by_task.setdefault(obj["task"], []).append(run_interval(obj) + (obj,))
    for task in TASKS_EVERY_INTERVAL:
        assert task in by_task, f"{task} never ran within {OVERLAP_RUN} s: {sorted(by_task)}"
    for task, intervals in by_task.items():
        intervals.sort(key=lambda x: (x[0], x[1]))
        for (s1, e1, how, o1), (s2, e2, _, o2) in zip(intervals, intervals[1:]):
            assert e1 >= s1 and e2 >= s2, f"run ends before it starts: {o1} {o2}"
            assert s2 >= e1, f"two runs of {task} overlap ({how}):\n  {o1}\n  {o2}"
    # the contract's log line: {"msg":"periodic task done","task":…,"deleted":N,…}
    bad = [o for o in runs if not isinstance(o.get("deleted"), int)
           or isinstance(o["deleted"], bool) or o["deleted"] < 0]
    assert not bad, f"{len(bad)} `periodic task done` lines without an integer `deleted`, " \
        f"e.g. {bad[0] if bad else None}"


def test_inbox_cleanup_removes_exactly_acked_and_expired_rows(push_stack):
    """A group of S and U1, U4 with 4 messages; U1's only device acks up to 4; U4 acks
    everything, then logs out (no active device left); S never acks. Rows backdated past
    the retention: U4's first and S's first. After a cleanup run exactly these rows are
    left: U1 the rows above 4, U4 all but the backdated one (no active device keeps them
    until retention), S all but the backdated one; the run logged `deleted` >= the rows
    removed."""
    stack = push_stack(workers=0)
    c = stack.client
    s, (u1, u4) = group_with_messages(c, 2)
    ack(c, u1.token, 4)
    h4 = head(c, u4.token)
    ack(c, u4.token, h4)
    assert_status(c.post("/v1/auth/logout", token=u4.token), 204)
    backdated = {s.id: [1], u4.id: [1], u1.id: []}
    for uid, seqs in backdated.items():
        if seqs:
            backdate(uid, seqs)
    before = {u.id: inbox_seqs(u.id) for u in (s, u1, u4)}
    expected = {uid: expected_after_cleanup(uid, backdated[uid]) for uid in before}
    assert active_acks(u1.id) == [4] and active_acks(u4.id) == [] and \
        active_acks(s.id) == [0], "the acks were not recorded as set up"
    assert expected[u1.id] == [x for x in before[u1.id] if x > 4] and \
        len(expected[u4.id]) == len(before[u4.id]) - 1, (before, expected)

    start_cleanup_workers(stack)
    runs = wait_cleanup(stack)
    after = {uid: inbox_seqs(uid) for uid in before}
    assert after == expected, f"rows left {after}, expected {expected} (before: {before})"
    removed = sum(len(before[u]) - len(expected[u]) for u in before)
    assert any(isinstance(r.get("deleted"), int) and r["deleted"] >= removed for r in runs), \
        f"no run logged deleted >= the {removed} rows removed: {runs}"


def test_slow_device_keeps_rows_it_needs(push_stack):
    """U2 has two devices: one acks everything, the other only up to 2. Cleanup keeps every
    row above 2; the slow device's poll since=2 then answers 200 with all later events
    (no 410). Once it acks the head, the next cleanup removes those rows too."""
    stack = push_stack(workers=0)
    c = stack.client
    _, (u2,) = group_with_messages(c, 1)
    fast = u2.sessions[0]
    slow = u2.login(c, device_name="slow")
    h = head(c, fast["access_token"])
    ack(c, fast["access_token"], h)
    ack(c, slow["access_token"], 2)
    before = inbox_seqs(u2.id)
    assert sorted(active_acks(u2.id)) == [2, h]

    start_cleanup_workers(stack)
    wait_cleanup(stack)
    assert inbox_seqs(u2.id) == [x for x in before if x > 2]
    body = ack(c, slow["access_token"], 2)
    got = [e["seq"] for e in body["events"] if e["seq"] is not None]
    assert got == list(range(3, h + 1)), f"the slow device lost events: {body}"
    ack(c, slow["access_token"], h)

    done = len(cleanup_runs(stack))
    wait_cleanup(stack, done + 2)
    assert [x for x in inbox_seqs(u2.id) if x <= h] == [], inbox_seqs(u2.id)


def test_expired_rows_give_cursor_expired(push_stack):
    """U3's only device never acked; its two oldest rows are backdated past the retention.
    Cleanup deletes exactly those two; the device's poll since=0 then gets 410
    cursor_expired with oldest_seq 3, and since=2 works (200 from seq 3)."""
    stack = push_stack(workers=0)
    c = stack.client
    _, (u3,) = group_with_messages(c, 1)
    before = inbox_seqs(u3.id)
    assert before[:3] == [1, 2, 3], before
    backdate(u3.id, [1, 2])

    start_cleanup_workers(stack)
    wait_cleanup(stack)
    assert inbox_seqs(u3.id) == before[2:]
    r = poll_once(c, u3.token, 0, 0)
    body = assert_problem(r, 410, "cursor_expired")
    assert body.get("oldest_seq") == 3, body
    body = ack(c, u3.token, 2)
    assert [e["seq"] for e in body["events"] if e["seq"] is not None][:1] == [3], body


@pytest.mark.parametrize("value", ["2", "0x10"])
def test_log_time_helper(value):
    """The log-time parser of this module (no server): RFC 3339 strings, unix seconds and
    milliseconds give the same instant; garbage gives None."""
    assert log_time("2026-11-21T09:10:31.500Z") == pytest.approx(
        log_time(1795252231.5)) == pytest.approx(log_time(1795252231500))
    assert log_time(value) is None
