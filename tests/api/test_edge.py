"""Hardening at the edge (issue 11): the /metrics token, slow clients (request-head and
body deadlines, the per-address connection cap), libmicrohttpd's own refusals in the
logs, and the access log of requests with paths that are not UTF-8."""
import json
import re
import secrets
import socket
import threading
import time
import uuid

import pytest

from natterlib import (Client, assert_problem, assert_status, common_env, new_account, new_state_dir, psql_int,
                       parse_json_log, run_binary, wait_for)

METRICS_TOKEN = "metrics-" + secrets.token_hex(16)


def test_metrics_token_protects_metrics(start_api):
    """With NATTER_METRICS_TOKEN set, GET /metrics answers 401 unauthorized without an
    Authorization header, 401 invalid_token with another bearer token (an access JWT is
    not it either), both with WWW-Authenticate: Bearer; the right token gets the
    Prometheus text. /healthz stays public."""
    srv = start_api(NATTER_METRICS_TOKEN=METRICS_TOKEN)
    c = Client(srv.base_url)
    r = c.get("/metrics")
    assert_problem(r, 401, "unauthorized")
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
    for wrong in ("x", METRICS_TOKEN + "x", METRICS_TOKEN[:-1], "metrics-" + "0" * 32):
        r = c.get("/metrics", token=wrong)
        assert_problem(r, 401, "invalid_token")
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
        assert "natter_http_requests_total" not in r.text
    r = c.get("/metrics", token=METRICS_TOKEN)
    assert_status(r, 200)
    assert "natter_http_requests_total" in r.text
    assert_status(c.get("/healthz"), 200)


def test_metrics_public_without_token(client):
    """Without NATTER_METRICS_TOKEN (the default) /metrics needs no header."""
    assert_status(client.get("/metrics"), 200)


def test_metrics_token_too_short_is_a_startup_error():
    """A NATTER_METRICS_TOKEN under 16 bytes stops start-up naming the variable."""
    env = common_env(new_state_dir("metrics-token"), NATTER_METRICS_TOKEN="short")
    proc = run_binary("natter-api", [], env, timeout=30)
    assert proc.returncode != 0
    assert "NATTER_METRICS_TOKEN" in proc.output


# ------------------------------------------------------------------ slow clients

SLOW = 200            # slow connections one address opens
OTHER_ADDR = "127.0.0.2"   # "another client": a second loopback source address


def raw_request(port: int, data: bytes, source: str = "127.0.0.1", timeout: float = 10) -> bytes:
    """Send raw bytes from `source`, read until the server closes (or `timeout`)."""
    s = socket.socket()
    try:
        s.bind((source, 0))
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                break
            if not d:
                break
            out += d
        return out
    finally:
        s.close()


def status_of(reply: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", reply)
    return int(m.group(1)) if m else 0


class Slowloris:
    """SLOW connections from 127.0.0.1 that each send part of a request head, then one
    more byte every `every` seconds (so an idle timeout alone never ends them), from a
    background thread, until stop()."""

    def __init__(self, port: int, n: int = SLOW, every: float = 0.5):
        self.socks = []
        for _ in range(n):
            s = socket.socket()
            s.connect(("127.0.0.1", port))
            s.setblocking(False)
            try:
                s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            except OSError:
                pass
            self.socks.append(s)
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, daemon=True)
        self._thread.start()

    def _drip(self):
        for _ in range(2000):  # bounded: 2000 rounds at most
            if self._stop.wait(self.every):
                return
            for s in self.socks:
                try:
                    s.send(b"a")
                except OSError:
                    pass

    def open_count(self) -> int:
        """Connections the server has not closed (no EOF, no reset)."""
        n = 0
        for s in self.socks:
            try:
                if s.recv(4096) == b"":
                    continue
                n += 1          # got bytes: still open (the server never answers them)
            except BlockingIOError:
                n += 1
            except OSError:
                pass
        return n

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=10)
        for s in self.socks:
            s.close()


