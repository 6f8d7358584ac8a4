"""Helpers for the Natter black-box API tests.

conftest.py turns these into fixtures; test modules import the plain helpers from here
(`from natterlib import ...`). Nothing in this module talks to a server at import time, so
`pytest --collect-only` works without a running environment.
"""
from __future__ import annotations

import atexit
import base64
import datetime
import fnmatch
import hashlib
import hmac
import json as jsonlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import requests.adapters
import urllib3
import yaml
from jsonschema import Draft202012Validator, FormatChecker, RefResolver

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO_ROOT / "openapi" / "openapi.yaml"
CONTRACT_PATH = REPO_ROOT / "docs" / "CONTRACT.md"
MIGRATIONS_DIR = REPO_ROOT / "migrations"

# Embedded object store credentials every test server and worker share, so tests (and
# botocore) can sign URLs for it and workers can delete objects.
TEST_S3_ACCESS_KEY = "natter-test-access"
TEST_S3_SECRET_KEY = "natter-test-s3-secret-0123456789abcdef"
TEST_S3_REGION = "us-east-1"
TEST_S3_BUCKET = "natter"

# HS256 secret every test server gets (64 characters), so tests can forge tokens.
TEST_JWT_SECRET = "natter-api-tests-jwt-secret-do-not-use-elsewhere-0123456789abcde"
assert len(TEST_JWT_SECRET) == 64

TEST_PASSWORD = "Tr0ub4dor-and-3-horses"
HTTP_TIMEOUT = 10          # seconds, every HTTP call
START_TIMEOUT = 15         # seconds until /healthz answers (or a worker is ready)
STOP_TIMEOUT = 15          # seconds between SIGTERM and exit

REQUIRED_ENV = {
    "NATTER_BIN_DIR": "directory holding natter-api and natter-worker",
    "NATTER_TEST_DATABASE_URL": "libpq URL of the empty test database",
    "NATTER_TEST_REDIS_URL": "unix:// URL of the test Redis",
    "NATTER_TEST_REDIS_SOCKET": "path of the test Redis socket",
    "NATTER_TEST_STATE_DIR": "scratch directory for the tests",
}

SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "AddressSanitizer:DEADLYSIGNAL",
    "runtime error:",            # UBSan
)

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
RFC3339_UTC_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


# --------------------------------------------------------------------------- environment

def missing_env() -> list[str]:
    return [name for name in REQUIRED_ENV if not os.environ.get(name)]


def need_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} ({REQUIRED_ENV.get(name, 'test environment')}) is not set: "
                    "run the API tests with `make test`, which starts PostgreSQL and Redis "
                    "and sets the NATTER_TEST_* variables", pytrace=False)
    return value


def bin_path(name: str) -> str:
    path = Path(need_env("NATTER_BIN_DIR")) / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} is missing or not executable: build first (`make test` does)",
                    pytrace=False)
    return str(path)


def state_root() -> Path:
    root = Path(need_env("NATTER_TEST_STATE_DIR")) / "pytest"
    root.mkdir(parents=True, exist_ok=True)
    return root


