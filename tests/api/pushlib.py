"""Helpers of the worker-pool API tests (docs/CONTRACT.md, issue 5: push notifications,
retries, dead letters, crash recovery, periodic cleanup).

Nothing here talks to a server, a database or Redis at import time, so `pytest
--collect-only` works without an environment. Test modules import the fixtures from here:
`from pushlib import push_stack  # noqa: F401` (pytest finds fixtures imported into a
test module).

- Webhook: a push receiver on 127.0.0.1 (http.server.ThreadingHTTPServer in a thread) that
  records every request (headers, raw body, arrival time, how it was answered) and answers
  according to a script: always(200), per_push([500, 500, 200]), first_stalls(20), or any
  callable(PushRequest) -> status | Reply. wait_until / wait_count block (bounded) until
  the recorded requests satisfy a condition.
- verify_signature / assert_signed: `X-Natter-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret,
  "<t>." + raw body)>` checked with the stdlib hmac module.
- RedisServer: a private redis-server on its own unix socket that can be stopped and started
  again on the same socket; redis_call: a tiny RESP client (no redis-cli output parsing).
- PushStack / the `push_stack` fixture factory: a natter-api and natter-worker processes
  on a private Redis, configured for fast tests (coalescing 1 s, retry base 100 ms, 3
  attempts, visibility 1.5 s, cleanup every second, push timeout 3 s) and pointed at a
  fresh Webhook.
- Poller: a device long-polling in a loop in a thread (the device is "online").
"""
from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import secrets
import select
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatlib import clone
from natterlib import (RestartableRedis, metric_samples, RFC3339_UTC_RE, START_TIMEOUT, Client, Launcher, assert_status,
                       describe, load_spec, new_account, psql, wait_for,
                       worker_ready_threads)

WEBHOOK_SECRET = "natter-push-tests-webhook-secret-0123456789"
COALESCE_MS = 1000  # wide enough that a burst of sequential sends lands in one window on a loaded machine
RETRY_BASE_MS = 100
MAX_ATTEMPTS = 3
VISIBILITY_MS = 1500
PUSH_TIMEOUT_MS = 3000
CLEANUP_INTERVAL = 1

# Seconds to wait before asserting that no push came: the coalescing window plus a margin.
QUIET = 2.7
# Bound of "a push arrives" waits: the jobs run within a second or so, but ASan is slower,
# and on Citus with the box loaded one send or worker statement can take ~1 s (one push of
# `make test-citus` beside `make test` took longer than 15 s). A bound, not a delay.
PUSH_WAIT = 30.0

FAST_WORKER_ENV = {
    "NATTER_PUSH_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "NATTER_PUSH_COALESCE_MS": str(COALESCE_MS),
    "NATTER_JOB_RETRY_BASE_MS": str(RETRY_BASE_MS),
    "NATTER_JOB_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "NATTER_JOB_VISIBILITY_MS": str(VISIBILITY_MS),
    "NATTER_CLEANUP_INTERVAL": str(CLEANUP_INTERVAL),
    "NATTER_PUSH_TIMEOUT_MS": str(PUSH_TIMEOUT_MS),
}

PUSH_BODY_KEYS = {"id", "kind", "user_id", "device_id", "token", "platform", "count", "chat_id",
                  "seq", "badge", "sent_at"}

JOB_METRICS = ("natter_jobs_queue_depth", "natter_jobs_pending", "natter_jobs_delayed",
               "natter_jobs_dead", "natter_jobs_done_total", "natter_jobs_retried_total",
               "natter_jobs_dead_total", "natter_pushes_sent_total",
               "natter_job_latency_seconds_bucket", "natter_job_latency_seconds_sum",
               "natter_job_latency_seconds_count")

JOBS_STREAM = "natter:jobs"
DEAD_STREAM = "natter:jobs:dead"


def new_push_token() -> str:
    return "tok-" + secrets.token_hex(8)


# --------------------------------------------------------------------------- webhook

