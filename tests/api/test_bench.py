"""`make bench`'s multi-process idle scenario (bench/run.sh, `multi`), run small: several
natter-api processes on one port and several load processes on several 127.0.0.x source
addresses hold every poll at the same time, every poll answers its probe, the figures per
process and of PostgreSQL and Redis are printed, and nothing the bench started outlives
it — neither at its end nor when it is stopped half-way.

The bench builds and runs build/natter-api whichever build the suite tests, so these run
only in the normal build's pass (the sanitizer pass would repeat them on the same binary)."""
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from natterlib import REPO_ROOT, child_env, live_pids_where, new_state_dir, tail, wait_for

pytestmark = pytest.mark.skipif(Path(os.environ.get("NATTER_BIN_DIR", "build")).name != "build",
                                reason="bench/run.sh runs build/natter-api: tested in the normal build's pass")

POLLS, PROCESSES, PER_LOADER = 300, 2, 100   # 3 load processes, on 127.0.0.10-12
BENCH_TIMEOUT = 400   # set-up (initdb, migrations, 75 users) + 20 s hold + a 30 s poll timeout, busy machine


def session_members(sid: int) -> list[int]:
    """Live pids of session sid (by session, not process group: `timeout`, which
    runs.sh's natterload runs under, puts itself in a process group of its own)."""
    return live_pids_where("session", sid)


def kill_session(sid: int):
    """The test's own cleanup: SIGTERM to bench/run.sh (its exit trap stops PostgreSQL
    and Redis too), then SIGKILL to whatever of its session is left."""
    try:
        os.kill(sid, signal.SIGTERM)
    except OSError:
        pass
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sid in session_members(sid):
        time.sleep(0.5)
    for pid in session_members(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def start_bench(log: Path) -> subprocess.Popen:
    out = new_state_dir("bench-out")
    env = child_env({"BENCH_SCENARIOS": "multi", "BENCH_MULTI_POLLS": POLLS,
                     "BENCH_MULTI_PROCESSES": PROCESSES, "BENCH_MULTI_PER_LOADER": PER_LOADER,
                     "BENCH_OUT": out})
    # a session of its own: everything it starts stays in it (but Redis, which
    # daemonizes with a session of its own), so what survives it can be found
    return subprocess.Popen(["bash", str(REPO_ROOT / "bench" / "run.sh")], env=env, cwd=REPO_ROOT,
                            stdin=subprocess.DEVNULL, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float, log: Path) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(proc.pid)
        proc.wait()
        pytest.fail(f"bench/run.sh did not finish within {timeout} s:\n{tail(log.read_text())}",
                    pytrace=False)
    return log.read_text(encoding="utf-8", errors="replace")


def assert_nothing_left(sid: int):
    left = []

    def gone():
        left[:] = session_members(sid)
        return not left
    try:
        wait_for(gone, 30, "the bench's processes to end", 0.5)
    finally:
        if left:
            kill_session(sid)


def test_bench_multi_holds_every_poll_across_processes():
    """BENCH_SCENARIOS=multi, scaled down (300 polls, 2 natter-api processes, 3 load
    processes): every poll is held at once and answered when probed, each natter-api
    process holds some of the connections (SO_REUSEPORT spread them) with its RSS per
    connection, PostgreSQL and Redis memory are printed, and no process is left."""
    log = new_state_dir("bench-multi") / "bench.out"
    proc = start_bench(log)
    out = finish(proc, BENCH_TIMEOUT, log)
    assert proc.returncode == 0, tail(out)
    assert f"held {POLLS}  by {PROCESSES} natter-api processes on one port, from 3 load processes" in out, tail(out)
    assert f"multi_probe      {POLLS} of {POLLS} held polls answered when probed" in out, tail(out)
    assert "FAILED" not in out and "natterload: only" not in out, tail(out)
    per_process = [int(c) for c in re.findall(r"^multi_process +\d+: holds (\d+) connections", out, re.M)]
    assert len(per_process) == PROCESSES, tail(out)
    assert all(c > 0 for c in per_process), per_process
    assert sum(per_process) >= POLLS, per_process   # the polls, plus a few of their own
    assert re.search(r"^multi_deps +PostgreSQL Pss [\d.]+ -> [\d.]+ MB; Redis used_memory", out, re.M), tail(out)
    assert_nothing_left(proc.pid)


def test_bench_multi_stopped_halfway_leaves_nothing():
    """SIGTERM to bench/run.sh while the multi scenario's polls are held (as Ctrl-C or a
    timeout would): the extra natter-api processes, the load processes, natter-api,
    PostgreSQL and Redis all end with it."""
    log = new_state_dir("bench-multi-stop") / "bench.out"
    proc = start_bench(log)
    try:
        wait_for(lambda: proc.poll() is not None or "multi: all polls open" in log.read_text(),
                 BENCH_TIMEOUT, "the multi scenario's polls to be open", 0.5)
        assert proc.poll() is None, tail(log.read_text())
        time.sleep(2)   # the load processes are holding
        names = [comm(p) for p in session_members(proc.pid)]
        assert names.count("natter-api") == PROCESSES and names.count("natterload") == 3, names
        proc.send_signal(signal.SIGTERM)
        finish(proc, 120, log)
    finally:
        if proc.poll() is None:
            kill_session(proc.pid)
            proc.wait()
    assert_nothing_left(proc.pid)
