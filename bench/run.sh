#!/usr/bin/env bash
# `make bench`: start a private PostgreSQL + Redis + natter-api (like make test),
# then measure with wrk (bounded: fixed duration per scenario) and print figures.
#
# Scenarios so far (the long-poll and send scenarios of DESIGN.md arrive with
# those features):
#   healthz     bare HTTP path: router, request id, access log, metrics
#   users_me    authenticated read: JWT verify + device check + one query
# Record results with the date in bench/README.md.
#
# BENCH_SECONDS (default 10), BENCH_CONNECTIONS (default 64).
set -euo pipefail

# shellcheck source=scripts/env.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../scripts" && pwd -P)/env.sh"
REPO=$(natter_repo_root)
SECS=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNECTIONS:-64}

NATTER_DEB_PACKAGES="$NATTER_DEB_PACKAGES wrk" natter_ensure_packages
make -s -C "$REPO" all >/dev/null

STATE_DIR=$(mktemp -d /tmp/natter-bench.XXXXXX)
chmod 755 "$STATE_DIR"
api_pid=
cleanup() {
    if [[ -n $api_pid ]]; then
        kill -TERM "$api_pid" 2>/dev/null || true
        wait "$api_pid" 2>/dev/null || true
    fi
    natter_redis_stop "$STATE_DIR" || true
    natter_pg_stop "$STATE_DIR" || true
    if [[ -L $STATE_DIR/pg ]]; then
        local d
        d=$(readlink -- "$STATE_DIR/pg" || true)
        [[ $d == /tmp/natter-pg-* ]] && rm -rf -- "$d"
    fi
    rm -rf -- "$STATE_DIR"
}
trap cleanup EXIT

natter_pg_start "$STATE_DIR" >/dev/null
natter_redis_start "$STATE_DIR" test >/dev/null
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export NATTER_DATABASE_URL NATTER_REDIS_URL
"$REPO/build/natter-api" migrate 2>/dev/null
NATTER_PORT=$PORT NATTER_STATE_DIR=$STATE_DIR/api NATTER_PWHASH_COST=min NATTER_LOG_LEVEL=warn \
    "$REPO/build/natter-api" 2>"$STATE_DIR/api.log" &
api_pid=$!
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

BASE=http://127.0.0.1:$PORT
curl -fs -X POST "$BASE/v1/auth/register" -H 'Content-Type: application/json' \
    -d '{"username":"bench","password":"bench password 1"}' >/dev/null
TOKEN=$(curl -fs -X POST "$BASE/v1/auth/login" -H 'Content-Type: application/json' \
    -d '{"username":"bench","password":"bench password 1"}' |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

echo "natter bench $(date -u +%Y-%m-%dT%H:%MZ) — $(nproc) cores, ${SECS}s per scenario, $CONNS connections"
run() {
    local name=$1
    shift
    local out
    out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" --latency "$@")
    local rps p50 p99
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    local errs
    errs=$(awk '/Non-2xx|Socket errors/' <<<"$out")
    printf '%-10s %10s req/s   p50 %8s   p99 %8s   %s\n' "$name" "$rps" "$p50" "$p99" "${errs:-no errors}"
}
run healthz "$BASE/healthz"
run users_me -H "Authorization: Bearer $TOKEN" "$BASE/v1/users/me"