def slow_closed(srv) -> float:
    text = Client(srv.base_url).get("/metrics").text
    m = re.search(r'^natter_http_slow_closed_total\{phase="head"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_slow_connections_from_one_address_do_not_stop_another(start_api):
    """With the connection limit at 200, 200 slowloris connections from 127.0.0.1 (each
    sending a header byte every 0.5 s, so the 3 s idle timeout never fires) get at most
    the per-address share (half the limit by default; the rest are closed at once): a
    client from 127.0.0.2 is served at once, long before the request-head deadline
    (60 s here) would free anything."""
    srv = start_api(NATTER_MAX_CONNECTIONS="200", NATTER_HEAD_TIMEOUT="60", NATTER_CONN_TIMEOUT="3")
    slow = Slowloris(srv.port)
    try:
        reply = raw_request(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                            source=OTHER_ADDR, timeout=10)
        assert status_of(reply) == 200, f"another client was not served: {reply[:200]!r}"
        wait_for(lambda: slow.open_count() <= 100, 10, "one address to hold at most 100 connections")
        assert slow.open_count() >= 50, "the per-address share was not let in"
    finally:
        slow.stop()
    srv.wait_log(lambda objs: any(o.get("msg") == "listening" and o.get("per_ip_limit") == 100 for o in objs),
                 5, "the per-address limit in the 'listening' line")


def test_head_deadline_frees_the_connections(start_api):
    """Even when one address may take every connection (NATTER_MAX_CONNECTIONS_PER_IP =
    NATTER_MAX_CONNECTIONS = 200, as behind a balancer), 200 slowloris connections hold
    the server only until their request head is late (NATTER_HEAD_TIMEOUT=2, though
    they keep sending a byte every 0.5 s): they are closed, counted in
    natter_http_slow_closed_total, logged, and a client from 127.0.0.2, queued
    meanwhile, is served."""
    srv = start_api(NATTER_MAX_CONNECTIONS="200", NATTER_MAX_CONNECTIONS_PER_IP="200",
                    NATTER_HEAD_TIMEOUT="2", NATTER_CONN_TIMEOUT="3")
    slow = Slowloris(srv.port)
    try:
        reply = raw_request(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                            source=OTHER_ADDR, timeout=30)
        assert status_of(reply) == 200, f"another client was not served: {reply[:200]!r}"
        wait_for(lambda: slow.open_count() == 0, 30, "the slow connections to be closed")
    finally:
        slow.stop()
    assert slow_closed(srv) >= 1
    srv.wait_log(lambda objs: any(o.get("msg") == "connection closed: request head too slow"
                                  and o.get("ip") == "127.0.0.1" for o in objs),
                 10, "a 'request head too slow' log line")


def test_slow_body_is_cut_and_long_poll_is_not(start_api):
    """NATTER_HEAD_TIMEOUT=1, NATTER_BODY_TIMEOUT=2: a body of 100 declared bytes that
    trickles one byte every 0.5 s has its connection closed (without a reply),
    while a long-poll whose head arrived waits its whole 4 s timeout and answers 200, and
    a keep-alive client that pauses 2 s between requests is still served."""
    srv = start_api(NATTER_HEAD_TIMEOUT="1", NATTER_BODY_TIMEOUT="2", NATTER_CONN_TIMEOUT="5")
    c = Client(srv.base_url)
    acct = new_account(c)
    head = c.get("/v1/events", token=acct.token)
    assert_status(head, 200)
    since = head.json()["next"]

    # the body trickles (a byte every 0.5 s, so the 5 s idle timeout never fires) and
    # never completes: its connection is closed with no reply
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        s.sendall(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{")
        s.setblocking(False)
        closed, got = False, b""
        for _ in range(80):  # 40 s at most, far from the 99 bytes that would complete it
            time.sleep(0.5)
            try:
                d = s.recv(4096)
                if not d:
                    closed = True
                    break
                got += d
            except BlockingIOError:
                pass
            except OSError:
                closed = True
                break
            try:
                s.send(b" ")
            except OSError:
                closed = True
                break
        assert closed, "a trickling body was never cut"
        assert status_of(got) in (0, 408), got[:200]
    finally:
        s.close()

    t0 = time.monotonic()
    r = c.get(f"/v1/events?since={since}&timeout=4", token=acct.token, timeout=30)
    assert_status(r, 200)
    assert r.json()["events"] == []
    assert time.monotonic() - t0 >= 3.5, "the poll did not wait its timeout"

    assert_status(c.get("/healthz"), 200)
    time.sleep(2)
    assert_status(c.get("/healthz"), 200)


# ------------------------------------------------------- refusals and the access log

def test_refusals_are_json_lines(start_api):
    """Requests libmicrohttpd refuses itself — a header past its 8 KiB buffer (431), a
    request line past it (414), HTTP/2.5 (505), a bad Content-Length or chunked body
    (400), a Content-Length too large to parse (413) — still get their status, and every
    one is logged as a JSON line (the status
    as a field, no HTML): the server's log has no line that is not a JSON object. A
    path past 2048 bytes that still fits is answered by natter itself: 414
    uri_too_long as problem+json."""
    srv = start_api()
    port = srv.port
    cases = [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /healthz HTTP/2.5\r\nHost: x\r\n\r\n", 505),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
        (b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
         b"Content-Type: application/json\r\n\r\nzz\r\n", 400),
        (b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
         b"Content-Length: 99999999999999999999999\r\n\r\n", 413),
    ]
    for data, want in cases:
        reply = raw_request(port, data, timeout=10)
        assert status_of(reply) == want, (data[:60], reply[:200])

    path = "/" + "a" * 3000
    r = Client(srv.base_url).get(path, raw=True)  # no path template of the spec matches it
    assert r.status_code == 414, r.text[:200]
    assert r.headers["Content-Type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == "uri_too_long" and body["status"] == 414
    assert body["request_id"] == r.headers["X-Request-Id"]

    def refusals(objs):
        got = {o.get("status") for o in objs if o.get("msg") == "libmicrohttpd refused a request"}
        return {431, 414, 505, 400, 413} <= got
    srv.wait_log(refusals, 10, "a JSON line per libmicrohttpd refusal")
    # those after the request line also get the access-log line, with MHD's status
    srv.wait_log(lambda objs: any(o.get("msg") == "request" and o.get("status") == 431
                                  and o.get("refused_by") == "libmicrohttpd" for o in objs),
                 10, "an access-log line with status 431")
    objs, bad = parse_json_log(srv.log_text())
    assert not bad, f"lines that are not JSON: {bad[:5]}"
    assert not any("<html>" in json.dumps(o) for o in objs)


def test_invalid_utf8_path_gets_a_complete_access_log_line(client, api):
    """A long path of bytes that are not UTF-8 (%ff, 1,500 of them) is answered 400
    invalid_parameter (field path), and its access-log line is complete: request id,
    address, status and the path (bytes that are not UTF-8 written as U+FFFD)."""
    rid = "utf8-" + secrets.token_hex(8)
    reply = raw_request(api.port, b"GET /v1/" + b"%ff" * 1500 + b" HTTP/1.1\r\nHost: x\r\n"
                        b"X-Request-Id: " + rid.encode() + b"\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == 400, reply[:200]

    def line(objs):
        return next((o for o in objs if o.get("msg") == "request" and o.get("request_id") == rid), None)
    o = api.wait_log(line, 10, f"the access-log line of request {rid}")
    assert o["status"] == 400
    assert o["ip"] == "127.0.0.1"
    assert o["method"] == "GET"
    assert o.get("path", "").startswith("/v1/\ufffd\ufffd"), o.get("path", "")[:40]
    assert len(o["path"]) == len("/v1/") + 1500


# ------------------------------------------------------------------ clean refusals

def problem_of(reply: bytes) -> dict:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"application/problem+json" in head, reply[:300]
    return json.loads(body[:body.rindex(b"}") + 1])


def test_query_not_utf8_is_400(client):
    """GET /v1/users?username=%FF (a byte that is not UTF-8 once decoded) is 400
    invalid_parameter naming the parameter, not a 500."""
    acct = new_account(client)
    r = client.get("/v1/users?username=%FF", token=acct.token, raw=True)
    assert_problem(r, 400, "invalid_parameter", field="username")
    r = client.get("/v1/users?%FF=1", token=acct.token, raw=True)
    assert_problem(r, 400, "invalid_parameter", field="query")


def test_nul_in_target_is_refused(client, api):
    """A %00 in the path or the query is refused with 400 invalid_parameter instead of
    cutting the decoded string there: /v1/users/1%00junk does not return user 1, and a
    reaction a%00b is not stored as a."""
    acct = new_account(client)
    uid = acct.id
    reply = raw_request(api.port, f"GET /v1/users/{uid}%00junk HTTP/1.1\r\nHost: x\r\n"
                        f"Authorization: Bearer {acct.token}\r\nConnection: close\r\n\r\n".encode())
    assert status_of(reply) == 400, reply[:300]
    assert problem_of(reply)["code"] == "invalid_parameter"
    r = client.get(f"/v1/users/{uid}", token=acct.token)
    assert_status(r, 200)                                   # the same path without it works

    cid = client.post("/v1/chats", json={"kind": "group", "title": "nul", "member_ids": []},
                      token=acct.token).json()["id"]
    m = client.post(f"/v1/chats/{cid}/messages", json={"client_msg_id": str(uuid.uuid4()),
                                                        "text": "x"}, token=acct.token).json()
    reply = raw_request(api.port, f"PUT /v1/chats/{cid}/messages/{m['seq']}/reactions/a%00b HTTP/1.1\r\n"
                        f"Host: x\r\nAuthorization: Bearer {acct.token}\r\nContent-Length: 0\r\n"
                        f"Connection: close\r\n\r\n".encode())
    assert status_of(reply) == 400, reply[:300]
    assert psql_int("SELECT count(*) FROM reactions WHERE chat_id = $1", cid) == 0
    reply = raw_request(api.port, b"GET /v1/limits?x=%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == 400, reply[:300]


def test_conflicting_content_length_is_refused(client, api):
    """Two Content-Length headers that differ are refused with 400 malformed_request
    (libmicrohttpd alone took the first); the login they carried is not attempted."""
    body = b'{"username":"nobody-here","password":"x"}'
    reply = raw_request(api.port, b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
                        b"\r\nContent-Length: 5\r\nConnection: close\r\n\r\n" + body)
    assert status_of(reply) == 400, reply[:300]
    assert problem_of(reply)["code"] == "malformed_request"


CL_HEAD = b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "


@pytest.mark.parametrize("head, status", [(CL_HEAD + b"-1\r\n\r\n", 400), (CL_HEAD + b"abc\r\n\r\n", 400),
                                          (CL_HEAD + b"\r\n\r\n", 400),
                                          (CL_HEAD + b"99999999999999999999999\r\n\r\n", 413)],
                         ids=["minus-one", "abc", "empty", "too-large"])
def test_unparsable_content_length_gets_one_clean_answer(client, api, head, status):
    """A Content-Length that is not a number, or too large for one, is refused by libmicrohttpd while it parses the head, before
    natter sees the request: with 0.9.75 as Debian ships it, the status line and headers
    came twice (third_party/libmicrohttpd/patches/0002-*). Now: exactly one response
    whose body is exactly as long as its Content-Length says, then the connection
    closes; and the server goes on serving."""
    reply = raw_request(api.port, head)
    assert status_of(reply) == status, reply[:300]
    assert reply.count(b"HTTP/1.1 ") == 1, reply
    head_out, sep, body = reply.partition(b"\r\n\r\n")
    assert sep, reply
    lengths = re.findall(rb"(?im)^content-length: *(\d+)\r?$", head_out)
    assert len(lengths) == 1, head_out
    assert len(body) == int(lengths[0]), reply
    assert re.search(rb"(?im)^connection: *close\r?$", head_out), head_out
    assert client.get("/healthz", raw=True).status_code == 200
