"""NATTER_REDIS_URL against a real redis-server (issue 11, item 15): an IPv6 host, an ACL
user (AUTH user password) and a percent-encoded password, as libcurl's URL parser reads
them. The server here listens on [::1] only, has the `default` user switched off and one
ACL user whose password needs percent-encoding in a URL."""
import shutil
import socket
import subprocess
from urllib.parse import quote

import pytest

from natterlib import (Client, assert_problem, assert_status, new_state_dir, wait_for)

USER = "natter-acl"
PASSWORD = "p@ss:w/rd%20#?x"


def _free_port_v6() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def acl_redis():
    exe = shutil.which("redis-server")
    assert exe, "redis-server not found on PATH (`make test` installs it)"
    d = new_state_dir("redis-acl")
    port = _free_port_v6()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "::1", "--save", "", "--appendonly", "no",
         "--dir", str(d), "--user", "default", "off",
         "--user", USER, "on", ">" + PASSWORD, "~*", "&*", "+@all"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)

    def cli(*args):
        return subprocess.run(["redis-cli", "-h", "::1", "-p", str(port), "--user", USER,
                               "--pass", PASSWORD, "--no-auth-warning", *args],
                              capture_output=True, text=True, timeout=10).stdout

    def pong():
        assert proc.poll() is None, f"redis-server exited with {proc.returncode}"
        return cli("PING").strip() == "PONG"

    wait_for(pong, 15, "the ACL redis-server on [::1] to answer PING")
    yield port, cli
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _url(port, user=USER, password=PASSWORD, db=3):
    userinfo = (quote(user, safe="") if user else "") + ":" + quote(password, safe="")
    return f"redis://{userinfo}@[::1]:{port}/{db}"


def test_ipv6_acl_user_and_encoded_password(acl_redis, start_api):
    """natter-api reaches Redis at [::1] as the ACL user with the decoded password: /readyz
    is ready and the server's connections show user=natter-acl in database 3."""
    port, cli = acl_redis
    srv = start_api(NATTER_REDIS_URL=_url(port))
    c = Client(srv.base_url)
    r = c.get("/readyz")
    assert_status(r, 200)
    assert r.json()["checks"]["redis"] == "ok"
    clients = [line for line in cli("CLIENT", "LIST").splitlines() if "cmd=client" not in line]
    assert any(f"user={USER}" in line and " db=3 " in line for line in clients), clients


@pytest.mark.parametrize("user,password", [(None, PASSWORD), (USER, "wrong")],
                         ids=["no-username", "wrong-password"])
def test_wrong_credentials_not_ready(acl_redis, start_api, user, password):
    """Without the ACL user name (AUTH as the disabled default user) or with a wrong
    password the server starts but /readyz says redis fails: the credentials are used."""
    port, _ = acl_redis
    srv = start_api(NATTER_REDIS_URL=_url(port, user=user, password=password))
    body = assert_problem(Client(srv.base_url).get("/readyz"), 503, "not_ready")
    assert body["checks"]["redis"] == "fail"
