"""Helpers of the long-poll, receipt, presence, typing and multi-instance API tests
(docs/CONTRACT.md, issue 4: GET /v1/events, presence, typing, several instances).

Plain functions and small classes over natterlib's Client; nothing here talks to a server,
a database or Redis at import time, so `pytest --collect-only` works without an environment.

- poll_raw / poll / head: one GET /v1/events (every call has an HTTP timeout of the poll
  timeout + POLL_GRACE seconds); poll() checks the batch against the contract (consecutive
  stored seqs after `since`, `next`, event shapes) and returns the body.
- AsyncPoll: one poll in a thread of its own (own HTTP session), for "a poll is waiting
  while something else happens"; start_poll() also checks the poll is still waiting after
  a short settle time.
- Listener: a device polling in a loop in a thread, keeping its own cursor, recording every
  event with its arrival time; wait_for() blocks (bounded) until an event matches.
- RestartableRedis (from natterlib): a private redis-server on a fixed unix socket that can be stopped and
  started again on the same socket (natterlib.PrivateRedis cannot restart).
- metric_samples / waiter_gauge: read /metrics.
"""
from __future__ import annotations

import datetime
import json
import re
import threading
import time

import pytest

from chatlib import chat_path, clone
from natterlib import (RestartableRedis, metric_samples, RFC3339_UTC_RE, Client, assert_status,
                       describe, psql, psql_int)  # RestartableRedis: re-exported for the tests

EVENTS = "/v1/events"
PRESENCE = "/v1/presence"
HEARTBEAT = "/v1/presence/heartbeat"

POLL_GRACE = 5             # HTTP timeout of a poll = its poll timeout + this
DEFAULT_POLL_TIMEOUT = 30  # the server's default `timeout`
SETTLE = 0.4               # seconds a freshly started poll gets to reach the server and suspend

STORED_TYPES = {"message", "edit", "delete", "reaction", "receipt", "membership", "rename"}
EPHEMERAL_TYPES = {"typing", "presence"}
EVENT_KEYS = {"seq", "type", "chat_id", "created_at", "data"}


# --------------------------------------------------------------------------- polls

def http_timeout_for(timeout) -> float:
    """HTTP timeout of a poll with this `timeout` parameter (which may be invalid)."""
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        return DEFAULT_POLL_TIMEOUT + POLL_GRACE
    return max(0, min(timeout, 60)) + POLL_GRACE


def poll_raw(client: Client, tok: str, since=None, timeout=None, limit=None, **extra):
    """GET /v1/events with the given parameters (None = left out); the Response."""
    params = {}
    for name, value in (("since", since), ("timeout", timeout), ("limit", limit)):
        if value is not None:
            params[name] = value
    params.update(extra)
    return client.get(EVENTS, token=tok, params=params or None,
                      timeout=http_timeout_for(DEFAULT_POLL_TIMEOUT if timeout is None
                                               else timeout))


def check_event(ev: dict) -> dict:
    """Assert one event object has the contract's shape; returns it."""
    assert isinstance(ev, dict) and set(ev) == EVENT_KEYS, f"event shape: {ev}"
    assert isinstance(ev["type"], str), ev
    assert isinstance(ev["created_at"], str) and RFC3339_UTC_RE.match(ev["created_at"]), ev
    assert isinstance(ev["data"], dict), ev
    if ev["type"] in EPHEMERAL_TYPES:
        assert ev["seq"] is None, f"ephemeral event with a seq: {ev}"
        data = ev["data"]
        if ev["type"] == "typing":
            assert set(data) == {"chat_id", "user_id", "typing"}, ev
            assert isinstance(data["typing"], bool), ev
            assert ev["chat_id"] == data["chat_id"], ev
        else:
            assert set(data) == {"user_id", "online", "last_seen_at"}, ev
            assert ev["chat_id"] is None, ev
            assert isinstance(data["online"], bool), ev
            assert isinstance(data["last_seen_at"], str) \
                and RFC3339_UTC_RE.match(data["last_seen_at"]), ev
    else:
        assert ev["type"] in STORED_TYPES, f"unknown event type: {ev}"
        assert isinstance(ev["seq"], int) and not isinstance(ev["seq"], bool) \
            and ev["seq"] >= 1, ev
        assert isinstance(ev["chat_id"], int), ev
        assert ev["data"].get("chat_id") == ev["chat_id"], f"data.chat_id != chat_id: {ev}"
    return ev