def new_state_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix + "-", dir=state_root()))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(overrides: dict) -> dict:
    """os.environ without any NATTER_* variable, plus overrides (value None = removed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATTER_")}
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def common_env(state_dir: Path, **overrides) -> dict:
    """Environment shared by natter-api, natter-api migrate and natter-worker."""
    base = {
        "NATTER_ENV": "development",
        "NATTER_STATE_DIR": str(state_dir),
        "NATTER_JWT_SECRET": TEST_JWT_SECRET,
        "NATTER_PWHASH_COST": "min",
        "NATTER_DATABASE_URL": need_env("NATTER_TEST_DATABASE_URL"),
        "NATTER_REDIS_URL": need_env("NATTER_TEST_REDIS_URL"),
        "NATTER_S3_ACCESS_KEY": TEST_S3_ACCESS_KEY,
        "NATTER_S3_SECRET_KEY": TEST_S3_SECRET_KEY,
        "NATTER_S3_REGION": TEST_S3_REGION,
        "NATTER_S3_BUCKET": TEST_S3_BUCKET,
    }
    base.update(overrides)
    return child_env(base)


def api_env(state_dir: Path, port: int, **overrides) -> dict:
    base = {
        "NATTER_LOGIN_MAX_PER_USER": "1000",
        "NATTER_LOGIN_MAX_PER_IP": "100000",
        "NATTER_LISTEN_ADDR": "127.0.0.1",
        "NATTER_PORT": str(port),
        "NATTER_HTTP_THREADS": "4",
        # pre-signed URLs of the embedded store must point at this very server
        "NATTER_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    base.update(overrides)
    return common_env(state_dir, **base)


def tail(text: str, lines: int = 80, chars: int = 8000) -> str:
    out = "\n".join(text.splitlines()[-lines:])
    return out[-chars:]


def sanitizer_findings(text: str) -> list[str]:
    return [m for m in SANITIZER_MARKERS if m in text]


def run_binary(name: str, args=(), env: dict | None = None, timeout: float = 10,
               state_dir: Path | None = None) -> subprocess.CompletedProcess:
    """Run a binary to completion (stdout+stderr merged into .output, text).

    Fails the test if it does not exit within `timeout` or if a sanitizer reported
    something. The exit code is left to the caller."""
    if env is None:
        env = common_env(state_dir or new_state_dir(name))
    argv = [bin_path(name), *args]
    try:
        proc = subprocess.run(argv, env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.output or b"").decode("utf-8", "replace")
        pytest.fail(f"{' '.join(argv)} did not exit within {timeout} s; output:\n{tail(out)}",
                    pytrace=False)
    proc.output = proc.stdout.decode("utf-8", "replace")
    found = sanitizer_findings(proc.output)
    assert not found, f"{' '.join(argv)}: sanitizer report {found}:\n{tail(proc.output)}"
    return proc


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(interval)


def parse_json_log(text: str) -> tuple[list[dict], list[str]]:
    """(objects, lines that are not JSON objects) of a JSON-lines log."""
    objs, bad = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            obj = jsonlib.loads(line)
        except ValueError:
            bad.append(line)
            continue
        if isinstance(obj, dict):
            objs.append(obj)
        else:
            bad.append(line)
    return objs, bad


# --------------------------------------------------------------------------- processes

_LIVE: set = set()


@atexit.register
def _kill_leftovers():
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.kill()


class ServerProcess:
    """A natter-api or natter-worker child process logging to a file in its state dir."""

    def __init__(self, name: str, argv: list[str], env: dict, state_dir: Path,
                 port: int | None = None, label: str | None = None):
        self.name = name
        self.label = label or name      # how failure messages call it
        self.argv = argv
        self.env = env
        self.state_dir = state_dir
        self.port = port
        self.log_path = state_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.timed_out = False
        self.stop_timeout = STOP_TIMEOUT
        self.start_failed = False
        self._log = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServerProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO_ROOT,
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        _LIVE.add(self.proc)
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self) -> str:
        return tail(self.log_text())

    def log_json(self) -> list[dict]:
        return parse_json_log(self.log_text())[0]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _fail_if_exited(self, waiting_for: str):
        if self.proc.poll() is not None:
            self.start_failed = True      # reported here; teardown need not repeat it
            pytest.fail(f"{self.label} (pid {self.pid}) exited with {self.proc.returncode} "
                        f"while waiting for {waiting_for}; log {self.log_path}:\n"
                        f"{self.log_tail()}", pytrace=False)

    def wait_healthy(self, timeout: float = START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            self._fail_if_exited("GET /healthz")
            try:
                r = requests.get(self.base_url + "/healthz", timeout=1)
                if r.status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() >= deadline:
                pytest.fail(f"{self.label} did not answer GET /healthz with 200 within "
                            f"{timeout} s; log:\n{self.log_tail()}", pytrace=False)
            time.sleep(0.05)

    def wait_log(self, predicate, timeout: float, what: str):
        """Wait until predicate(list of JSON log objects) is true."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate(self.log_json())
            if result:
                return result
            self._fail_if_exited(what)
            if time.monotonic() >= deadline:
                pytest.fail(f"{self.label}: timed out after {timeout} s waiting for {what}; "
                            f"log:\n{self.log_tail()}", pytrace=False)
            time.sleep(0.05)

    def send_signal(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        """Signal (if still running) and wait; SIGKILL after `timeout`. Idempotent."""
        if self.proc is None:
            return None
        if self.returncode is None:
            self.send_signal(sig)
            self.stop_timeout = timeout
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.timed_out = True
                self.proc.kill()
                self.proc.wait()
            self.returncode = self.proc.returncode
            _LIVE.discard(self.proc)
            if self._log:
                self._log.close()
        return self.returncode

    def assert_clean_exit(self):
        """Exit code 0 and no sanitizer report (ASan/LSan make the exit code non-zero)."""
        text = self.log_text()
        where = f"{self.label} (pid {self.pid}, log {self.log_path})"
        assert not self.timed_out, \
            f"{where} did not exit within {self.stop_timeout} s of the signal:\n{tail(text)}"
        assert self.returncode == 0, \
            f"{where} exited with {self.returncode}, expected 0:\n{tail(text)}"
        found = sanitizer_findings(text)
        assert not found, f"{where}: sanitizer report {found}:\n{tail(text)}"


def worker_ready_threads(objs: list[dict]) -> set:
    """Thread numbers of the `worker thread ready` log lines."""
    ready = set()
    for obj in objs:
        msg = str(obj.get("msg", ""))
        if "worker thread" in msg and "ready" in msg:
            ready.add(obj.get("thread"))
    return ready


class Launcher:
    """Starts natter-api / natter-worker processes and checks each stops cleanly."""

    def __init__(self):
        self.procs: list[ServerProcess] = []

    def api(self, *, state_dir: Path | None = None, args=(), wait: bool = True,
            label: str | None = None, **env_overrides) -> ServerProcess:
        state_dir = Path(state_dir) if state_dir else new_state_dir("api")
        port = free_port()
        env = api_env(state_dir, port, **env_overrides)
        srv = ServerProcess("natter-api", [bin_path("natter-api"), *args], env, state_dir, port,
                            label)
        self.procs.append(srv.start())
        if wait:
            srv.wait_healthy()
        return srv

    def worker(self, threads: int = 3, *, state_dir: Path | None = None, wait: bool = True,
               **env_overrides) -> ServerProcess:
        state_dir = Path(state_dir) if state_dir else new_state_dir("worker")
        env = common_env(state_dir, NATTER_WORKER_THREADS=str(threads), **env_overrides)
        w = ServerProcess("natter-worker", [bin_path("natter-worker")], env, state_dir)
        self.procs.append(w.start())
        if wait:
            w.wait_log(lambda objs: len(worker_ready_threads(objs)) >= threads,
                       START_TIMEOUT, f"{threads} 'worker thread ready' log lines")
        return w

    def close(self):
        errors = []
        for proc in reversed(self.procs):
            proc.stop()
            if proc.start_failed:
                continue
            try:
                proc.assert_clean_exit()
            except AssertionError as exc:
                errors.append(str(exc))
        self.procs.clear()
        if errors:
            pytest.fail("\n\n".join(errors), pytrace=False)


class PrivateRedis:
    """A throw-away redis-server on a unix socket (for tests that need empty counters)."""

    def __init__(self):
        exe = shutil.which("redis-server")
        if not exe:
            pytest.fail("redis-server not found on PATH (`make test` installs it)",
                        pytrace=False)
        self.dir = new_state_dir("redis")
        self.socket = str(self.dir / "r.sock")
        self.proc = subprocess.Popen(
            [exe, "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        _LIVE.add(self.proc)
        wait_for(lambda: self._pong(), 10, "private redis-server to answer PING")

    @property
    def url(self) -> str:
        return "unix://" + self.socket

    def _pong(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"private redis-server exited with {self.proc.returncode}",
                        pytrace=False)
        if not os.path.exists(self.socket):
            return False
        r = subprocess.run(["redis-cli", "-s", self.socket, "PING"], capture_output=True,
                           text=True, timeout=5)
        return r.stdout.strip() == "PONG"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        _LIVE.discard(self.proc)


# --------------------------------------------------------------------------- psql / redis

class RestartableRedis:
    """A private redis-server (no persistence) on a unix socket of its own that can be
    stopped and started again on the same socket path, so clients configured with .url
    reconnect by themselves. Only this server's pid is ever signalled."""

    def __init__(self, prefix: str = "redis"):
        self.exe = shutil.which("redis-server")
        if not self.exe:
            pytest.fail("redis-server not found on PATH (`make test` installs it)",
                        pytrace=False)
        self.dir = new_state_dir(prefix)
        self.socket = str(self.dir / "r.sock")
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return "unix://" + self.socket

    def cli(self, *args, timeout: float = 5) -> subprocess.CompletedProcess:
        return subprocess.run(["redis-cli", "-s", self.socket, *map(str, args)],
                              capture_output=True, text=True, timeout=timeout)

    def ping(self) -> bool:
        if not os.path.exists(self.socket):
            return False
        try:
            return self.cli("PING").stdout.strip() == "PONG"
        except subprocess.TimeoutExpired:
            return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        assert not self.running(), "redis-server already running"
        if os.path.exists(self.socket) and self.proc is None:
            os.unlink(self.socket)
        self.proc = subprocess.Popen(
            [self.exe, "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        _LIVE.add(self.proc)

        def up():
            if self.proc.poll() is not None:
                pytest.fail(f"private redis-server exited with {self.proc.returncode}",
                            pytrace=False)
            return self.ping()
        wait_for(up, 10, "the private redis-server to answer PING")

    def stop(self, how: str = "terminate"):
        """Stop this server and wait (bounded) until it exited: `terminate` = SIGTERM and
        the socket file removed; `shutdown` = SHUTDOWN NOSAVE, `kill` = SIGKILL, both
        leaving the socket file as a crash does (connections are then refused; redis-server
        replaces a stale one when it starts again)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if how == "shutdown":
                try:
                    self.cli("SHUTDOWN", "NOSAVE")
                except subprocess.TimeoutExpired:
                    pass
            elif how == "kill":
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        _LIVE.discard(self.proc)
        if how == "terminate" and os.path.exists(self.socket):
            os.unlink(self.socket)

    def close(self):
        if self.running():
            self.stop("shutdown")
        if self.running():
            self.stop("kill")


def psql(sql: str, *params, url: str | None = None, timeout: float = 30) -> str:
    """Run SQL with psql (-At, ON_ERROR_STOP) and return its stripped output.

    `$1`, `$2`, ... in `sql` are replaced by the params as properly quoted literals
    (psql variables `:'p1'`, passed with -v; the SQL goes through stdin because psql does
    not interpolate variables in -c)."""
    url = url or need_env("NATTER_TEST_DATABASE_URL")
    argv = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-d", url]
    for i, value in enumerate(params, 1):
        if value is None:
            raise ValueError("psql(): NULL parameters are not supported, write NULL in the SQL")
        argv += ["-v", f"p{i}={value}"]

    def placeholder(m):
        n = int(m.group(1))
        if not 1 <= n <= len(params):
            raise ValueError(f"psql(): ${n} has no parameter")
        return f":'p{n}'"

    script = re.sub(r"\$(\d+)", placeholder, sql)
    r = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"psql failed ({r.returncode}) running:\n{sql}\n{r.stderr}")
    return r.stdout.strip()


def psql_int(sql: str, *params, url: str | None = None) -> int:
    return int(psql(sql, *params, url=url))


def db_url_for(dbname: str, url: str | None = None) -> str:
    """The test database URL with another database name."""
    url = url or need_env("NATTER_TEST_DATABASE_URL")
    m = re.match(r"^(postgres(?:ql)?://[^/?#]*)(/[^?#]*)?(.*)$", url, re.S)
    if m:                          # URL: replace the path (urlunsplit drops an empty host)
        return f"{m.group(1)}/{dbname}{m.group(3)}"
    if re.search(r"(^|\s)dbname=\S+", url):
        return re.sub(r"(^|\s)dbname=\S+", lambda m: f"{m.group(1)}dbname={dbname}", url)
    return f"{url} dbname={dbname}"


def redis_cli(*args, socket_path: str | None = None) -> str:
    sock = socket_path or need_env("NATTER_TEST_REDIS_SOCKET")
    r = subprocess.run(["redis-cli", "-s", sock, *map(str, args)], capture_output=True,
                       text=True, timeout=10)
    if r.returncode != 0:
        raise AssertionError(f"redis-cli {' '.join(map(str, args))} failed: {r.stderr}")
    return r.stdout.strip()


def user_count(username: str | None = None) -> int:
    if username is None:
        return psql_int("SELECT count(*) FROM users")
    return psql_int("SELECT count(*) FROM users WHERE lower(username) = lower($1)", username)


# --------------------------------------------------------------------------- JWT

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _compact_json(obj) -> bytes:
    return jsonlib.dumps(obj, separators=(",", ":")).encode()


_HMAC_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def make_jwt(claims: dict, secret: str | bytes = TEST_JWT_SECRET, alg: str = "HS256",
             header: dict | None = None) -> str:
    """A JWS compact token signed with HMAC (HS256/HS384/HS512)."""
    head = {"alg": alg, "typ": "JWT"}
    head.update(header or {})
    signing_input = b64url(_compact_json(head)) + "." + b64url(_compact_json(claims))
    key = secret.encode() if isinstance(secret, str) else secret
    sig = hmac.new(key, signing_input.encode("ascii"), _HMAC_HASHES[alg]).digest()
    return signing_input + "." + b64url(sig)


def make_jwt_none(claims: dict) -> str:
    """An unsigned `alg: none` token (empty signature part)."""
    head = {"alg": "none", "typ": "JWT"}
    return b64url(_compact_json(head)) + "." + b64url(_compact_json(claims)) + "."


def decode_jwt(token: str) -> tuple[dict, dict, bytes]:
    """(header, claims, signature) without verifying anything."""
    head, payload, sig = token.split(".")
    return (jsonlib.loads(b64url_decode(head)), jsonlib.loads(b64url_decode(payload)),
            b64url_decode(sig))


def jwt_signature_ok(token: str, secret: str = TEST_JWT_SECRET) -> bool:
    head, payload, sig = token.split(".")
    expected = hmac.new(secret.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return hmac.compare_digest(expected, b64url_decode(sig))


def access_claims(user_id, device_id, *, iat: int | None = None, ttl: int = 900,
                  **extra) -> dict:
    """Claims of a normal access token (extra=None removes a claim)."""
    now = int(time.time()) if iat is None else iat
    claims = {"sub": str(user_id), "did": int(device_id), "iat": now, "exp": now + ttl,
              "iss": "natter"}
    for key, value in extra.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims


# --------------------------------------------------------------------------- OpenAPI

def _media_base(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def media_type(resp: requests.Response) -> str:
    """The response's media type without parameters, lower case."""
    return _media_base(resp.headers.get("Content-Type"))


def _is_json_media(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


FORMAT_CHECKER = FormatChecker(formats=())


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _check_date_time(value):
    if not isinstance(value, str):
        return True
    if not RFC3339_UTC_RE.match(value):
        raise ValueError(f"{value!r} is not an RFC 3339 UTC time like 2026-11-21T09:10:31.123Z")
    datetime.datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")
    return True


@FORMAT_CHECKER.checks("int64", raises=ValueError)
def _check_int64(value):
    if isinstance(value, int) and not -2**63 <= value < 2**63:
        raise ValueError(f"{value} out of int64 range")
    return True


@FORMAT_CHECKER.checks("int32", raises=ValueError)
def _check_int32(value):
    if isinstance(value, int) and not -2**31 <= value < 2**31:
        raise ValueError(f"{value} out of int32 range")
    return True


# Used only when the spec has no components.schemas.Problem.
FALLBACK_PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "code", "request_id"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"},
        "status": {"type": "integer"}, "detail": {"type": "string"},
        "instance": {"type": "string"}, "code": {"type": "string"},
        "request_id": {"type": "string"}, "field": {"type": "string"},
    },
}


def template_regex(template: str) -> tuple[re.Pattern, int]:
    parts = re.split(r"(\{[^}/]+\})", template)
    rx = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(rx), sum(1 for p in parts if p.startswith("{"))


def normalize_template(template: str) -> str:
    """/v1/users/{id} and /v1/users/:id both become /v1/users/{}."""
    template = re.sub(r"\{[^}/]*\}", "{}", template)
    return re.sub(r"(?<=/):[^/]+", "{}", template)


class OpenAPI:
    """The spec, with response checking of real responses."""

    def __init__(self, doc: dict):
        if not isinstance(doc, dict) or "paths" not in doc:
            raise ValueError("not an OpenAPI document (no `paths`)")
        self.doc = doc
        self._lock = threading.Lock()
        self._resolver = RefResolver.from_schema(doc)
        self._validators: dict = {}
        self._problem_ref = {"$ref": "#/components/schemas/Problem"}
        paths = []
        for template, item in (doc.get("paths") or {}).items():
            rx, nparams = template_regex(template)
            paths.append((nparams, len(paths), template, rx, item))
        paths.sort(key=lambda p: (p[0], p[1]))     # literal paths win over templated ones
        self._paths = [(t, rx, item) for _, _, t, rx, item in paths]

    # -- navigation
    def pointer(self, ref: str):
        if not ref.startswith("#"):
            raise KeyError(f"only local $refs are supported: {ref}")
        node = self.doc
        for token in ref[1:].split("/")[1:]:
            token = token.replace("~1", "/").replace("~0", "~")
            node = node[int(token)] if isinstance(node, list) else node[token]
        return node

    def deref(self, obj):
        seen = 0
        while isinstance(obj, dict) and "$ref" in obj:
            obj = self.pointer(obj["$ref"])
            seen += 1
            if seen > 20:
                raise ValueError("$ref loop")
        return obj

    def match_path(self, path: str):
        path = path.split("?", 1)[0]
        for template, rx, item in self._paths:
            if rx.fullmatch(path):
                return template, self.deref(item)
        return None

    def operations(self):
        """(METHOD, template, operation) of every operation."""
        for template, _, item in self._paths:
            item = self.deref(item)
            for method in HTTP_METHODS:
                if method in item:
                    yield method.upper(), template, item[method]

    def problem_schema(self):
        """Schema for problems of undocumented responses (404 no route, 405, preflight 403).

        Always the same object: validators are cached by id()."""
        if "Problem" in ((self.doc.get("components") or {}).get("schemas") or {}):
            return self._problem_ref
        return FALLBACK_PROBLEM_SCHEMA

    # -- validation
    def validate(self, schema, instance) -> list[str]:
        key = id(schema)                  # schemas are parts of self.doc: ids are stable
        with self._lock:                  # the resolver keeps a scope stack: one at a time
            validator = self._validators.get(key)
            if validator is None:
                validator = Draft202012Validator(schema, resolver=self._resolver,
                                                 format_checker=FORMAT_CHECKER)
                self._validators[key] = validator
            errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
            return [f"at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                    for e in errors]

    def _check_body(self, schema, resp, what) -> list[str]:
        try:
            data = jsonlib.loads(resp.content)
        except ValueError as exc:
            return [f"{what}: body is not JSON ({exc})"]
        return [f"{what}: schema: {m}" for m in self.validate(schema, data)]

    def _check_undocumented_problem(self, resp, what) -> list[str]:
        if media_type(resp) != "application/problem+json":
            return [f"{what}: expected application/problem+json, got "
                    f"{resp.headers.get('Content-Type')!r}"]
        return self._check_body(self.problem_schema(), resp, what)

    def check_response(self, method: str, path: str, resp: requests.Response) -> list[str]:
        """Everything about `resp` that disagrees with the spec (empty list: conforms)."""
        method = method.upper()
        status = resp.status_code
        what = f"{method} {path} -> {status}"
        match = self.match_path(path)
        if match is None:
            if status != 404:
                return [f"{what}: path is in no path template of the spec; only 404 allowed"]
            return self._check_undocumented_problem(resp, what)
        template, item = match
        op = item.get(method.lower())
        if op is None:
            if method == "OPTIONS":          # CORS preflight, answered for every path
                if status == 204:
                    return [f"{what}: preflight 204 has a body"] if resp.content else []
                if status == 403:
                    return self._check_undocumented_problem(resp, what)
                return [f"{what}: undocumented OPTIONS may only answer 204 or 403"]
            if status != 405:
                return [f"{what}: {method} is not an operation of {template}; only 405 allowed"]
            return self._check_undocumented_problem(resp, what)

        responses = op.get("responses") or {}
        robj = (responses.get(str(status)) or responses.get(f"{status // 100}XX")
                or responses.get("default"))
        if robj is None:
            return [f"{what}: status {status} is not documented for {method} {template} "
                    f"(documented: {sorted(map(str, responses))})"]
        robj = self.deref(robj)
        errs = []
        for hname, hobj in (robj.get("headers") or {}).items():
            hobj = self.deref(hobj)
            if hobj.get("required") and hname not in resp.headers:
                errs.append(f"{what}: required header {hname} missing")
        content = robj.get("content") or {}
        if not content:
            if resp.content:
                errs.append(f"{what}: the spec documents no body, got {len(resp.content)} "
                            f"bytes of {resp.headers.get('Content-Type')!r}")
            return errs
        got = media_type(resp)
        media = None
        for documented, mobj in content.items():
            if fnmatch.fnmatchcase(got, _media_base(documented)):
                media = self.deref(mobj)
                break
        if media is None:
            errs.append(f"{what}: Content-Type {resp.headers.get('Content-Type')!r} is not "
                        f"documented (documented: {list(content)})")
            return errs
        schema = media.get("schema")
        if schema is not None and _is_json_media(got):
            errs += self._check_body(schema, resp, what)
        return errs


_SPEC: OpenAPI | None = None
_SPEC_LOCK = threading.Lock()


def read_spec(path: Path) -> OpenAPI:
    if not path.exists():
        pytest.fail(f"{path} does not exist", pytrace=False)
    return OpenAPI(yaml.safe_load(path.read_text(encoding="utf-8")))


def load_spec() -> OpenAPI:
    """openapi/openapi.yaml, parsed once per session."""
    global _SPEC
    with _SPEC_LOCK:
        if _SPEC is None:
            _SPEC = read_spec(SPEC_PATH)
        return _SPEC


# --------------------------------------------------------------------------- HTTP client

# ---------------------------------------------------------------- metrics

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def metric_samples(text: str) -> dict:
    """{'name{labels}': value} of a Prometheus text page."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if m:
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def describe(resp: requests.Response) -> str:
    body = resp.content[:2000].decode("utf-8", "replace")
    return (f"{resp.request.method} {resp.request.path_url} -> {resp.status_code} "
            f"{resp.headers.get('Content-Type')!r}: {body}")


class _TimeoutAdapter(requests.adapters.HTTPAdapter):
    """Puts the timeout on the connection pool too: requests ignores `timeout` when it
    streams a chunked (generator) body, and would then wait for the server forever."""

    def init_poolmanager(self, *args, **kwargs):
        kwargs.setdefault("timeout", urllib3.Timeout(connect=HTTP_TIMEOUT, read=HTTP_TIMEOUT))
        super().init_poolmanager(*args, **kwargs)


class Client:
    """requests.Session that checks every response against the OpenAPI spec and the
    contract's invariants (X-Request-Id, problem bodies).

    raw=True skips the OpenAPI check only; the X-Request-Id and problem checks always run.
    json=None sends no JSON body (send `null` with data=b"null")."""

    def __init__(self, base_url: str, spec: OpenAPI | None = None):
        self.base_url = base_url.rstrip("/")
        self.spec = spec if spec is not None else load_spec()
        self.session = requests.Session()
        self.session.mount("http://", _TimeoutAdapter())

    def close(self):
        self.session.close()

    def request(self, method: str, path: str, *, json=None, data=None, headers=None,
                token=None, params=None, raw=False, timeout: float = HTTP_TIMEOUT):
        hdrs = {}
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        hdrs.update(headers or {})
        resp = self.session.request(method, self.base_url + path, json=json, data=data,
                                    headers=hdrs, params=params, timeout=timeout,
                                    allow_redirects=False)
        check_invariants(resp)
        if not raw:
            failures = self.spec.check_response(method, path.split("?", 1)[0], resp)
            assert not failures, ("response disagrees with openapi/openapi.yaml:\n  "
                                  + "\n  ".join(failures) + "\n" + describe(resp))
        return resp

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def patch(self, path, **kw):
        return self.request("PATCH", path, **kw)

    def put(self, path, **kw):
        return self.request("PUT", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def options(self, path, **kw):
        return self.request("OPTIONS", path, **kw)


def check_invariants(resp: requests.Response):
    """What holds for every response of the contract."""
    rid = resp.headers.get("X-Request-Id")
    assert rid, f"no X-Request-Id header: {describe(resp)}"
    assert REQUEST_ID_RE.match(rid), f"insane X-Request-Id {rid!r}: {describe(resp)}"
    media = media_type(resp)
    if resp.status_code >= 400:
        assert media == "application/problem+json", \
            f"error without application/problem+json: {describe(resp)}"
    if media == "application/problem+json":
        try:
            body = resp.json()
        except ValueError:
            raise AssertionError(f"problem body is not JSON: {describe(resp)}") from None
        assert isinstance(body, dict), f"problem body is not an object: {describe(resp)}"
        assert isinstance(body.get("code"), str) and body["code"], \
            f"problem without code: {describe(resp)}"
        assert body.get("status") == resp.status_code, \
            f"problem status {body.get('status')!r} != HTTP {resp.status_code}: {describe(resp)}"
        assert body.get("request_id") == rid, \
            f"problem request_id {body.get('request_id')!r} != X-Request-Id {rid!r}"


def assert_status(resp: requests.Response, *statuses: int):
    assert resp.status_code in statuses, f"expected {statuses}: {describe(resp)}"


def assert_problem(resp: requests.Response, status: int, code, field: str | None = None) -> dict:
    """Assert an RFC 9457 problem with this status and code (a str or a set of accepted
    codes) and, if given, `field`. Returns the body."""
    msg = describe(resp)
    assert resp.status_code == status, f"expected {status} {code}: {msg}"
    assert media_type(resp) == "application/problem+json", msg
    body = resp.json()
    codes = {code} if isinstance(code, str) else set(code)
    assert body.get("code") in codes, f"expected code {sorted(codes)}: {msg}"
    assert body.get("status") == status, msg
    assert body.get("type") == f"urn:natter:problem:{body['code']}", msg
    assert isinstance(body.get("title"), str) and body["title"], msg
    assert isinstance(body.get("detail", ""), str), msg
    assert body.get("instance") == resp.request.path_url.split("?", 1)[0], msg
    assert body.get("request_id") == resp.headers.get("X-Request-Id"), msg
    if field is not None:
        assert body.get("field") == field, f"expected field {field!r}: {msg}"
    return body


# --------------------------------------------------------------------------- accounts

def unique_username(prefix: str = "u") -> str:
    return prefix + secrets.token_hex(5)


def register(client: Client, username: str | None = None, password: str = TEST_PASSWORD,
             display_name: str | None = None) -> dict:
    """Register (asserting 201) and return the User."""
    body = {"username": username or unique_username(), "password": password}
    if display_name is not None:
        body["display_name"] = display_name
    r = client.post("/v1/auth/register", json=body)
    assert_status(r, 201)
    return r.json()


def login(client: Client, username: str, password: str = TEST_PASSWORD,
          device_name: str | None = None, platform: str | None = None) -> dict:
    """Log in (asserting 200) and return the TokenResponse."""
    body = {"username": username, "password": password}
    if device_name is not None:
        body["device_name"] = device_name
    if platform is not None:
        body["platform"] = platform
    r = client.post("/v1/auth/login", json=body)
    assert_status(r, 200)
    return r.json()


@dataclass
class Account:
    username: str
    password: str
    user: dict
    sessions: list = field(default_factory=list)   # TokenResponses, oldest first

    @property
    def id(self) -> int:
        return self.user["id"]

    @property
    def token(self) -> str:
        return self.sessions[0]["access_token"]

    @property
    def refresh_token(self) -> str:
        return self.sessions[0]["refresh_token"]

    @property
    def device_id(self) -> int:
        return self.sessions[0]["device_id"]

    def login(self, client: Client, **kw) -> dict:
        tokens = login(client, self.username, self.password, **kw)
        self.sessions.append(tokens)
        return tokens


def new_account(client: Client, devices: int = 1, display_name: str | None = None,
                prefix: str = "u") -> Account:
    """A registered user logged in on `devices` devices."""
    user = register(client, unique_username(prefix), TEST_PASSWORD, display_name)
    acct = Account(user["username"], TEST_PASSWORD, user)
    for i in range(devices):
        acct.login(client, device_name=f"device {i}")
    return acct


def contract_env_vars() -> list[str]:
    """NATTER_* variables of the binaries' table in docs/CONTRACT.md."""
    text = CONTRACT_PATH.read_text(encoding="utf-8")
    section = text.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    return sorted(set(re.findall(r"^\|\s*(NATTER_[A-Z0-9_]+)\s*\|", section, re.M)))
