#!/usr/bin/python3
"""bench/citus_cost.py BASE_URL LABEL: the cost of each kind of operation on one natter-api,
one request at a time (bench/citus.sh runs it against a single PostgreSQL and against a
Citus cluster). Prints one line per operation: its shape on Citus (one shard or several,
from docs/ARCHITECTURE.md "Citus: cost of the operations"), then p50 and p90 latency in ms
over BENCH_CITUS_RUNS requests, and the CPU each request cost: natter-api's (the process
BENCH_CITUS_API_PID) and PostgreSQL's (every server whose postmaster is in
BENCH_CITUS_POSTMASTERS: the postmaster, its live children — backends, Citus's maintenance
daemon — and the children it reaped meanwhile), from /proc, in ms per request. One client,
loopback only, every loop bounded."""
import os
import statistics
import sys
import time
import uuid

import requests

BASE = sys.argv[1].rstrip("/")
LABEL = sys.argv[2]
RUNS = int(os.environ.get("BENCH_CITUS_RUNS", "200"))
GROUP = int(os.environ.get("BENCH_CITUS_GROUP", "20"))
PASSWORD = "bench-password-1"
S = requests.Session()


def call(method, path, token=None, expect=(200,), **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = S.request(method, BASE + path, headers=headers, timeout=30, **kw)
    if r.status_code not in expect:
        raise SystemExit(f"{LABEL}: {method} {path} -> {r.status_code} {r.text[:300]}")
    return r.json() if r.content else None


def user(prefix):
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    u = call("POST", "/v1/auth/register", json={"username": name, "password": PASSWORD}, expect=(201,))
    tok = call("POST", "/v1/auth/login", json={"username": name, "password": PASSWORD})
    return u, tok["access_token"], name


API_PID = int(os.environ.get("BENCH_CITUS_API_PID", "0"))
POSTMASTERS = {int(p) for p in os.environ.get("BENCH_CITUS_POSTMASTERS", "").split()}
TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")


def proc_stat(pid):
    """(ppid, utime + stime, cutime + cstime) in clock ticks, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14])


def cpu_ms():
    """(natter-api, PostgreSQL) CPU so far, ms."""
    api = proc_stat(API_PID) if API_PID else None
    db = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        st = proc_stat(pid)
        if st is None:
            continue
        if pid in POSTMASTERS:
            db += st[1] + st[2]
        elif st[0] in POSTMASTERS:
            db += st[1]
    return (api[1] if api else 0) * TICK_MS, db * TICK_MS


def timed(fn):
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000.0


def run(name, shape, fn, runs=RUNS):
    fn()  # warm: prepared statements, connections
    api0, db0 = cpu_ms()
    ms = sorted(timed(fn) for _ in range(runs))
    api1, db1 = cpu_ms()
    p50 = statistics.median(ms)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    print(f"{LABEL:7s} {name:24s} {shape:38s} p50 {p50:7.2f} ms  p90 {p90:7.2f} ms  ({runs} runs)"
          f"  CPU per request: natter-api {(api1 - api0) / runs:6.2f} ms, PostgreSQL {(db1 - db0) / runs:6.2f} ms",
          flush=True)


def main():
    a, ta, _ = user("ca")
    b, tb, _ = user("cb")
    others = [user("cg") for _ in range(GROUP - 1)]
    direct = call("POST", "/v1/chats", ta, expect=(201,), json={"kind": "direct", "user_id": b["id"]})["id"]
    group = call("POST", "/v1/chats", ta, expect=(201,),
                 json={"kind": "group", "title": "bench", "member_ids": [o[0]["id"] for o in others]})["id"]
    since = {"b": call("GET", "/v1/events", tb)["next"]}

    def send(chat, text="hello from the cost bench"):
        return call("POST", f"/v1/chats/{chat}/messages", ta, expect=(201,),
                    json={"client_msg_id": str(uuid.uuid4()), "text": text})

    run("register", "2 shards (users, usernames): 2PC",
        lambda: call("POST", "/v1/auth/register", expect=(201,),
                     json={"username": f"cr{uuid.uuid4().hex[:12]}", "password": PASSWORD}), runs=max(20, RUNS // 4))
    run("direct chat create", "4+ shards: 2PC",
        lambda: call("POST", "/v1/chats", ta, expect=(201,),
                     json={"kind": "direct", "user_id": call("POST", "/v1/auth/register", expect=(201,), json={
                         "username": f"cd{uuid.uuid4().hex[:12]}", "password": PASSWORD})["id"]}),
        runs=max(20, RUNS // 4))
    run("send 1:1", "chat shard + 2 user shards: 2PC", lambda: send(direct))
    run(f"send group of {GROUP}", f"chat shard + {GROUP} users' shards: 2PC", lambda: send(group))
    first = send(direct)["seq"]
    for _ in range(RUNS + 1):
        send(direct)
    upto = {"seq": first}

    def read_next():
        upto["seq"] += 1
        call("POST", f"/v1/chats/{direct}/read", tb, json={"seq": upto["seq"]})
    run("read marker (moves)", "chat shard + reader's, sender's shards: 2PC", read_next)

    def poll_one():
        send(direct)
        ev = call("GET", "/v1/events", tb, params={"since": since["b"], "timeout": 5})
        since["b"] = ev["next"]
    run("send + poll answered", "send, then one user shard read", poll_one)
    for _ in range(50):
        send(direct)
    run("history page of 50", "1 shard", lambda: call("GET", f"/v1/chats/{direct}/messages", ta, params={"limit": 50}))
    run("chat view", "1 shard + users (2nd query)", lambda: call("GET", f"/v1/chats/{direct}", ta))
    run("chat list", "all shards (members by user)", lambda: call("GET", "/v1/chats", ta))
    run("member list", "1 shard + users' shards", lambda: call("GET", f"/v1/chats/{group}/members", ta))
    run("search one chat", "1 shard", lambda: call("GET", "/v1/search", ta, params={"q": "cost", "chat_id": direct}))
    run("search all chats", "all shards", lambda: call("GET", "/v1/search", ta, params={"q": "cost"}))


if __name__ == "__main__":
    main()