def check_batch(body: dict, since: int, limit: int | None = None) -> dict:
    """Assert a 200 body of a poll with `since`: {"events", "next"} only; the stored events
    have consecutive seqs since+1, since+2, …; `next` is the last of them (or `since` when
    there is none); at most `limit` stored events. Returns the body."""
    assert isinstance(body, dict) and set(body) == {"events", "next"}, f"poll body: {body}"
    assert isinstance(body["next"], int) and not isinstance(body["next"], bool), body
    assert isinstance(body["events"], list), body
    for ev in body["events"]:
        check_event(ev)
    seqs = [e["seq"] for e in body["events"] if e["seq"] is not None]
    assert seqs == list(range(since + 1, since + 1 + len(seqs))), \
        f"poll since={since}: stored seqs are not since+1, since+2, …: {seqs}"
    assert body["next"] == (seqs[-1] if seqs else since), \
        f"poll since={since}: next={body['next']} but stored seqs {seqs}"
    if limit is not None:
        assert len(seqs) <= limit, f"poll limit={limit} returned {len(seqs)} events"
    return body


def poll(client: Client, tok: str, since: int, timeout: int = 0, limit: int | None = None,
         max_elapsed: float | None = None) -> dict:
    """One poll, asserting 200 and a well-formed batch (and, if given, that it answered
    within max_elapsed seconds); the body."""
    t0 = time.monotonic()
    r = poll_raw(client, tok, since=since, timeout=timeout, limit=limit)
    elapsed = time.monotonic() - t0
    assert_status(r, 200)
    if max_elapsed is not None:
        assert elapsed < max_elapsed, \
            f"poll since={since} timeout={timeout} took {elapsed:.2f} s (bound {max_elapsed})"
    return check_batch(r.json(), since, limit)


def head(client: Client, tok: str) -> int:
    """GET /v1/events without since: asserts 200 {"events": [], "next": H} at once; H."""
    t0 = time.monotonic()
    r = poll_raw(client, tok, timeout=5)
    assert_status(r, 200)
    body = r.json()
    assert set(body) == {"events", "next"} and body["events"] == [], describe(r)
    assert isinstance(body["next"], int) and body["next"] >= 0, describe(r)
    assert time.monotonic() - t0 < 3, "a poll without since must answer at once"
    return body["next"]


def stored(events: list[dict]) -> list[dict]:
    return [e for e in events if e["seq"] is not None]


def of_type(events: list[dict], type_: str, **data) -> list[dict]:
    """Events of this type whose data has these values."""
    return [e for e in events if e["type"] == type_
            and all(e["data"].get(k) == v for k, v in data.items())]


def drain(client: Client, tok: str, since: int, limit: int = 500, max_polls: int = 100):
    """Every stored event after `since` (timeout=0 polls until none is left):
    (events, next). Ephemeral events are dropped."""
    out = []
    for _ in range(max_polls):
        body = poll(client, tok, since, timeout=0, limit=limit)
        got = stored(body["events"])
        if not got:
            return out, since
        out += got
        since = body["next"]
    pytest.fail(f"drain did not end within {max_polls} polls")


class AsyncPoll:
    """One GET /v1/events in its own thread (own HTTP session).

    .wait(within) -> Response (fails the test if not answered within `within` s);
    .body(within) asserts 200 + a well-formed batch; .elapsed = seconds from start to answer."""

    def __init__(self, client: Client, tok: str, since=None, timeout=20, limit=None, **extra):
        self._client = clone(client)
        self.tok, self.since, self.timeout, self.limit = tok, since, timeout, limit
        self._extra = extra
        self.resp = None
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.answered_at: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            self.resp = poll_raw(self._client, self.tok, since=self.since, timeout=self.timeout,
                                 limit=self.limit, **self._extra)
        except BaseException as exc:          # noqa: BLE001 - re-raised in wait()
            self.error = exc
        finally:
            self.answered_at = time.monotonic()
            self._done.set()
            self._client.close()

    def done(self) -> bool:
        return self._done.is_set()

    @property
    def elapsed(self) -> float | None:
        return None if self.answered_at is None else self.answered_at - self.started

    def describe(self) -> str:
        return (f"poll since={self.since} timeout={self.timeout}: "
                + (describe(self.resp) if self.resp is not None else "no answer yet"))

    def wait(self, within: float):
        if not self._done.wait(within):
            pytest.fail(f"poll since={self.since} timeout={self.timeout} not answered within "
                        f"{within} s", pytrace=False)
        if self.error is not None:
            raise self.error
        return self.resp

    def body(self, within: float) -> dict:
        r = self.wait(within)
        assert_status(r, 200)
        return check_batch(r.json(), self.since, self.limit)

    def assert_waiting(self, what: str = ""):
        assert not self.done(), \
            f"the poll should still be waiting{(' ' + what) if what else ''}: {self.describe()}"


