"""Three natter-api instances behind HAProxy with the repository's configuration
(deploy/haproxy.cfg: round robin per request, no stickiness, health checks on /readyz,
long-poll timeouts), as an operator runs them (issue 12, item 6): a message crosses
instances, a device's polls move between instances, kill -9 of one instance and a rolling
restart under light traffic lose nothing and repeat nothing for clients that resume from
their cursors. Clients talk to HAProxy with plain requests (its own 502/503 pages are not
natter's API); every wait is bounded."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import uuid

import pytest
import requests

from chatlib import make_direct, new_users
from natterlib import (REPO_ROOT, Client, Launcher, free_port, new_state_dir, served_by,
                       wait_for)
from natterlib.processes import _LIVE

CONFIG = REPO_ROOT / "deploy" / "haproxy.cfg"
CROSS = 2.0            # seconds: a wake-up between instances
RETRY_STATUSES = (502, 503, 504)


class Cluster:
    """Three natter-api on fixed ports and one haproxy (its own process, by pid)."""

    def __init__(self, spec):
        exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not os.path.exists(exe):
            pytest.fail("haproxy not found (`make test` installs Debian's haproxy)",
                        pytrace=False)
        self.spec = spec
        self.launcher = Launcher()
        self.ports = [free_port() for _ in range(3)]
        self.instances = [self.launcher.api(port=p, label=f"instance {i + 1} behind haproxy")
                          for i, p in enumerate(self.ports)]
        self.lb_port = free_port()
        self.dir = new_state_dir("haproxy")
        env = dict(os.environ, NATTER_LB_BIND=f"127.0.0.1:{self.lb_port}", NATTER_LB_MAXCONN="4000",
                   **{f"NATTER_API_{i + 1}": f"127.0.0.1:{p}" for i, p in enumerate(self.ports)})
        self.log = open(self.dir / "haproxy.log", "ab")
        self.proc = subprocess.Popen([exe, "-db", "-f", str(CONFIG)], env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        _LIVE.add(self.proc)
        self.wait_all_up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    def wait_all_up(self):
        """Until a round of requests through haproxy reached all three instances."""
        def all_answer():
            if self.proc.poll() is not None:
                pytest.fail(f"haproxy exited with {self.proc.returncode}: "
                            f"{(self.dir / 'haproxy.log').read_text()[-2000:]}", pytrace=False)
            ids = []
            for _ in range(6):
                try:
                    r = requests.get(self.url + "/healthz", timeout=5)
                except requests.RequestException:
                    return False
                if r.status_code != 200:
                    return False
                ids.append(r.headers["X-Request-Id"])
            return len({served_by(self.instances, rid) for rid in ids}) == 3
        wait_for(all_answer, 30, "haproxy to send requests to all three instances", 0.3)

    def kill(self, i: int):
        """kill -9 instance i (it will not exit cleanly: not checked at teardown)."""
        srv = self.instances[i]
        srv.stop(signal.SIGKILL)
        self.launcher.procs.remove(srv)

    def start(self, i: int):
        self.instances[i] = self.launcher.api(port=self.ports[i],
                                              label=f"instance {i + 1} behind haproxy (again)")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        _LIVE.discard(self.proc)
        self.log.close()
        self.launcher.close()


@pytest.fixture(scope="module")
def cluster(migrated, spec):
    c = Cluster(spec)
    yield c
    c.close()


def session(tok: str) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {tok}"
    return s


def setup_pair(cluster):
    c = Client(cluster.instances[0].base_url, cluster.spec)
    try:
        (a, ta), (b, tb) = new_users(c, 2, prefix="h")
        cid = make_direct(c, ta, b["id"])["id"]
    finally:
        c.close()
    return a, ta, b, tb, cid


def lb_send(cluster, s: requests.Session, cid, text: str, within: float = 30) -> dict:
    """POST a message through haproxy, retrying 502/503/504 and connection errors with the
    same client_msg_id (idempotent) until answered 201/200 (bounded)."""
    body = {"client_msg_id": str(uuid.uuid4()), "text": text}
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        try:
            r = s.post(f"{cluster.url}/v1/chats/{cid}/messages", json=body, timeout=15)
        except requests.RequestException as exc:
            last = exc
            time.sleep(0.2)
            continue
        if r.status_code in (200, 201):
            return r.json()
        assert r.status_code in RETRY_STATUSES, (r.status_code, r.text)
        last = r.status_code
        time.sleep(0.2)
    pytest.fail(f"send of {text!r} not accepted within {within} s (last: {last})",
                pytrace=False)


def lb_head(cluster, s: requests.Session) -> int:
    r = s.get(f"{cluster.url}/v1/events", timeout=15)
    assert r.status_code == 200, r.text
    return r.json()["next"]


class Receiver(threading.Thread):
    """A device polling through haproxy in a loop from its cursor, resuming after any
    error with the same cursor; records every message event (chat seq, text)."""

    def __init__(self, cluster, tok: str, since: int, timeout: int = 5):
        super().__init__(daemon=True)
        self.cluster, self.s, self.cursor, self.timeout = cluster, session(tok), since, timeout
        self.messages: list[tuple[int, str]] = []
        self.request_ids: list[str] = []
        self.errors = 0
        self.stop = threading.Event()
        self.deadline = time.monotonic() + 240
        self.start()

    def run(self):
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            try:
                r = self.s.get(f"{self.cluster.url}/v1/events",
                               params={"since": self.cursor, "timeout": self.timeout},
                               timeout=self.timeout + 20)
            except requests.RequestException:
                self.errors += 1
                time.sleep(0.2)
                continue
            if r.status_code != 200:
                self.errors += 1
                time.sleep(0.2)
                continue
            self.request_ids.append(r.headers.get("X-Request-Id", ""))
            body = r.json()
            for e in body["events"]:
                if e["type"] == "message":
                    m = e["data"]["message"]
                    self.messages.append((m["seq"], m["text"]))
            self.cursor = body["next"]

    def texts(self) -> list[str]:
        return [t for _, t in self.messages]

    def wait_for_texts(self, texts: list[str], within: float = 30):
        wait_for(lambda: set(texts) <= set(self.texts()), within,
                 f"the receiver to get all {len(texts)} messages")

    def finish(self):
        self.stop.set()
        self.join(self.timeout + 25)


def check_exactly_once(rx: Receiver, sent: list[dict]):
    """Every sent message arrived once, in seq order, nothing else."""
    got = rx.messages
    assert [t for _, t in got] == [m["text"] for m in sorted(sent, key=lambda m: m["seq"])], \
        f"received {got}, sent {[(m['seq'], m['text']) for m in sent]}"
    seqs = [s for s, _ in got]
    assert seqs == sorted(set(seqs)), f"a repeat or disorder: {seqs}"


def test_message_crosses_instances_behind_haproxy(cluster):
    """B's poll and A's send go through haproxy (round robin, no stickiness); each of
    six messages answers B's waiting poll within 2 s, and at least once the poll and the
    send were served by different instances."""
    a, ta, b, tb, cid = setup_pair(cluster)
    sa, sb = session(ta), session(tb)
    since = lb_head(cluster, sb)
    crossed = 0
    for i in range(6):
        result = {}

        def poll(since=since):
            result["r"] = sb.get(f"{cluster.url}/v1/events",
                                 params={"since": since, "timeout": 20}, timeout=40)
        t = threading.Thread(target=poll, daemon=True)
        t.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        r = sa.post(f"{cluster.url}/v1/chats/{cid}/messages",
                    json={"client_msg_id": str(uuid.uuid4()), "text": f"via haproxy #{i}"},
                    timeout=15)
        assert r.status_code == 201, r.text
        t.join(30)
        took = time.monotonic() - t0
        pr = result["r"]
        assert pr.status_code == 200, pr.text
        body = pr.json()
        assert [e["data"]["message"]["text"] for e in body["events"]
                if e["type"] == "message"] == [f"via haproxy #{i}"], body
        assert took < CROSS + 0.5, f"#{i}: answered {took:.2f} s after the send"
        since = body["next"]
        if served_by(cluster.instances, pr.headers["X-Request-Id"]) != \
                served_by(cluster.instances, r.headers["X-Request-Id"]):
            crossed += 1
    assert crossed >= 1, "haproxy never put the poll and the send on different instances"


def test_device_poll_moves_between_instances(cluster):
    """One device polls in a loop through haproxy while 12 messages are sent: its polls
    land on at least two instances, and it receives every message once, in order."""
    a, ta, b, tb, cid = setup_pair(cluster)
    sa, sb = session(ta), session(tb)
    rx = Receiver(cluster, tb, lb_head(cluster, sb), timeout=2)
    sent = []
    try:
        for i in range(12):
            sent.append(lb_send(cluster, sa, cid, f"moving #{i}"))
            time.sleep(0.3)
        rx.wait_for_texts([m["text"] for m in sent])
    finally:
        rx.finish()
    check_exactly_once(rx, sent)
    where = {served_by(cluster.instances, rid) for rid in rx.request_ids[:20] if rid}
    assert len(where) >= 2, f"every poll went to one instance: {where}"


def traffic(cluster, tok: str, cid, prefix: str, count: int, gap: float, sent: list,
            done: threading.Event):
    s = session(tok)
    try:
        for i in range(count):
            sent.append(lb_send(cluster, s, cid, f"{prefix} #{i}"))
            time.sleep(gap)
    finally:
        done.set()


def test_kill_9_of_one_instance_loses_nothing(cluster):
    """Two devices poll through haproxy and a sender sends 30 messages (retrying with the
    same client_msg_id on 502/503 or a reset) while one instance is killed with SIGKILL:
    both devices, resuming from their cursors, receive every message exactly once, in
    order. The killed instance is started again afterwards."""
    a, ta, b, tb, cid = setup_pair(cluster)
    sb = session(tb)
    h = lb_head(cluster, sb)
    rxs = [Receiver(cluster, tb, h), Receiver(cluster, ta, lb_head(cluster, session(ta)))]
    sent: list = []
    done = threading.Event()
    th = threading.Thread(target=traffic, args=(cluster, ta, cid, "kill", 30, 0.15, sent, done),
                          daemon=True)
    th.start()
    try:
        wait_for(lambda: len(sent) >= 8 or done.is_set(), 60, "the first messages")
        cluster.kill(1)
        assert done.wait(120), "the traffic did not finish"
        th.join(10)
        assert len(sent) == 30
        for rx in rxs:
            rx.wait_for_texts([m["text"] for m in sent], within=45)
    finally:
        for rx in rxs:
            rx.finish()
        cluster.start(1)
        cluster.wait_all_up()
    for rx in rxs:
        check_exactly_once(rx, sent)


def test_rolling_restart_under_traffic(cluster):
    """While a sender sends 40 messages through haproxy and two devices poll through it,
    each instance in turn is stopped with SIGTERM (exit 0: waiting polls drained with
    Connection: close) and started again on its port: every message is accepted and both
    devices receive each exactly once, in order."""
    a, ta, b, tb, cid = setup_pair(cluster)
    rxs = [Receiver(cluster, tb, lb_head(cluster, session(tb))),
           Receiver(cluster, ta, lb_head(cluster, session(ta)))]
    sent: list = []
    done = threading.Event()
    th = threading.Thread(target=traffic,
                          args=(cluster, ta, cid, "rolling", 40, 0.2, sent, done), daemon=True)
    th.start()
    try:
        for i in range(3):
            srv = cluster.instances[i]
            srv.stop(signal.SIGTERM)
            srv.assert_clean_exit()
            cluster.launcher.procs.remove(srv)
            cluster.start(i)
            time.sleep(1.5)                       # haproxy's next health check sees it up
        assert done.wait(120), "the traffic did not finish"
        th.join(10)
        assert len(sent) == 40
        for rx in rxs:
            rx.wait_for_texts([m["text"] for m in sent], within=45)
    finally:
        for rx in rxs:
            rx.finish()
    for rx in rxs:
        check_exactly_once(rx, sent)
