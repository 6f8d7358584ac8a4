"""Child processes: one-shot runs of the binaries, natter-api / natter-worker servers
(ServerProcess, Launcher) and private redis-servers (PrivateRedis, RestartableRedis).
Every child is killed at interpreter exit if a test left it running.
"""
from __future__ import annotations

import atexit
import json as jsonlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from .env import REPO_ROOT, api_env, bin_path, common_env, free_port, new_state_dir

START_TIMEOUT = 15         # seconds until /healthz answers (or a worker is ready)
STOP_TIMEOUT = 15          # seconds between SIGTERM and exit

SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "AddressSanitizer:DEADLYSIGNAL",
    "runtime error:",            # UBSan
)


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


# The children still running, killed at exit. Changed in place only, never rebound.
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


def served_by(servers: list, request_id: str, timeout: float = 15) -> int:
    """Index of the server (ServerProcess) whose access log has the request, waiting up to
    `timeout` s for the line (logs are written asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        for i, srv in enumerate(servers):
            for o in srv.log_json():
                if o.get("msg") == "request" and o.get("request_id") == request_id:
                    return i
        if time.monotonic() >= deadline:
            pytest.fail(f"no access-log line for request {request_id} in any of "
                        f"{len(servers)} processes", pytrace=False)
        time.sleep(0.1)


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
            label: str | None = None, port: int | None = None,
            **env_overrides) -> ServerProcess:
        """port: a free one unless given (several natter-api may share one port)."""
        state_dir = Path(state_dir) if state_dir else new_state_dir("api")
        port = port or free_port()
        env = api_env(state_dir, port, **env_overrides)
        srv = ServerProcess("natter-api", [bin_path("natter-api"), *args], env, state_dir, port,
                            label)
        self.procs.append(srv.start())
        if wait:
            srv.wait_healthy()
        return srv

    def worker(self, threads: int = 3, *, state_dir: Path | None = None, wait: bool = True,
               port: int | None = None, **env_overrides) -> ServerProcess:
        """port: of the worker's operator listener on 127.0.0.1 (its .base_url), a free
        one unless given; a NATTER_WORKER_LISTEN override wins (.port is then `port`)."""
        state_dir = Path(state_dir) if state_dir else new_state_dir("worker")
        if "NATTER_WORKER_LISTEN" not in env_overrides:
            port = port or free_port()
            env_overrides["NATTER_WORKER_LISTEN"] = f"127.0.0.1:{port}"
        env = common_env(state_dir, NATTER_WORKER_THREADS=str(threads), **env_overrides)
        w = ServerProcess("natter-worker", [bin_path("natter-worker")], env, state_dir, port)
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


def live_pids_where(field: str, value: int) -> list[int]:
    """Live (not zombie) pids whose process group (`field` "pgrp") or session ("session")
    is `value`, read from /proc."""
    index = {"pgrp": 2, "session": 3}[field]
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()   # state ppid pgrp session …
        if int(fields[index]) == value and fields[0] != "Z":
            pids.append(int(entry))
    return pids