def start_poll(client: Client, tok: str, since: int, timeout: int = 20, limit=None,
               settle: float = SETTLE) -> AsyncPoll:
    """Start a poll in a thread and give it `settle` s to reach the server; asserts it is
    still waiting then (nothing to answer with yet)."""
    p = AsyncPoll(client, tok, since=since, timeout=timeout, limit=limit)
    time.sleep(settle)
    p.assert_waiting("(it had nothing to answer with)")
    return p


class Listener:
    """One device polling in a loop in its own thread: keeps its own cursor `next`, records
    every event as (monotonic arrival time, event). Bounded: each poll has `timeout` and an
    HTTP timeout, and the loop ends at stop() or after `lifetime` seconds."""

    def __init__(self, client: Client, tok: str, since: int, timeout: int = 25,
                 lifetime: float = 120, label: str = "listener"):
        self._client = clone(client)
        self.tok, self.timeout, self.label = tok, timeout, label
        self.next = since
        self.batches = 0
        self.records: list[tuple[float, dict]] = []
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + lifetime
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                r = poll_raw(self._client, self.tok, since=self.next, timeout=self.timeout)
                if self._stop.is_set() and r.status_code == 200:
                    break
                assert_status(r, 200)
                body = check_batch(r.json(), self.next)
                now = time.monotonic()
                with self._cond:
                    self.records += [(now, e) for e in body["events"]]
                    self.next = body["next"]
                    self.batches += 1
                    self._cond.notify_all()
        except BaseException as exc:          # noqa: BLE001 - reported by wait_for/check
            with self._cond:
                self.error = exc
                self._cond.notify_all()
        finally:
            self._client.close()

    @property
    def events(self) -> list[dict]:
        with self._cond:
            return [e for _, e in self.records]

    def check(self):
        if self.error is not None:
            raise AssertionError(f"{self.label} failed: {self.error!r}") from self.error

    def matching(self, pred) -> list[tuple[float, dict]]:
        with self._cond:
            return [(t, e) for t, e in self.records if pred(e)]

    def wait_for(self, pred, within: float, what: str) -> tuple[float, dict]:
        """The first (arrival time, event) satisfying pred; fails after `within` s."""
        deadline = time.monotonic() + within
        with self._cond:
            while True:
                for t, e in self.records:
                    if pred(e):
                        return t, e
                self.check()
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"{self.label}: no {what} within {within} s; events seen: "
                                f"{[e for _, e in self.records]}", pytrace=False)
                self._cond.wait(left)

    def wait_next(self, at_least: int, within: float) -> int:
        """Wait until the cursor reached at_least; the cursor."""
        deadline = time.monotonic() + within
        with self._cond:
            while self.next < at_least:
                self.check()
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"{self.label}: cursor {self.next} did not reach {at_least} "
                                f"within {within} s", pytrace=False)
                self._cond.wait(left)
            return self.next

    def join(self, within: float):
        self._thread.join(within)
        assert not self._thread.is_alive(), f"{self.label} still polling after {within} s"
        self.check()

    def stop(self, client: Client | None = None):
        """Ends the loop. With a client, the device polls once more (timeout 1) so that the
        waiting poll is replaced and answers now instead of at its timeout."""
        self._stop.set()
        # The loop may be between two polls: then its next poll (the last one, it checks the
        # flag first) can reach the server after ours and wait its whole timeout. So replace
        # the waiting poll until the loop has ended, a few times at most.
        deadline = time.monotonic() + 10
        while client is not None and self._thread.is_alive() and time.monotonic() < deadline:
            poll_raw(client, self.tok, since=self.next, timeout=1)
            self._thread.join(1.5)
        assert not self._thread.is_alive() or client is None, f"{self.label} did not stop"
        self.check()


# --------------------------------------------------------------------------- presence

def heartbeat(client: Client, tok: str):
    r = client.post(HEARTBEAT, token=tok)
    assert_status(r, 204)
    assert r.content == b""


def presence_raw(client: Client, tok: str, user_ids):
    value = user_ids if isinstance(user_ids, str) else ",".join(map(str, user_ids))
    return client.get(PRESENCE, token=tok, params={"user_ids": value})


