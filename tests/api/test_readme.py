"""The README keeps its promises: its configuration table is the same set of facts as
`--help` (both come from common/config.c's table), its curl walkthrough runs as pasted
against `make run`, Ctrl-C stops `make run` cleanly, and README.md and docs/ stand on
their own."""
import os
import re
import signal
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
import requests

from natterlib import (REPO_ROOT, child_env, free_port, live_pids_where, new_state_dir, run_binary,
                       tail,
                       wait_for)

ROW = re.compile(r"^\| `(NATTER_[A-Z_]+)` \| (api|worker|both) \| ([^|]*) \|")
HELP = re.compile(r"^  (NATTER_[A-Z_]+) +.*\(default: (.*)\)$")


def readme_table() -> dict:
    rows = {}
    for line in (REPO_ROOT / "README.md").read_text().splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3).strip())
    return rows


def help_table(binary: str) -> dict:
    proc = run_binary(binary, ["--help"])
    assert proc.returncode == 0, proc.output
    out = {}
    for line in proc.output.splitlines():
        m = HELP.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_readme_config_table_matches_help():
    """Every variable either binary's --help lists is in the README table with the same
    default and the right binary, and the README lists nothing the binaries do not read."""
    readme = readme_table()
    api, worker = help_table("natter-api"), help_table("natter-worker")
    assert api and worker
    assert set(readme) == set(api) | set(worker), "README table and --help disagree"
    for name, (used_by, default) in readme.items():
        expected = "both" if name in api and name in worker else ("api" if name in api else "worker")
        assert used_by == expected, f"{name}: README says {used_by}, binaries say {expected}"
        help_default = api.get(name, worker.get(name))
        assert default == help_default, f"{name}: README default {default!r}, --help {help_default!r}"


# --------------------------------------------------------------------------- make run

# scripts/run.sh (`make run`) in a state dir and on ports of its own (natter-api's and the
# worker's operator listener's), so it collides neither with the test servers nor with a
# developer's `make run` (.state, ports 8080 and 8081).

RUN_START_TIMEOUT = 180    # build check, initdb, migrations on a busy machine
RUN_STOP_TIMEOUT = 60


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class MakeRun:
    def __init__(self):
        self.state_dir = new_state_dir("make-run")
        os.chmod(self.state_dir, 0o755)       # the postgres OS user must reach pg/
        self.port = free_port()
        self.log_path = self.state_dir.parent / (self.state_dir.name + ".out")
        env = child_env({"NATTER_STATE_DIR": str(self.state_dir),
                         "NATTER_PORT": str(self.port),
                         "NATTER_WORKER_LISTEN": f"127.0.0.1:{free_port()}",
                         "NATTER_PWHASH_COST": "min"})
        self._log = open(self.log_path, "wb")
        # a session of its own: its process group plays the terminal's foreground group.
        # SIGINT as a terminal's shell leaves it for a foreground job: `make test` runs
        # pytest as a background job, which starts with SIGINT ignored, and a script that
        # starts with a signal ignored cannot trap it.
        self.proc = subprocess.Popen(["bash", str(REPO_ROOT / "scripts" / "run.sh")], env=env,
                                     cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_default_sigint)
        self.base_url = f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def wait_up(self):
        def up():
            if self.proc.poll() is not None:
                pytest.fail(f"scripts/run.sh exited with {self.proc.returncode}:\n"
                            f"{tail(self.output())}", pytrace=False)
            try:
                return requests.get(self.base_url + "/readyz", timeout=2).status_code == 200
            except requests.RequestException:
                return False
        wait_for(up, RUN_START_TIMEOUT, "`make run` (scripts/run.sh) to answer /readyz", 0.2)

    def server_pids(self) -> list[int]:
        m = re.search(r"pids:\s+natter-api (\d+), natter-worker (\d+)", self.output())
        assert m, f"no pids line in the output of scripts/run.sh:\n{tail(self.output())}"
        return [int(m.group(1)), int(m.group(2))]

    def stop(self):
        """Best effort for teardown: SIGTERM to the script, then its servers by pid."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=RUN_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def process_group_members(pgid: int) -> list[int]:
    """Pids whose process group is pgid (read from /proc)."""
    return live_pids_where("pgrp", pgid)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def make_run():
    run = MakeRun()
    try:
        run.wait_up()
        yield run
    finally:
        run.stop()


# A 1x1 PNG, built here so the walkthrough has a real cat.png to upload.
def tiny_png() -> bytes:
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x80\x00")) + chunk(b"IEND", b""))


def walkthrough_blocks() -> list[str]:
    """The ```sh blocks of the README's "Try it with curl" section, in order."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Try it with curl\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```$", section, re.S | re.M)


STATUS_LINE = re.compile(r"^WALKTHROUGH (\d{3}) ([A-Z]+) (\S+)$")


