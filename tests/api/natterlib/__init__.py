"""Helpers for the Natter black-box API tests.

conftest.py turns these into fixtures; test modules import the plain helpers from here
(`from natterlib import ...`). Nothing in this package talks to a server at import time, so
`pytest --collect-only` works without a running environment.

The helpers live in these modules; this file re-exports their public names:

- env        repository paths, the NATTER_TEST_* environment, the binaries' environment
- processes  run_binary, natter-api / natter-worker servers, private redis-servers
- db         psql and redis-cli against the test PostgreSQL and Redis
- tokens     forging and decoding JWTs
- openapi    the spec and the checking of responses against it
- client     the OpenAPI-checking HTTP client and assertions on responses
- accounts   registered users logged in on devices

Module state (the running children, the parsed spec) lives in its own module only and is
reached through its functions; the names here are copies of bindings, not the state.
"""
from .env import (CONTRACT_PATH, MIGRATIONS_DIR, REPO_ROOT, REQUIRED_ENV, REUSE_GRACE, SPEC_PATH,
                  TEST_JWT_SECRET, TEST_S3_ACCESS_KEY, TEST_S3_BUCKET, TEST_S3_REGION,
                  TEST_S3_SECRET_KEY, api_env, bin_path, child_env, common_env,
                  contract_env_vars, free_port, missing_env, need_env, new_state_dir,
                  state_root)
from .processes import (SANITIZER_MARKERS, START_TIMEOUT, STOP_TIMEOUT, Launcher, PrivateRedis,
                        RestartableRedis, ServerProcess, parse_json_log, run_binary,
                        live_pids_where, sanitizer_findings, served_by, tail, wait_for,
                        worker_ready_threads)
from .db import db_url_for, psql, psql_int, redis_cli, user_count
from .tokens import (access_claims, b64url, b64url_decode, decode_jwt, jwt_signature_ok,
                     make_jwt, make_jwt_none)
from .openapi import (FALLBACK_PROBLEM_SCHEMA, FORMAT_CHECKER, HTTP_METHODS, RFC3339_UTC_RE,
                      OpenAPI, load_spec, media_type, normalize_template, read_spec,
                      template_regex)
from .client import (HTTP_TIMEOUT, REQUEST_ID_RE, Client, assert_problem, assert_status,
                     check_invariants, describe, metric_samples)
from .accounts import TEST_PASSWORD, Account, login, new_account, register, unique_username

__all__ = [
    "CONTRACT_PATH", "MIGRATIONS_DIR", "REPO_ROOT", "REQUIRED_ENV", "REUSE_GRACE", "SPEC_PATH",
    "TEST_JWT_SECRET",
    "TEST_S3_ACCESS_KEY", "TEST_S3_BUCKET", "TEST_S3_REGION", "TEST_S3_SECRET_KEY", "api_env",
    "bin_path", "child_env", "common_env", "contract_env_vars", "free_port", "missing_env",
    "need_env", "new_state_dir", "state_root",
    "SANITIZER_MARKERS", "START_TIMEOUT", "STOP_TIMEOUT", "Launcher", "PrivateRedis",
    "RestartableRedis", "ServerProcess", "live_pids_where", "parse_json_log", "run_binary",
    "sanitizer_findings",
    "served_by", "tail", "wait_for", "worker_ready_threads",
    "db_url_for", "psql", "psql_int", "redis_cli", "user_count",
    "access_claims", "b64url", "b64url_decode", "decode_jwt", "jwt_signature_ok", "make_jwt",
    "make_jwt_none",
    "FALLBACK_PROBLEM_SCHEMA", "FORMAT_CHECKER", "HTTP_METHODS", "RFC3339_UTC_RE", "OpenAPI",
    "load_spec", "media_type", "normalize_template", "read_spec", "template_regex",
    "HTTP_TIMEOUT", "REQUEST_ID_RE", "Client", "assert_problem", "assert_status",
    "check_invariants", "describe", "metric_samples",
    "TEST_PASSWORD", "Account", "login", "new_account", "register", "unique_username",
]
