"""The README's configuration table is the same set of facts as `--help` (both come from
common/config.c's table; this keeps the hand-written README honest)."""
import re

from natterlib import REPO_ROOT, run_binary

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