@dataclass
class Reply:
    """How the receiver answers one request: `status` after `stall` seconds. During a
    stall the receiver watches the connection: a client that goes away gets no answer
    (the request is recorded as outcome "client gone")."""
    status: int = 200
    stall: float = 0.0
    body: bytes = b'{"ok":true}'


@dataclass
class PushRequest:
    """One request the receiver got."""
    index: int                      # 0, 1, 2 … in arrival order
    arrived: float                  # time.monotonic()
    arrived_wall: float             # time.time()
    method: str
    path: str
    headers: dict                   # lower-case name -> value
    raw: bytes
    peer: tuple                     # (host, port) of the client
    json: object = None             # parsed body, None if not JSON
    status: int | None = None       # the status answered, None while/if not answered
    outcome: str = "pending"        # pending | answered | client gone | aborted
    answered: float | None = None   # time.monotonic() of the answer

    @property
    def push_id(self) -> str | None:
        return self.headers.get("x-natter-push-id")

    @property
    def token(self):
        return self.json.get("token") if isinstance(self.json, dict) else None

    @property
    def device_id(self):
        return self.json.get("device_id") if isinstance(self.json, dict) else None

    @property
    def delivered(self) -> bool:
        """Answered with a 2xx status (the answer was written to a connected client)."""
        return self.outcome == "answered" and self.status is not None \
            and 200 <= self.status < 300

    def summary(self) -> str:
        body = self.raw[:300].decode("utf-8", "replace")
        return (f"#{self.index} +{self.arrived:.3f} id={self.push_id} -> {self.status} "
                f"({self.outcome}) {body}")


def always(status: int = 200):
    """Script: every request gets `status`."""
    return lambda req, hook: Reply(status)


def per_push(statuses):
    """Script: the n-th request carrying the same X-Natter-Push-Id gets statuses[n] (the
    last status repeats), e.g. per_push([500, 500, 200]) = "500 twice then 200"."""
    statuses = list(statuses)

    def script(req, hook):
        n = sum(1 for r in hook.requests() if r.push_id == req.push_id
                and r.index < req.index)
        return Reply(statuses[min(n, len(statuses) - 1)])
    return script


