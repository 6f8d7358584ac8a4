"""Direct access to the test PostgreSQL (psql) and the test Redis (redis-cli)."""
from __future__ import annotations

import re
import subprocess

from .env import need_env


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
