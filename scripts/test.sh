#!/usr/bin/env bash
# `make test`: build the normal and the sanitizer builds, start a throw-away PostgreSQL +
# Redis under /tmp, run the C unit tests and the pytest API suite against both builds.
# Every step runs even if an earlier one failed; the exit status is non-zero if any failed.
# The last lines printed are the runners' own summaries (the sanitizer pytest run last).
#
# NATTER_PYTEST_ARGS: extra pytest arguments (word-split), e.g. NATTER_PYTEST_ARGS='-k auth -x'.
set -euo pipefail

# shellcheck source=scripts/env.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/env.sh"

REPO=$(natter_repo_root)
PYTHON=/usr/bin/python3 # not the python3 first on PATH: Debian's pytest & co. live here

natter_ensure_packages
make -C "$REPO" all asan

STATE_DIR=$(mktemp -d /tmp/natter-test.XXXXXX)
# mktemp makes it 0700; let the postgres OS user reach $STATE_DIR/pg.
chmod 755 "$STATE_DIR"

cleanup() {
    local pgdir=
    natter_redis_stop "$STATE_DIR" || true
    natter_pg_stop "$STATE_DIR" || true
    if [[ -L $STATE_DIR/pg ]]; then
        pgdir=$(readlink -- "$STATE_DIR/pg" || true)
    fi
    if [[ $pgdir == /tmp/natter-pg-* ]]; then
        rm -rf -- "$pgdir"
    fi
    rm -rf -- "$STATE_DIR"
}
trap 'rc=$?; trap - EXIT; cleanup; exit "$rc"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

natter_pg_start "$STATE_DIR" test
natter_redis_start "$STATE_DIR" test

export NATTER_TEST_STATE_DIR=$STATE_DIR
export NATTER_TEST_DATABASE_URL=$NATTER_DATABASE_URL # database `natter`
export NATTER_TEST_REDIS_URL=$NATTER_REDIS_URL
export NATTER_TEST_REDIS_SOCKET=$NATTER_REDIS_SOCKET
export NATTER_TEST_PG_SOCKET_DIR=$NATTER_PG_SOCKET_DIR
export PYTHONDONTWRITEBYTECODE=1

SAN_ENV=(
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
)
if [[ -f $REPO/tests/lsan.supp ]]; then
    SAN_ENV+=("LSAN_OPTIONS=suppressions=$REPO/tests/lsan.supp:print_suppressions=0")
fi

read -r -a PYTEST_EXTRA <<<"${NATTER_PYTEST_ARGS:-}"

failures=0

# step HEADING COMMAND...: print the heading, run, record failure, go on.
step() {
    local heading=$1 rc=0
    shift
    printf '\n== %s ==\n' "$heading"
    "$@" || rc=$?
    if ((rc != 0)); then
        failures=$((failures + 1))
    fi
}

# Fresh database `natter` (dropped and recreated as role natter over the socket) and an
# empty Redis, so each pytest run starts clean.
reset_state() {
    local out
    if ! out=$(PGOPTIONS='-c client_min_messages=warning' \
        "$NATTER_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$NATTER_PG_SOCKET_DIR" \
        -p "$NATTER_PG_PORT" -U natter -d postgres \
        -c 'DROP DATABASE IF EXISTS natter WITH (FORCE)' \
        -c 'CREATE DATABASE natter OWNER natter' 2>&1); then
        printf 'natter: cannot reset the test database:\n%s\n' "$out" >&2
        return 1
    fi
    if [[ $(redis-cli -s "$NATTER_REDIS_SOCKET" flushall 2>&1 </dev/null) != OK ]]; then
        echo "natter: cannot flush the test Redis" >&2
        return 1
    fi
}

# run_pytest BIN_DIR [VAR=value...]
run_pytest() {
    local bindir=$1
    shift
    reset_state || return 1
    (cd "$REPO" && env "$@" NATTER_BIN_DIR="$bindir" "$PYTHON" -m pytest -q \
        -p no:cacheprovider "${PYTEST_EXTRA[@]}" "$REPO/tests/api")
}

cd "$REPO"
step "unit tests (normal build)" "$REPO/build/unit-tests"
step "unit tests (sanitizer build)" env "${SAN_ENV[@]}" "$REPO/build-asan/unit-tests"
step "API tests (normal build)" run_pytest "$REPO/build"
step "API tests (sanitizer build)" run_pytest "$REPO/build-asan" "${SAN_ENV[@]}"

((failures == 0))
