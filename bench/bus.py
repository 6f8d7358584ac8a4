#!/usr/bin/python3
"""Bus messages per natter-api instance per 1:1 message (issue 12, item 2).

Starts N natter-api instances (for each N of --instances) on the PostgreSQL and
Redis of NATTER_DATABASE_URL / NATTER_REDIS_URL (bench/bus.sh starts private
ones), gives every user a home instance (round robin) where it polls, and has
PAIRS pairs of users exchange MESSAGES 1:1 messages each way: the sender sends
through its home instance, the recipient's poll there is woken and acks (which
sends the sender a delivered receipt). Then it reads every instance's
natter_bus_messages_total{direction="received"} (/metrics) and prints the
received bus messages per instance per message. The figure counts messages, not
time, so machine load does not change it. Every step is bounded.
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import requests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = os.path.join(REPO, "build", "natter-api")
PASSWORD = "bench-password-1"
RECEIVED = 'natter_bus_messages_total{direction="received"}'
PUBLISHED = 'natter_bus_messages_total{direction="published"}'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(base, name):
    text = requests.get(base + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise SystemExit(f"{base}: no {name} in /metrics")


def start(n, state):
    procs = []
    for i in range(n):
        port = free_port()
        env = dict(os.environ, NATTER_PORT=str(port), NATTER_LISTEN_ADDR="127.0.0.1",
                   NATTER_STATE_DIR=os.path.join(state, f"api{i}"), NATTER_PWHASH_COST="min",
                   NATTER_RATE_REGISTER_IP_BURST="0", NATTER_RATE_REGISTER_ALL_BURST="0",
                   NATTER_RATE_SEND_BURST="0", NATTER_RATE_CHAT_BURST="0",
                   NATTER_LOGIN_MAX_PER_IP="1000000", NATTER_LOGIN_MAX_PER_USER="1000000",
                   NATTER_HTTP_THREADS="2", NATTER_DB_POOL_SIZE="4", NATTER_LOG_LEVEL="warn",
                   NATTER_PUBLIC_URL=f"http://127.0.0.1:{port}")
        log = open(os.path.join(state, f"api{i}.log"), "ab")
        p = subprocess.Popen([API], env=env, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        procs.append((p, f"http://127.0.0.1:{port}"))
    for p, base in procs:
        for _ in range(200):
            try:
                if requests.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if p.poll() is not None:
                raise SystemExit(f"natter-api exited with {p.returncode} (log in {state})")
            time.sleep(0.05)
        for _ in range(200):
            if metric(base, "natter_bus_subscribed") == 1:
                break
            time.sleep(0.05)
    return procs


def stop(procs):
    for p, _ in procs:
        p.send_signal(signal.SIGTERM)
    for p, _ in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def user(base):
    name = "bus" + uuid.uuid4().hex[:12]
    s = requests.Session()
    r = s.post(base + "/v1/auth/register", json={"username": name, "password": PASSWORD}, timeout=30)
    r.raise_for_status()
    r = s.post(base + "/v1/auth/login", json={"username": name, "password": PASSWORD}, timeout=30)
    r.raise_for_status()
    tok = r.json()["access_token"]
    s.headers["Authorization"] = "Bearer " + tok
    uid = r.json()["user"]["id"]
    head = s.get(base + "/v1/events", timeout=30).json()["next"]  # known (routed) at home
    return {"s": s, "base": base, "id": uid, "next": head}


def poll_until(u, want, timeout=20):
    """Polls at home until `want` more stored message events came (bounded)."""
    got, deadline = 0, time.monotonic() + timeout
    while got < want and time.monotonic() < deadline:
        r = u["s"].get(u["base"] + "/v1/events",
                       params={"since": u["next"], "timeout": 5}, timeout=15)
        r.raise_for_status()
        body = r.json()
        got += sum(1 for e in body["events"] if e["type"] == "message")
        u["next"] = body["next"]
    if got < want:
        raise SystemExit(f"user {u['id']}: {got} of {want} messages within {timeout} s")
    # one more poll acks the last batch (delivered receipts)
    u["s"].get(u["base"] + "/v1/events", params={"since": u["next"], "timeout": 0}, timeout=15)


def run(n, pairs, messages, state):
    procs = start(n, state)
    try:
        bases = [b for _, b in procs]
        users = [user(bases[i % n]) for i in range(2 * pairs)]
        time.sleep(1.0)                                      # routes confirmed
        chats = []
        for i in range(pairs):
            a, b = users[2 * i], users[2 * i + 1]
            r = a["s"].post(a["base"] + "/v1/chats", json={"kind": "direct", "user_id": b["id"]},
                            timeout=30)
            r.raise_for_status()
            chats.append((a, b, r.json()["id"]))
        time.sleep(1.0)
        before = [metric(b, RECEIVED) for b in bases]
        pub0 = sum(metric(b, PUBLISHED) for b in bases)
        sent = 0
        for a, b, cid in chats:
            for sender, recipient in ((a, b), (b, a)):
                th = threading.Thread(target=poll_until, args=(recipient, messages))
                th.start()
                for k in range(messages):
                    r = sender["s"].post(sender["base"] + f"/v1/chats/{cid}/messages",
                                         json={"client_msg_id": str(uuid.uuid4()),
                                               "text": f"bus bench {k}"}, timeout=30)
                    r.raise_for_status()
                    sent += 1
                th.join(60)
        time.sleep(2.0)                                      # receipts and late publishes
        recv = [metric(b, RECEIVED) - x for b, x in zip(bases, before)]
        pub = sum(metric(b, PUBLISHED) for b in bases) - pub0
        return sent, recv, pub
    finally:
        stop(procs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", default="1 3 6")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--messages", type=int, default=10, help="per pair and direction")
    args = ap.parse_args()
    for var in ("NATTER_DATABASE_URL", "NATTER_REDIS_URL"):
        if not os.environ.get(var):
            raise SystemExit(f"{var} is not set (bench/bus.sh sets it)")
    with tempfile.TemporaryDirectory(prefix="natter-bus-") as state:
        for n in map(int, args.instances.split()):
            sent, recv, pub = run(n, args.pairs, args.messages, state)
            per = [r / sent for r in recv]
            print(f"bus: {n} instance(s), {sent} 1:1 messages: received per instance per message "
                  f"mean {sum(per) / n:.2f} max {max(per):.2f} "
                  f"(all instances together {sum(recv) / sent:.2f}; published {pub / sent:.2f})",
                  flush=True)


if __name__ == "__main__":
    sys.exit(main())