def presence(client: Client, tok: str, user_ids) -> dict:
    """{user id: {user_id, online, last_seen_at}} of GET /v1/presence (asserting 200 and the
    order by user id)."""
    r = presence_raw(client, tok, user_ids)
    assert_status(r, 200)
    rows = r.json()["presence"]
    ids = [x["user_id"] for x in rows]
    assert ids == sorted(ids) and len(ids) == len(set(ids)), \
        f"presence not ordered by user id: {describe(r)}"
    for x in rows:
        assert set(x) == {"user_id", "online", "last_seen_at"}, describe(r)
        assert isinstance(x["online"], bool), describe(r)
        assert x["last_seen_at"] is None or RFC3339_UTC_RE.match(x["last_seen_at"]), describe(r)
    return {x["user_id"]: x for x in rows}


def parse_time(text: str) -> datetime.datetime:
    """An RFC 3339 UTC time of the API as an aware datetime."""
    assert RFC3339_UTC_RE.match(text), text
    base, _, frac = text[:-1].partition(".")
    dt = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc)
    if frac:
        dt += datetime.timedelta(microseconds=int((frac + "000000")[:6]))
    return dt


def typing_raw(client: Client, tok: str, chat_id, body=None, **kw):
    return client.post(chat_path(chat_id, "typing"), json=body, token=tok, **kw)


def typing(client: Client, tok: str, chat_id, value: bool = True):
    r = typing_raw(client, tok, chat_id, {"typing": value})
    assert_status(r, 204)
    assert r.content == b""


# --------------------------------------------------------------------------- database

def device_acked_seq(device_id) -> int:
    return psql_int("SELECT acked_seq FROM devices WHERE id = $1", device_id)


def wait_acked(device_id, seq: int, within: float = 15.0) -> None:
    """Polls acks are flushed in batches a few ms later (api/chat/acks.h): wait (bounded)
    until the device's acked_seq is `seq`; it must never pass it."""
    deadline = time.monotonic() + within
    while True:
        got = device_acked_seq(device_id)
        assert got <= seq, f"device {device_id} acked {got}, beyond {seq}"
        if got == seq:
            return
        assert time.monotonic() < deadline, \
            f"device {device_id}: acked_seq {got} did not reach {seq} within {within} s"
        time.sleep(0.05)


def inbox_max_seq(user_id) -> int:
    return psql_int("SELECT coalesce(max(seq), 0) FROM inbox WHERE user_id = $1", user_id)


def inbox_payloads(user_id) -> dict:
    """{seq: (type, chat_id, payload)} of the user's inbox rows."""
    out = psql("SELECT coalesce(json_agg(json_build_array(seq, type, chat_id, payload) "
               "ORDER BY seq), '[]'::json) FROM inbox WHERE user_id = $1", user_id)
    return {row[0]: (row[1], row[2], row[3]) for row in json.loads(out)}


def chat_messages_db(chat_ids) -> dict:
    """{(chat_id, seq): (sender_id, kind, body)} of every message of these chats."""
    ids = "{" + ",".join(str(int(c)) for c in chat_ids) + "}"
    out = psql("SELECT coalesce(json_agg(json_build_array(chat_id, seq, sender_id, kind, body)"
               "), '[]'::json) FROM messages WHERE chat_id = ANY($1::bigint[])", ids)
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in json.loads(out)}


def last_seen_db(user_id) -> str:
    """users.last_seen_at as text ('' when NULL)."""
    return psql("SELECT coalesce(last_seen_at::text, '') FROM users WHERE id = $1", user_id)


# --------------------------------------------------------------------------- metrics

WAITER_GAUGE_RE = re.compile(r"^natter_[a-z_]*(waiter|long_?poll|suspended|polls_waiting|"
                             r"polls_held|polls_open)[a-z_]*$")


def waiter_gauge(client: Client) -> tuple[str, float] | None:
    """(name, value) of a gauge of waiting long-polls on /metrics, if the server has one
    (a metric of TYPE gauge whose name mentions waiters / long-polls), else None."""
    r = client.get("/metrics")
    assert_status(r, 200)
    text = r.text
    gauges = set(re.findall(r"^# TYPE (\S+) gauge$", text, re.M))
    for name in sorted(gauges):
        if WAITER_GAUGE_RE.match(name):
            samples = metric_samples(text)
            total = sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))
            return name, total
    return None


