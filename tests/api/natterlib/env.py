"""Paths in the repository, the test environment (the NATTER_TEST_* variables, scratch
directories, free ports) and the environment natter-api, natter-api migrate and
natter-worker are started with.
"""
from __future__ import annotations

import os
import re
import socket
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
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

REQUIRED_ENV = {
    "NATTER_BIN_DIR": "directory holding natter-api and natter-worker",
    "NATTER_TEST_DATABASE_URL": "libpq URL of the empty test database",
    "NATTER_TEST_REDIS_URL": "unix:// URL of the test Redis",
    "NATTER_TEST_REDIS_SOCKET": "path of the test Redis socket",
    "NATTER_TEST_STATE_DIR": "scratch directory for the tests",
}


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


REUSE_GRACE = 2  # seconds: NATTER_REFRESH_REUSE_GRACE of the tests' servers


def api_env(state_dir: Path, port: int, **overrides) -> dict:
    base = {
        "NATTER_LOGIN_MAX_PER_USER": "1000",
        "NATTER_LOGIN_MAX_PER_IP": "100000",
        # every test registers its users from 127.0.0.1: no registration limit
        # (tests of the limit set their own)
        "NATTER_RATE_REGISTER_IP_BURST": "0",
        "NATTER_RATE_REGISTER_ALL_BURST": "0",
        # short, so that tests of refresh-token reuse need not wait 30 s (REUSE_GRACE)
        "NATTER_REFRESH_REUSE_GRACE": str(REUSE_GRACE),
        "NATTER_LISTEN_ADDR": "127.0.0.1",
        "NATTER_PORT": str(port),
        "NATTER_HTTP_THREADS": "4",
        # pre-signed URLs of the embedded store must point at this very server
        "NATTER_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    base.update(overrides)
    return common_env(state_dir, **base)


def contract_env_vars() -> list[str]:
    """NATTER_* variables of the binaries' table in docs/CONTRACT.md."""
    text = CONTRACT_PATH.read_text(encoding="utf-8")
    section = text.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    return sorted(set(re.findall(r"^\|\s*(NATTER_[A-Z0-9_]+)\s*\|", section, re.M)))