def first_stalls(seconds: float, then: int = 200, after: int = 200):
    """Script: the very first request stalls `seconds` before answering `then` (if its
    client is still there); every later one gets `after` at once."""
    def script(req, hook):
        return Reply(then, stall=seconds) if req.index == 0 else Reply(after)
    return script


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _make_handler(hook: "Webhook"):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"        # one request per connection

        def log_message(self, fmt, *args):   # keep pytest's output clean
            pass

        def _handle(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length > 0 else b""
            req = hook._record(self.command, self.path,
                               {k.lower(): v for k, v in self.headers.items()}, raw,
                               self.client_address)
            try:
                reply = hook._decide(req)
            except Exception as exc:          # noqa: BLE001 - a broken script answers 599
                hook.script_errors.append(repr(exc))
                reply = Reply(599)
            if reply.stall > 0 and not hook._stall(self.connection, reply.stall):
                hook._finish(req, None, "client gone" if not hook.closing.is_set()
                             else "aborted")
                return
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
                self.wfile.flush()
            except OSError:
                hook._finish(req, None, "client gone")
                return
            hook._finish(req, reply.status, "answered")

        do_POST = _handle
        do_PUT = _handle
        do_GET = _handle

    return Handler


class Webhook:
    """The push receiver (see the module docstring). `script(req, hook)` returns an int
    status or a Reply; it can be replaced at any time (`hook.script = always(500)`)."""

    def __init__(self, secret: str = WEBHOOK_SECRET, script=None):
        self.secret = secret
        self.script = script or always(200)
        self.closing = threading.Event()
        self.script_errors: list[str] = []
        self._records: list[PushRequest] = []
        self._cond = threading.Condition()
        self._server = _Server(("127.0.0.1", 0), _make_handler(self))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/push"

    # -- server side
    def _record(self, method, path, headers, raw, peer) -> PushRequest:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self._cond:
            req = PushRequest(len(self._records), time.monotonic(), time.time(), method, path,
                              headers, raw, tuple(peer), body)
            self._records.append(req)
            self._cond.notify_all()
        return req

    def _decide(self, req: PushRequest) -> Reply:
        reply = self.script(req, self)
        return Reply(reply) if isinstance(reply, int) else reply

    def _stall(self, conn: socket.socket, seconds: float) -> bool:
        """Wait `seconds`; False as soon as the client closed its end or the hook closes."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.closing.is_set():
                return False
            try:
                readable, _, _ = select.select([conn], [], [], 0.05)
                if readable and conn.recv(1, socket.MSG_PEEK) == b"":
                    return False
            except OSError:
                return False
        return True

    def _finish(self, req: PushRequest, status, outcome):
        with self._cond:
            req.status, req.outcome, req.answered = status, outcome, time.monotonic()
            self._cond.notify_all()

    # -- test side
    def requests(self, pred=None) -> list[PushRequest]:
        with self._cond:
            recs = list(self._records)
        return [r for r in recs if pred is None or pred(r)]

    def for_tokens(self, tokens) -> list[PushRequest]:
        tokens = {tokens} if isinstance(tokens, str) else set(tokens)
        return self.requests(lambda r: r.token in tokens)

    def wait_until(self, cond, timeout: float, what: str):
        """Block until cond(list of all requests) is truthy (returns it); fails after
        `timeout` seconds listing what arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = cond(list(self._records))
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
        pytest.fail(f"webhook: timed out after {timeout} s waiting for {what}; received:\n"
                    + self.dump(), pytrace=False)

    def wait_count(self, n: int, timeout: float = PUSH_WAIT, tokens=None,
                   delivered: bool = False) -> list[PushRequest]:
        """Wait until at least n requests (for these tokens; only 2xx-answered ones if
        `delivered`) arrived; returns them."""
        tokens = None if tokens is None else ({tokens} if isinstance(tokens, str)
                                              else set(tokens))

        def cond(recs):
            got = [r for r in recs if (tokens is None or r.token in tokens)
                   and (not delivered or r.delivered)]
            return got if len(got) >= n else None
        what = f"{n} {'delivered ' if delivered else ''}push request(s)" + \
            (f" for tokens {sorted(tokens)}" if tokens else "")
        return self.wait_until(cond, timeout, what)

    def wait_settled(self, timeout: float = PUSH_WAIT):
        """Wait until no request is still being answered (stalls included)."""
        self.wait_until(lambda recs: all(r.outcome != "pending" for r in recs) or None,
                        timeout, "every request to be answered")

    def dump(self, recs=None) -> str:
        recs = self.requests() if recs is None else recs
        return "\n".join(r.summary() for r in recs) or "(nothing)"

    def release(self):
        """Ends every stall at once (stalled requests get no answer)."""
        self.closing.set()

    def close(self):
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def distinct_push_ids(recs) -> set:
    return {r.push_id for r in recs}


def delivered(recs) -> list[PushRequest]:
    return [r for r in recs if r.delivered]


# --------------------------------------------------------------------------- signatures

def parse_signature(header: str | None) -> tuple[int, str] | None:
    """(t, v1) of an X-Natter-Signature header, None if malformed."""
    if not header:
        return None
    parts = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            return None
        parts[key] = value
    if set(parts) < {"t", "v1"} or not parts["t"].isdigit():
        return None
    return int(parts["t"]), parts["v1"]


def expected_signature(secret: str, t: int, raw: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()


def verify_signature(headers: dict, raw: bytes, secret: str = WEBHOOK_SECRET,
                     max_skew: float = 300) -> str | None:
    """None when X-Natter-Signature is valid for this raw body and secret and its t is
    within max_skew seconds of now; else the reason."""
    header = headers.get("x-natter-signature")
    parsed = parse_signature(header)
    if parsed is None:
        return f"malformed or missing X-Natter-Signature: {header!r}"
    t, v1 = parsed
    if abs(time.time() - t) > max_skew:
        return f"signature time t={t} is {time.time() - t:.0f} s away from now"
    want = expected_signature(secret, t, raw)
    if not hmac.compare_digest(want, v1.lower()):
        return f"v1={v1} is not HMAC-SHA256(secret, t + '.' + body) = {want}"
    return None


def assert_signed(req: PushRequest, secret: str = WEBHOOK_SECRET):
    reason = verify_signature(req.headers, req.raw, secret)
    assert reason is None, f"bad signature: {reason}\n{req.summary()}"


def check_push_body(req: PushRequest) -> dict:
    """Assert the request is a webhook push of the contract (POST, JSON, the body keys and
    types, id = X-Natter-Push-Id, signed); returns the body."""
    assert req.method == "POST", req.summary()
    assert req.headers.get("content-type", "").split(";")[0].strip() == "application/json", \
        f"Content-Type {req.headers.get('content-type')!r}: {req.summary()}"
    assert req.push_id, f"no X-Natter-Push-Id: {req.summary()}"
    body = req.json
    assert isinstance(body, dict), f"body is not a JSON object: {req.summary()}"
    assert set(body) == PUSH_BODY_KEYS, \
        f"push body keys {sorted(body)} != {sorted(PUSH_BODY_KEYS)}: {req.summary()}"
    assert str(body["id"]) == req.push_id, \
        f"body id {body['id']!r} != X-Natter-Push-Id {req.push_id!r}"
    for key in ("user_id", "device_id", "count", "chat_id", "seq", "badge"):
        assert isinstance(body[key], int) and not isinstance(body[key], bool), \
            f"{key} is not an integer: {req.summary()}"
    assert isinstance(body["token"], str) and isinstance(body["platform"], str), req.summary()
    assert body["kind"] in ("messages", "badge"), f"kind {body['kind']!r}: {req.summary()}"
    assert isinstance(body["sent_at"], str) and RFC3339_UTC_RE.match(body["sent_at"]), \
        f"sent_at is not RFC 3339 UTC: {req.summary()}"
    assert_signed(req)
    return body


# --------------------------------------------------------------------------- redis

class RedisError(Exception):
    pass


def _read_reply(f):
    line = f.readline()
    if not line:
        raise RedisError("connection closed")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:n]
        return data.decode("utf-8", "replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise RedisError(f"unexpected reply line {line!r}")


def redis_call(socket_path: str, *args, timeout: float = 5):
    """One Redis command over the unix socket (RESP2); the decoded reply. Errors raise
    RedisError."""
    payload = b"*%d\r\n" % len(args)
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        payload += b"$%d\r\n%s\r\n" % (len(b), b)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(socket_path)
        s.sendall(payload)
        with s.makefile("rb") as f:
            return _read_reply(f)


def stream_entries(socket_path: str, stream: str) -> list[tuple[str, dict]]:
    """XRANGE stream - + as [(id, {field: value})]."""
    out = []
    for entry_id, fields in redis_call(socket_path, "XRANGE", stream, "-", "+") or []:
        out.append((entry_id, dict(zip(fields[0::2], fields[1::2]))))
    return out


class RedisServer(RestartableRedis):
    """natterlib.RestartableRedis plus raw commands through this module's RESP client."""

    def __init__(self):
        super().__init__("redis-push")

    def call(self, *args):
        return redis_call(self.socket, *args)


# --------------------------------------------------------------------------- the stack

class PushStack:
    """A natter-api plus natter-worker processes on a private Redis, sending pushes to a
    Webhook. Every process is stopped with SIGTERM at teardown and must exit 0 (except
    workers killed on purpose with kill_worker)."""

    def __init__(self, script=None, workers: int = 1, threads: int = 2, api_env=None,
                 **worker_env):
        self.hook = Webhook(WEBHOOK_SECRET, script)
        self.redis = RedisServer()
        self.launcher = Launcher()
        self.worker_env = dict(FAST_WORKER_ENV)
        self.worker_env["NATTER_PUSH_WEBHOOK_URL"] = self.hook.url
        self.worker_env.update(worker_env)
        self.threads = threads
        self.workers = []
        self.client = None
        self.api = self.launcher.api(NATTER_REDIS_URL=self.redis.url,
                                     label="natter-api of the push stack",
                                     **(api_env or {}))
        self.client = Client(self.api.base_url, load_spec())
        for _ in range(workers):
            self.start_worker()

    # -- processes
    def start_worker(self, wait: bool = True, threads: int | None = None, **overrides):
        env = dict(self.worker_env)
        env.update(overrides)
        w = self.launcher.worker(threads=threads or self.threads, wait=wait,
                                 NATTER_REDIS_URL=self.redis.url, **env)
        self.workers.append(w)
        return w

    def start_workers_together(self, n: int, **overrides) -> list:
        """n workers started back to back, then waited for (so their timers run in
        phase)."""
        ws = [self.start_worker(wait=False, **overrides) for _ in range(n)]
        for w in ws:
            w.wait_log(lambda objs: len(worker_ready_threads(objs)) >= self.threads,
                       START_TIMEOUT, f"{self.threads} 'worker thread ready' log lines")
        return ws

    def kill_worker(self, w):
        """SIGKILL a worker (by its pid) and forget it: its exit is expected."""
        w.send_signal(signal.SIGKILL)
        w.stop(timeout=10)
        if w in self.launcher.procs:
            self.launcher.procs.remove(w)

    def close(self):
        self.hook.release()
        try:
            self.launcher.close()
        finally:
            if self.client is not None:
                self.client.close()
            self.hook.close()
            self.redis.stop()

    # -- redis
    def rcall(self, *args):
        return self.redis.call(*args)

    def dead_letters(self) -> list[tuple[str, dict]]:
        return stream_entries(self.redis.socket, DEAD_STREAM)

    def wait_group(self, timeout: float = 10):
        """Wait until the consumer group `workers` exists on natter:jobs."""
        def ready():
            try:
                groups = redis_call(self.redis.socket, "XINFO", "GROUPS", JOBS_STREAM)
            except RedisError:
                return False
            return any("workers" in g for g in groups or [])
        wait_for(ready, timeout, "the consumer group `workers` on natter:jobs")

    def worker_logs(self) -> list[dict]:
        return [o for w in self.workers for o in w.log_json()]

    def metrics(self) -> str:
        r = self.client.get("/metrics")
        assert_status(r, 200)
        return r.text


def make_stack_fixture():
    """A fixture factory: push_stack(script=..., workers=1, threads=2, api_env=None,
    **worker_env) -> PushStack; every stack is closed at teardown."""
    @pytest.fixture
    def push_stack(migrated):
        stacks: list[PushStack] = []

        def make(*args, **kw) -> PushStack:
            s = PushStack(*args, **kw)
            stacks.append(s)
            return s
        yield make
        errors = []
        for s in reversed(stacks):
            try:
                s.close()
            except BaseException as exc:      # noqa: BLE001 - report every stack
                errors.append(str(exc))
        if errors:
            pytest.fail("\n\n".join(errors), pytrace=False)
    return push_stack


push_stack = make_stack_fixture()


# --------------------------------------------------------------------------- API helpers

def device_push_path(device_id) -> str:
    return f"/v1/devices/{device_id}/push"


def set_push_token(client: Client, token: str, device_id, push_token: str,
                   provider: str = "webhook") -> dict:
    """PUT /v1/devices/{id}/push (asserting 200); the Device."""
    r = client.put(device_push_path(device_id), json={"provider": provider,
                                                       "token": push_token}, token=token)
    assert_status(r, 200)
    dev = r.json()
    assert dev["id"] == device_id and dev["push_provider"] == provider, describe(r)
    return dev


def push_account(client: Client, devices: int = 1, platform: str = "ios", prefix: str = "p"):
    """A user logged in on `devices` devices, each with a fresh webhook push token:
    (Account, [push tokens] in session order)."""
    acct = new_account(client, devices=0, prefix=prefix)
    tokens = []
    for i in range(devices):
        s = acct.login(client, device_name=f"phone {i}", platform=platform)
        tok = new_push_token()
        set_push_token(client, s["access_token"], s["device_id"], tok)
        tokens.append(tok)
    return acct, tokens


def head(client: Client, tok: str) -> int:
    r = client.get("/v1/events", token=tok, params={"timeout": 0})
    assert_status(r, 200)
    return r.json()["next"]


def poll_once(client: Client, tok: str, since: int, timeout: int = 0):
    return client.get("/v1/events", token=tok, params={"since": since, "timeout": timeout},
                      timeout=timeout + 10)


def push_token_db(device_id) -> str:
    """devices.push_token ('' when NULL)."""
    return psql("SELECT coalesce(push_token, '') FROM devices WHERE id = $1", device_id)


def devices_listed(client: Client, tok: str) -> dict:
    """{device id: Device} of GET /v1/devices."""
    r = client.get("/v1/devices", token=tok)
    assert_status(r, 200)
    return {d["id"]: d for d in r.json()["devices"]}


class Poller:
    """A device long-polling in a loop in its own thread (so it stays "online"): each poll
    has `timeout` seconds and an HTTP timeout; the loop ends at stop() or after `lifetime`
    seconds."""

    def __init__(self, client: Client, tok: str, timeout: int = 10, lifetime: float = 60):
        self._client = clone(client)
        self.tok, self.timeout = tok, timeout
        self.next = head(client, tok)
        self.polls = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._deadline = time.monotonic() + lifetime
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                r = poll_once(self._client, self.tok, self.next, self.timeout)
                assert_status(r, 200)
                self.next = r.json()["next"]
                self.polls += 1
        except BaseException as exc:          # noqa: BLE001 - re-raised by stop()
            self.error = exc
        finally:
            self._client.close()

    def stop(self, client: Client):
        """End the loop: the device polls once more (timeout 1: a poll that waits replaces
        the device's waiting one, which then answers at once); re-raises an error of the
        loop."""
        self._stop.set()
        if self._thread.is_alive():
            poll_once(client, self.tok, self.next, 1)
            self._thread.join(self.timeout + 15)
            assert not self._thread.is_alive(), "the poller did not stop"
        if self.error is not None:
            raise AssertionError(f"poller failed: {self.error!r}") from self.error


# --------------------------------------------------------------------------- logs

def periodic_runs(objs: list[dict], task: str | None = None) -> list[dict]:
    """The `periodic task done` log objects (of one task)."""
    return [o for o in objs if o.get("msg") == "periodic task done"
            and (task is None or o.get("task") == task)]


def socket_owner_pid(peer_port: int, server_port: int, pids) -> int | None:
    """Which of `pids` holds the TCP connection 127.0.0.1:peer_port -> :server_port (read
    from /proc/net/tcp and /proc/<pid>/fd); None if none does."""
    inode = None
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        cols = line.split()
        local, remote, ino = cols[1], cols[2], cols[9]
        if int(local.split(":")[1], 16) == peer_port and \
                int(remote.split(":")[1], 16) == server_port:
            inode = ino
            break
    if inode is None:
        return None
    want = f"socket:[{inode}]"
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            for fd in fd_dir.iterdir():
                try:
                    if os.readlink(fd) == want:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


# --------------------------------------------------------------------------- metrics

def metric_total(samples: dict, name: str) -> float | None:
    """Sum of every sample of `name` (any labels); None if there is none."""
    vals = [v for k, v in samples.items() if k == name or k.startswith(name + "{")]
    return sum(vals) if vals else None
