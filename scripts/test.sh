#!/usr/bin/env bash
# `make test`: build the normal and the sanitizer builds, start a throw-away PostgreSQL +
# Redis under /tmp, run the C unit tests, the fuzz harnesses briefly (NATTER_FUZZ_SECONDS,
# 5 s each; `make fuzz` runs them longer) and the pytest API suite against both builds.
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
# shellcheck disable=SC2086  # a list of package names
natter_ensure_packages $NATTER_TEST_DEB_PACKAGES
make -C "$REPO" -j2 all asan
make -C "$REPO" -s fuzz-build

STATE_DIR=$(mktemp -d /tmp/natter-test.XXXXXX)
# mktemp makes it 0700; let the postgres OS user reach $STATE_DIR/pg.
chmod 755 "$STATE_DIR"

cleanup() {
    natter_redis_stop "$STATE_DIR/san" 2>/dev/null || true
    natter_private_stop "$STATE_DIR"
}
trap 'rc=$?; trap - EXIT; cleanup; exit "$rc"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

natter_pg_start "$STATE_DIR" test
# The two API test runs (normal and sanitizer build) run at the same time, each
# with its own database and its own Redis: most of their time is spent waiting
# (presence timeouts, retries, outages), so together they take little longer
# than one.
mkdir -p "$STATE_DIR/san"
chmod 755 "$STATE_DIR/san"
natter_redis_start "$STATE_DIR/san" test
SAN_REDIS_URL=$NATTER_REDIS_URL
SAN_REDIS_SOCKET=$NATTER_REDIS_SOCKET
natter_redis_start "$STATE_DIR" test

export NATTER_TEST_STATE_DIR=$STATE_DIR
export NATTER_TEST_DATABASE_URL=$NATTER_DATABASE_URL # database `natter`
export NATTER_TEST_REDIS_URL=$NATTER_REDIS_URL
export NATTER_TEST_REDIS_SOCKET=$NATTER_REDIS_SOCKET
export NATTER_TEST_PG_SOCKET_DIR=$NATTER_PG_SOCKET_DIR
SAN_DATABASE_URL=${NATTER_DATABASE_URL/\/\/\/natter\?/\/\/\/natter_san?}
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

# reset_state DBNAME REDIS_SOCKET: a fresh database (dropped and recreated as role
# natter over the socket) and an empty Redis, so each pytest run starts clean.
reset_state() {
    local db=$1 sock=$2 out
    if ! out=$(PGOPTIONS='-c client_min_messages=warning' \
        "$NATTER_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$NATTER_PG_SOCKET_DIR" \
        -p "$NATTER_PG_PORT" -U natter -d postgres \
        -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" \
        -c "CREATE DATABASE $db OWNER natter" 2>&1); then
        printf 'natter: cannot reset the test database %s:\n%s\n' "$db" "$out" >&2
        return 1
    fi
    if [[ $(redis-cli -s "$sock" flushall 2>&1 </dev/null) != OK ]]; then
        echo "natter: cannot flush the test Redis $sock" >&2
        return 1
    fi
}

# run_pytest OUTFILE BIN_DIR DBNAME DB_URL REDIS_URL REDIS_SOCKET STATE [VAR=value...]
run_pytest() {
    local out=$1 bindir=$2 db=$3 url=$4 rurl=$5 rsock=$6 state=$7
    shift 7
    reset_state "$db" "$rsock" >"$out" 2>&1 || return 1
    (cd "$REPO" && env "$@" NATTER_BIN_DIR="$bindir" NATTER_TEST_DATABASE_URL="$url" \
        NATTER_TEST_REDIS_URL="$rurl" NATTER_TEST_REDIS_SOCKET="$rsock" NATTER_TEST_STATE_DIR="$state" \
        "$PYTHON" -m pytest -q -p no:cacheprovider "${PYTEST_EXTRA[@]}" "$REPO/tests/api") >>"$out" 2>&1
}

cd "$REPO"
step "layer rule (include paths)" "$REPO/scripts/check-layers.sh"
step "formatting (clang-format)" "$REPO/scripts/check-format.sh"
step "OpenAPI lint (Redocly, Spectral)" "$REPO/scripts/lint-spec.sh"
step "unit tests (normal build)" "$REPO/build/unit-tests"
step "unit tests (sanitizer build)" env "${SAN_ENV[@]}" "$REPO/build-asan/unit-tests"
step "fuzz harnesses (libFuzzer, ${NATTER_FUZZ_SECONDS:-5} s each)" bash "$REPO/scripts/fuzz.sh" "${NATTER_FUZZ_SECONDS:-5}"
run_pytest "$STATE_DIR/pytest-normal.out" "$REPO/build" natter "$NATTER_TEST_DATABASE_URL" \
    "$NATTER_TEST_REDIS_URL" "$NATTER_TEST_REDIS_SOCKET" "$STATE_DIR" &
normal_pid=$!
run_pytest "$STATE_DIR/pytest-san.out" "$REPO/build-asan" natter_san "$SAN_DATABASE_URL" \
    "$SAN_REDIS_URL" "$SAN_REDIS_SOCKET" "$STATE_DIR/san" "${SAN_ENV[@]}" &
san_pid=$!
normal_rc=0
san_rc=0
wait "$normal_pid" || normal_rc=$?
wait "$san_pid" || san_rc=$?
# shown one after the other, so the runners' own summaries end the output
step "API tests (normal build)" sh -c 'cat "$1"; exit "$2"' sh "$STATE_DIR/pytest-normal.out" "$normal_rc"
step "API tests (sanitizer build)" sh -c 'cat "$1"; exit "$2"' sh "$STATE_DIR/pytest-san.out" "$san_rc"

((failures == 0))
