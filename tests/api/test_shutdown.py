"""Graceful shutdown: in-flight requests complete, open connections do not block the stop."""
import http.client
import json
import signal
import socket
import time

from natterlib import (TEST_PASSWORD, Client, register, unique_username)


def test_sigterm_during_login(start_api):
    """SIGTERM while a login (interactive hashing cost) is in flight: the client still gets
    a complete response (the token, or a 503 problem) and the process exits 0."""
    srv = start_api(NATTER_PWHASH_COST="interactive")
    name = unique_username()
    register(Client(srv.base_url), name)

    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=15)
    body = json.dumps({"username": name, "password": TEST_PASSWORD})
    conn.request("POST", "/v1/auth/login", body=body,
                 headers={"Content-Type": "application/json"})
    time.sleep(0.02)
    srv.send_signal(signal.SIGTERM)
    resp = conn.getresponse()
    data = resp.read()                    # raises IncompleteRead if cut short
    conn.close()
    assert resp.status in (200, 503), (resp.status, data)
    assert resp.getheader("X-Request-Id")
    doc = json.loads(data)
    if resp.status == 200:
        assert doc["access_token"] and doc["refresh_token"]
    else:
        assert doc["code"] == "service_unavailable"
        assert resp.getheader("Retry-After")
    srv.stop()
    srv.assert_clean_exit()


def test_sigterm_with_idle_and_partial_connections(start_api):
    """An idle keep-alive connection and a half-sent request do not keep the server from
    exiting 0 after SIGTERM."""
    srv = start_api()
    idle = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200" in idle.recv(4096).split(b"\r\n", 1)[0]
    partial = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    partial.sendall(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user")
    time.sleep(0.05)
    try:
        srv.stop(signal.SIGTERM)
        srv.assert_clean_exit()
    finally:
        idle.close()
        partial.close()


def test_sigint_stops_cleanly(start_api):
    """SIGINT stops the server like SIGTERM, with exit 0."""
    srv = start_api()
    srv.stop(signal.SIGINT)
    srv.assert_clean_exit()
