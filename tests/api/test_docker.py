"""The container files, checked statically (no Docker engine on the test machines):
docker-compose.yml lets the worker reach the api service's embedded store, and
.dockerignore keeps development secrets, the database, .git and build output out of the
image's build context while the sources stay in (issue 11, item 17)."""
import fnmatch
from urllib.parse import urlsplit

import yaml

from natterlib import REPO_ROOT


def compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def test_worker_reaches_api_store_not_its_own_loopback():
    """The worker's NATTER_STORE_URL names the api service on the port natter-api listens
    on inside its container (8080, the published one), not 127.0.0.1/localhost; the api
    service keeps NATTER_PUBLIC_URL for clients."""
    services = compose()["services"]
    worker_env = services["worker"]["environment"]
    url = urlsplit(worker_env["NATTER_STORE_URL"])
    assert url.scheme == "http" and url.hostname == "api", worker_env["NATTER_STORE_URL"]
    api_port = int(services["api"]["environment"].get("NATTER_PORT", 8080))
    assert (url.port or 80) == api_port
    assert any(str(p).endswith(f":{api_port}") for p in services["api"]["ports"])
    assert "NATTER_PUBLIC_URL" in services["api"]["environment"]
    # the worker gets every shared setting too (database, redis, S3 keys)
    for name in ("NATTER_DATABASE_URL", "NATTER_REDIS_URL", "NATTER_S3_SECRET_KEY"):
        assert name in worker_env, name


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rules, as far as this file uses them: patterns relative to
    the context root, a trailing '/' is dropped, a directory's pattern excludes everything
    under it, '**' matches any number of directories, '!' re-includes."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for raw in patterns:
        neg = raw.startswith("!")
        pat = raw[1:] if neg else raw
        pat = pat.strip("/")
        pats = {pat}
        if pat.startswith("**/"):
            pats.add(pat[3:])
        if any(fnmatch.fnmatchcase(p, q) for p in prefixes for q in pats):
            ignored = not neg
    return ignored


def test_dockerignore_keeps_secrets_and_build_output_out():
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    for path in (".state/jwt-secret", ".state/s3-secret", ".state/pg/data/PG_VERSION",
                 ".state/blobs/x.data", ".git/HEAD", ".git/objects/ab/cdef",
                 "build/natter-api", "build-asan/obj/common/config.o",
                 ".cache/libmicrohttpd-0.9.75-natter1/lib/libmicrohttpd.a", "bench/out/run.json",
                 "tests/api/__pycache__/conftest.cpython-311.pyc"):
        assert _ignored(path, patterns), f"{path} would be sent to the Docker daemon"
    for path in ("Makefile", "api/main.c", "common/config.c", "workers/main.c",
                 "migrations/001_initial.sql", "openapi/openapi.yaml", "scripts/embed.sh",
                 "Dockerfile", "scripts/build-mhd.sh", "third_party/libmicrohttpd/libmicrohttpd_0.9.75.orig.tar.xz",
                 "third_party/libmicrohttpd/patches/0002-error-during-header-parsing-sent-once.patch"):
        assert not _ignored(path, patterns), f"{path} is needed to build the image"
