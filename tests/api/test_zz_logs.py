"""Every line natter-api and natter-worker write is one JSON object, with ids typed the
same everywhere (issue 11). The file is named to run last: its final test reads the log
of every server the suite started (natter-api.log / natter-worker.log under the test
state directory), so whatever the other tests made the servers say is checked too."""
import json

from natterlib import common_env, new_state_dir, run_binary, state_root

# ids that are numbers wherever they appear
NUMERIC_IDS = {"user_id", "device_id", "chat_id", "seq", "sender_id", "member_id"}


def json_lines(text: str) -> tuple[list[dict], list[str]]:
    """(objects, offending lines) of a log; the last line counts only when complete."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    objs, bad = [], []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            bad.append(line)
            continue
        (objs if isinstance(obj, dict) else bad).append(obj if isinstance(obj, dict) else line)
    return objs, bad


def assert_all_json(output: str, what: str) -> list[dict]:
    objs, bad = json_lines(output)
    assert not bad, f"{what}: lines that are not JSON objects: {bad[:5]}"
    return objs


def test_migrate_output_is_json(migrated):
    """`natter-api migrate` on an up-to-date database (where PostgreSQL says NOTICE:
    relation "schema_migrations" already exists) writes only JSON lines; with
    NATTER_LOG_LEVEL=debug the notice itself is a JSON line."""
    env = common_env(new_state_dir("migrate-json"))
    for _ in range(2):
        proc = run_binary("natter-api", ["migrate"], env, timeout=60)
        assert proc.returncode == 0, proc.output
        assert_all_json(proc.output, "natter-api migrate")
    env["NATTER_LOG_LEVEL"] = "debug"
    proc = run_binary("natter-api", ["migrate"], env, timeout=60)
    objs = assert_all_json(proc.output, "natter-api migrate (debug)")
    notices = [o for o in objs if o.get("msg") == "postgres notice"]
    assert notices and all(o.get("severity") == "NOTICE" for o in notices), proc.output


def test_startup_errors_are_json():
    """Start-up failures of both binaries — a bad setting, an unknown command or
    argument, an unreachable database — are JSON lines (level error) and a non-zero
    exit, never plain text."""
    runs = [
        ("natter-api", [], {"NATTER_PORT": "abc"}),
        ("natter-api", ["bogus"], {}),
        ("natter-api", [], {"NATTER_DATABASE_URL": "postgresql:///natter?host=/nonexistent-dir"}),
        ("natter-worker", [], {"NATTER_WORKER_THREADS": "0"}),
        ("natter-worker", ["bogus"], {}),
    ]
    for name, args, overrides in runs:
        env = common_env(new_state_dir("startup-json"), **overrides)
        proc = run_binary(name, args, env, timeout=30)
        what = f"{name} {' '.join(args)} {overrides}"
        assert proc.returncode != 0, what
        objs = assert_all_json(proc.output, what)
        assert any(o.get("level") == "error" for o in objs), f"{what}: no error line:\n{proc.output}"


def test_every_server_log_line_is_json():
    """Every complete line of every natter-api and natter-worker log this suite produced
    is a JSON object with ts, level, service and msg; user, device and chat ids are
    numbers, and any *_id field has one JSON type across all of them."""
    logs = sorted(p for p in state_root().rglob("*.log")
                  if p.name in ("natter-api.log", "natter-worker.log"))
    assert logs, f"no server logs under {state_root()}"
    types: dict[str, set] = {}
    where: dict[tuple, str] = {}
    bad_lines = []
    for path in logs:
        objs, bad = json_lines(path.read_bytes().decode("utf-8", "replace"))
        bad_lines += [f"{path}: {line[:200]}" for line in bad]
        for o in objs:
            for key in ("ts", "level", "service", "msg"):
                assert isinstance(o.get(key), str), f"{path}: {key} missing in {o}"
            for key, value in o.items():
                if key in NUMERIC_IDS:
                    assert isinstance(value, int) and not isinstance(value, bool), \
                        f"{path}: {key} is {type(value).__name__} in {o}"
                if key.endswith("_id"):
                    t = type(value).__name__
                    types.setdefault(key, set()).add(t)
                    where.setdefault((key, t), f"{path}: {json.dumps(o)[:300]}")
    assert not bad_lines, "lines that are not JSON objects:\n" + "\n".join(bad_lines[:10])
    mixed = {k: sorted(t) for k, t in types.items() if len(t) > 1}
    assert not mixed, "ids typed differently: " + "; ".join(
        f"{k}: " + ", ".join(where[(k, t)] for t in ts) for k, ts in mixed.items())