def test_readme_walkthrough_runs_as_pasted(make_run, tmp_path):
    """The README's "Try it with curl" blocks, pasted in order into one shell against
    `make run` (only localhost:8080 replaced by its port), all work: no command fails,
    every HTTP answer is 2xx (a 302 followed), the upload reaches the store, the
    downloaded cat-copy.png is the uploaded picture, and the walkthrough signs out last
    (so no block uses a revoked token)."""
    blocks = walkthrough_blocks()
    assert len(blocks) >= 4, "the walkthrough blocks were not found in README.md"
    script = "\n".join(blocks).replace("localhost:8080", f"localhost:{make_run.port}")
    png = tiny_png()
    (tmp_path / "cat.png").write_bytes(png)
    # every curl reports its answer on stderr; nothing else about the commands changes
    prologue = ("set -euo pipefail\n"
                "curl() { command curl -w '%{stderr}WALKTHROUGH %{http_code} %{method} "
                "%{url_effective}\\n' \"$@\"; }\n")
    (tmp_path / "walkthrough.sh").write_text(prologue + script)
    proc = subprocess.run(["bash", str(tmp_path / "walkthrough.sh")], cwd=tmp_path,
                          env=child_env({}), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=180)
    out = f"stdout:\n{tail(proc.stdout)}\nstderr:\n{tail(proc.stderr)}"
    assert proc.returncode == 0, f"the walkthrough failed ({proc.returncode}):\n{out}"
    calls = [m.groups() for m in map(STATUS_LINE.match, proc.stderr.splitlines()) if m]
    assert len(calls) >= 20, out
    bad = [c for c in calls if not c[0].startswith("2")]
    assert not bad, f"answers that are not 2xx: {bad}\n{out}"
    assert any(m == "PUT" and "/natter/" in u for _, m, u in calls), out
    assert any(m == "POST" and u.endswith("/typing") for _, m, u in calls), out
    downloads = [c for c in calls if c[1] == "GET" and "X-Amz-Signature=" in c[2]]
    assert downloads, f"the download did not follow the redirect to the store:\n{out}"
    assert (tmp_path / "cat-copy.png").read_bytes() == png
    status, method, url = calls[-1]
    assert (status, method) == ("204", "POST") and url.endswith("/v1/auth/logout"), calls[-1]
    assert sum(1 for _, m, u in calls if u.endswith("/v1/auth/logout")) == 1


def test_make_run_ctrl_c_stops_quietly(make_run):
    """Ctrl-C on `make run` stops both servers, PostgreSQL and Redis and says so, exit 0 —
    never "natter-api exited on its own". The terminal sends SIGINT to its whole foreground
    process group; here every member other than the script gets it first and exits
    before the script handles its own (the order a busy machine may well pick)."""
    api_pid, worker_pid = make_run.server_pids()
    script = make_run.proc.pid
    others = [p for p in process_group_members(script) if p != script]
    for pid in others:
        os.kill(pid, signal.SIGINT)
    wait_for(lambda: not any(alive(p) for p in others), 30,
             f"the other members of the foreground group {others} to exit")
    os.kill(script, signal.SIGINT)
    try:
        rc = make_run.proc.wait(timeout=RUN_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"scripts/run.sh did not stop within {RUN_STOP_TIMEOUT} s of Ctrl-C:\n"
                    f"{tail(make_run.output())}", pytrace=False)
    lines = [ln for ln in make_run.output().splitlines() if ln.startswith("natter:")]
    assert rc == 0, f"exit status {rc}; its messages: {lines}"
    assert "exited on its own" not in make_run.output(), lines
    assert lines[-2:] == ["natter: stopping…",
                          f"natter: stopped (data kept in {make_run.state_dir})"], lines
    for pid in (api_pid, worker_pid):
        assert not alive(pid), f"pid {pid} still runs after Ctrl-C"
    with pytest.raises(requests.RequestException):
        requests.get(make_run.base_url + "/healthz", timeout=2)


def test_readme_and_docs_stand_on_their_own():
    """README.md and docs/ link nothing outside the repository (no ../shared/DESIGN.md),
    and every repository file they point at exists."""
    for doc in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]:
        text = doc.read_text(encoding="utf-8")
        assert "../" not in text, f"{doc.name} points outside the repository"
        for ref in set(re.findall(r"`((?:docs|bench|scripts|openapi|migrations)/[\w./-]+\.\w+)`",
                                  text)):
            assert (REPO_ROOT / ref).exists(), f"{doc.name} names {ref}, which does not exist"


def test_readme_capacity_section_rests_on_dated_measurements():
    """The README's "Capacity" section (issue 12): each row of its first table, the
    measured per-box figures, names the bench/README.md section it comes from, and that
    section exists and is dated; the section states its assumptions and its arithmetic
    names the API boxes, Citus workers and Redis nodes and what saturates first."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n## Capacity\n" in text, "README.md has no Capacity section"
    section = text.split("\n## Capacity\n", 1)[1].split("\n## ", 1)[0]
    bench = (REPO_ROOT / "bench" / "README.md").read_text(encoding="utf-8")
    headings = {m.group(1).strip() for m in re.finditer(r"^#{2,4} (.+)$", bench, re.M)}
    table = re.search(r"^(\|.*\|\n)+", section, re.M)
    assert table, "the Capacity section has no table of measured figures"
    rows = [r for r in table.group(0).splitlines()[2:] if r.strip()]
    assert len(rows) >= 6, rows
    for row in rows:
        m = re.search(r'`bench/README\.md` "([^"]+)"', row)
        assert m, f"no bench/README.md section named in: {row}"
        assert m.group(1) in headings, f"bench/README.md has no section {m.group(1)!r}"
        assert re.search(r"\d{4}-\d{2}-\d{2}", m.group(1)), f"section {m.group(1)!r} has no date"
    for words in ("ssumption", "API box", "Citus worker", "Redis", "saturate", "not measured"):
        assert words in section, f"the Capacity section does not mention {words!r}"
