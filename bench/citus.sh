#!/usr/bin/env bash
# bench/citus.sh (`make bench-citus`): what each kind of operation costs on a Citus
# cluster against a single PostgreSQL (issue 12). Starts a private single PostgreSQL and
# a Citus 13.2.2 coordinator + two workers (scripts/citus.sh; all four on this machine,
# unix sockets, fsync off as in the tests), one Redis, and one natter-api at a time on
# each database, then runs bench/citus_cost.py against it: one client, one request at a
# time, p50/p90 latency and the CPU of natter-api and of every PostgreSQL server per
# operation. On Citus every statement pays a hop from the
# coordinator to a worker, and a transaction that wrote shards on both workers a
# two-phase commit; the figures show what that costs per operation. Loopback only;
# every count is bounded. Record the figures with the date in bench/README.md.
#
# Knobs: BENCH_CITUS_RUNS (200) requests per operation; BENCH_CITUS_GROUP (20) members
# of the group the group send goes to.
set -euo pipefail

# shellcheck source=scripts/env.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../scripts" && pwd -P)/env.sh"
REPO=$(natter_repo_root)
PYTHON=/usr/bin/python3

natter_ensure_packages
# shellcheck disable=SC2086  # a list of package names (python3-requests)
natter_ensure_packages $NATTER_TEST_DEB_PACKAGES
bash "$REPO/scripts/citus.sh" build
make -C "$REPO" -s all

STATE_DIR=$(mktemp -d /tmp/natter-bench-citus.XXXXXX)
chmod 755 "$STATE_DIR"
api_pid=
stop_api() {
    natter_kill_wait "$api_pid"
    api_pid=
}
cleanup() {
    stop_api
    bash "$REPO/scripts/citus.sh" stop "$STATE_DIR" || true
    local node
    for node in "$STATE_DIR"/citus-*; do natter_pg_remove "$node"; done
    natter_private_stop "$STATE_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

natter_pg_start "$STATE_DIR" test >/dev/null
single_url=$NATTER_DATABASE_URL
citus_url=$(bash "$REPO/scripts/citus.sh" start "$STATE_DIR")
natter_redis_start "$STATE_DIR" test >/dev/null
export NATTER_REDIS_URL

# run LABEL URL: migrate (and distribute on Citus), start natter-api, measure, stop it
run() {
    local label=$1 url=$2 port
    NATTER_DATABASE_URL=$url "$REPO/build/natter-api" migrate 2>/dev/null
    if [[ $label == citus ]]; then
        "$NATTER_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$url" -f "$REPO/scripts/citus-distribute.sql" >/dev/null
    fi
    "$NATTER_PG_BIN/psql" -X -q -d "$url" -c "SELECT 1" >/dev/null
    redis-cli -s "$NATTER_REDIS_SOCKET" flushall >/dev/null
    port=$($PYTHON -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    env NATTER_DATABASE_URL="$url" NATTER_PORT="$port" NATTER_STATE_DIR="$STATE_DIR/api-$label" \
        NATTER_PWHASH_COST=min NATTER_LOG_LEVEL=warn NATTER_ACCESS_TOKEN_TTL=7200 \
        NATTER_RATE_REGISTER_IP_BURST=0 NATTER_RATE_REGISTER_ALL_BURST=0 NATTER_RATE_SEND_BURST=0 \
        NATTER_RATE_CHAT_BURST=0 NATTER_RATE_MEMBER_BURST=0 NATTER_RATE_SEARCH_BURST=0 \
        NATTER_LOGIN_MAX_PER_USER=1000000 NATTER_LOGIN_MAX_PER_IP=1000000 \
        "$REPO/build/natter-api" 2>"$STATE_DIR/api-$label.log" &
    api_pid=$!
    natter_wait_http "http://127.0.0.1:$port/readyz" "$STATE_DIR/api-$label.log" || exit 1
    # the PostgreSQL servers this run's statements reach: their postmasters' PIDs
    local postmasters="" data
    if [[ $label == citus ]]; then
        for data in "$STATE_DIR"/citus-*/pg/data; do postmasters+=" $(head -n 1 "$data/postmaster.pid")"; done
    else
        postmasters=$(head -n 1 "$STATE_DIR/pg/data/postmaster.pid")
    fi
    BENCH_CITUS_API_PID=$api_pid BENCH_CITUS_POSTMASTERS=$postmasters \
        timeout -k 5 1200 "$PYTHON" "$REPO/bench/citus_cost.py" "http://127.0.0.1:$port" "$label"
    stop_api
    if grep -q '"level":"error"' "$STATE_DIR/api-$label.log"; then
        echo "natter-api ($label) logged errors (first 3):"
        grep '"level":"error"' "$STATE_DIR/api-$label.log" | head -n 3
    fi
}

echo "natter bench-citus $(date -u +%Y-%m-%dT%H:%MZ), tree $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?') — $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); single PostgreSQL vs Citus 13.2.2 (coordinator + 2 workers, same machine), fsync off"
run single "$single_url"
run citus "$citus_url"
