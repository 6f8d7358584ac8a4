"""natter-worker: thread start-up, the Redis liveness key, clean stop, bad configuration."""
import json
import socket

import pytest

from natterlib import (common_env, new_state_dir, parse_json_log, redis_cli, run_binary,
                       tail, wait_for, worker_ready_threads)


def test_worker_starts_and_stops(worker):
    """With NATTER_WORKER_THREADS=3 three threads log "worker thread ready", the key
    natter:workers:<pid>@<host> exists as a JSON object with a TTL <= 30 s, and SIGTERM
    stops it with exit 0 within 10 s, deleting the key and logging "worker stopped"."""
    w = worker(threads=3)
    objs, bad = parse_json_log(w.log_text())
    assert not bad, f"non-JSON log lines: {bad[:5]}"
    for obj in objs:
        assert {"ts", "level", "msg"} <= obj.keys(), obj
    ready = [o for o in objs
             if "worker thread" in str(o.get("msg")) and "ready" in str(o.get("msg"))]
    assert len(ready) == 3 and len(worker_ready_threads(objs)) == 3, ready

    key = f"natter:workers:{w.pid}@{socket.gethostname()}"
    wait_for(lambda: redis_cli("EXISTS", key) == "1", 5, f"Redis key {key}")
    ttl = int(redis_cli("TTL", key))
    assert 0 < ttl <= 30, ttl
    value = json.loads(redis_cli("GET", key))
    assert isinstance(value, dict)

    w.stop(timeout=10)
    w.assert_clean_exit()
    assert redis_cli("EXISTS", key) == "0", f"{key} left behind"
    assert any(o.get("msg") == "worker stopped" for o in w.log_json()), w.log_tail()


@pytest.mark.parametrize("value", ["0", "abc", "-2"])
def test_worker_bad_thread_count(migrated, value):
    """A bad NATTER_WORKER_THREADS makes natter-worker exit non-zero naming it."""
    env = common_env(new_state_dir("worker-bad"), NATTER_WORKER_THREADS=value)
    proc = run_binary("natter-worker", [], env, timeout=10)
    assert proc.returncode != 0, tail(proc.output)
    assert "NATTER_WORKER_THREADS" in proc.output, tail(proc.output)
