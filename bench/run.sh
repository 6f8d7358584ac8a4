#!/usr/bin/env bash
# `make bench`: start a private PostgreSQL + Redis + natter-api (like make test),
# then measure and print one line per figure. Everything is bounded (fixed
# counts and durations) and talks only to 127.0.0.1. Record the results with the
# date in bench/README.md.
#
# Scenarios (BENCH_SCENARIOS, space-separated, default: all in this order):
#   http      wrk: healthz (bare HTTP path) and users_me (JWT + device check + query)
#   idle      idle long-polls held by one natter-api, its RSS before/after
#   deliver   1:1 send -> the recipient's long-poll answered, fixed send rate
#   group     group of 100: one send -> all 100 member polls answered
#   sends     durable sends/s from many keep-alive connections
#   history   history page of 50 on a chat with a few thousand messages
# The long-poll/send scenarios use bench/natterload.c (C, epoll), built here
# with plain `cc` into bench/out/ (git-ignored).
#
# Knobs (defaults = the DESIGN.md targets):
#   BENCH_SECONDS (10)          duration of the timed scenarios
#   BENCH_CONNECTIONS (64)      wrk connections
#   BENCH_IDLE_POLLS (19000)    idle polls to hold
#   BENCH_POLLERS (5000)        devices polling during `deliver`
#   BENCH_RATE (2000)           msg/s offered during `deliver`
#   BENCH_GROUP_SENDS (200)     sends during `group`
#   BENCH_SEND_CONNS (64)       connections during `sends`
#   BENCH_RATE_LOW (100)        a second `deliver` run at a rate the server can sustain
#                               (0 skips it), to show the latency when not saturated
#   BENCH_HISTORY_MESSAGES (3000), BENCH_HISTORY_CONNS ("1 8 32": one run per value)
#   BENCH_HTTP_THREADS (32), BENCH_DB_POOL (150)   natter-api sizing. The pool is
#     large because natter-api keeps a request's pooled connection until
#     libmicrohttpd reports the request completed: with 48, the HTTP threads
#     all end up waiting in db_acquire for connections held by answered
#     requests and the 5,000-poll scenario cannot even start (see README).
set -euo pipefail

# shellcheck source=scripts/env.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../scripts" && pwd -P)/env.sh"
REPO=$(natter_repo_root)
SECS=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNECTIONS:-64}
SCENARIOS=${BENCH_SCENARIOS:-http idle deliver group sends history}
IDLE_POLLS=${BENCH_IDLE_POLLS:-19000}
POLLERS=${BENCH_POLLERS:-5000}
RATE=${BENCH_RATE:-2000}
GROUP_SENDS=${BENCH_GROUP_SENDS:-200}
SEND_CONNS=${BENCH_SEND_CONNS:-64}
HISTORY_MESSAGES=${BENCH_HISTORY_MESSAGES:-3000}
HISTORY_CONNS=${BENCH_HISTORY_CONNS:-1 8 32}
RATE_LOW=${BENCH_RATE_LOW:-100}
HTTP_THREADS=${BENCH_HTTP_THREADS:-32}
DB_POOL=${BENCH_DB_POOL:-150}

NATTER_DEB_PACKAGES="$NATTER_DEB_PACKAGES wrk" natter_ensure_packages
make -s -C "$REPO" all >/dev/null

OUT="$REPO/bench/out"
mkdir -p "$OUT"
cc -O2 -g -Wall -Wextra -std=c11 -o "$OUT/natterload" "$REPO/bench/natterload.c" -ljansson -lm
LOAD="$OUT/natterload"

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

# PostgreSQL in run mode: fsync on, synchronous_commit on (durable sends).
natter_pg_start "$STATE_DIR" >/dev/null
PG_DATA=$NATTER_PG_SOCKET_DIR/data
natter_redis_start "$STATE_DIR" test >/dev/null
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export NATTER_DATABASE_URL NATTER_REDIS_URL
"$REPO/build/natter-api" migrate 2>/dev/null
# Cheap password hashing and lifted login limits only so that ~20,000 devices
# can log in within seconds; access tokens live long enough for the whole run.
NATTER_PORT=$PORT NATTER_STATE_DIR=$STATE_DIR/api NATTER_PWHASH_COST=min NATTER_LOG_LEVEL=warn \
    NATTER_LOGIN_MAX_PER_USER=1000000 NATTER_LOGIN_MAX_PER_IP=1000000 NATTER_ACCESS_TOKEN_TTL=7200 \
    NATTER_HTTP_THREADS=$HTTP_THREADS NATTER_DB_POOL_SIZE=$DB_POOL \
    "$REPO/build/natter-api" 2>"$STATE_DIR/api.log" &
api_pid=$!
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null || {
    echo "natter-api did not start:" >&2
    tail -n 20 "$STATE_DIR/api.log" >&2
    exit 1
}

BASE=http://127.0.0.1:$PORT
# natterload with a hard wall-clock bound on top of its own bounds
load() {
    timeout -k 5 900 "$LOAD" "$@" --port "$PORT"
}
# a measuring run: a failure is reported and the other scenarios still run
measure() {
    local rc=0
    load "$@" || rc=$?
    ((rc == 0)) || echo "$1 FAILED (natterload exit $rc)"
}
# CPU accounting per scenario, to tell a disturbed run from a clean one (the
# machine may be running other people's test suites). Prints, in clock ticks:
#   busy (user+nice+system)  irq+softirq  steal  kernel-threads  natter-api  ours
# where ours = natter-api + our PostgreSQL + our Redis + natterload/wrk/curl.
cpu_snapshot() {
    local pm=0 redis=0 kids='' p
    if [[ -n $PG_DATA && -f $PG_DATA/postmaster.pid ]]; then pm=$(head -n1 "$PG_DATA/postmaster.pid"); fi
    if [[ -f $STATE_DIR/redis/redis.pid ]]; then redis=$(<"$STATE_DIR/redis/redis.pid"); fi
    if ((pm > 0)); then kids=$(pgrep -P "$pm" | tr '\n' ' ' || true); fi
    {
        head -n1 /proc/stat
        # every process, to add up kernel threads (PF_KTHREAD in the flags)
        sed 's/^[0-9]* (.*) /K /' /proc/[0-9]*/stat 2>/dev/null || true
        for p in "$api_pid" "$redis" $kids; do
            [[ $p =~ ^[1-9][0-9]*$ ]] || continue
            sed 's/^.*) /X /' "/proc/$p/stat" 2>/dev/null | awk -v p="$p" -v api="$api_pid" \
                '{ print (p == api ? "api" : "own"), $13 + $14 }' || true
        done
        # postmaster and this script: their own time plus that of exited children
        # (finished backends, natterload, wrk)
        for p in "$pm" "$$"; do
            [[ $p =~ ^[1-9][0-9]*$ ]] || continue
            sed 's/^.*) /X /' "/proc/$p/stat" 2>/dev/null | awk '{ print "own", $13 + $14 + $15 + $16 }' || true
        done
    } | awk '$1 == "cpu" { busy = $2 + $3 + $4; irq = $7 + $8; steal = $9 }
             $1 == "K" && int($8 / 2097152) % 2 == 1 { kt += $13 + $14 }
             $1 == "api" { api += $2 } $1 == "own" { own += $2 }
             END { printf "%d %d %d %d %d %d\n", busy, irq, steal, kt, api, api + own }'
}
snap0=
t0=0
scenario_begin() {
    snap0=$(cpu_snapshot)
    t0=$(date +%s.%N)
}
# One line of context per scenario: CPU used by natter-api, by the whole
# benchmark, by the kernel, and by other processes on the machine (the
# disturbance: other people's test suites). DISTURBED when other processes
# took more than 10% of the machine.
scenario_end() {
    local snap1 t1
    snap1=$(cpu_snapshot)
    t1=$(date +%s.%N)
    awk -v n="$1" -v a="$snap0" -v b="$snap1" -v t0="$t0" -v t1="$t1" -v hz="$(getconf CLK_TCK)" \
        -v cores="$(nproc)" 'BEGIN {
            split(a, x, " "); split(b, y, " "); w = t1 - t0
            for (i = 1; i <= 6; i++) d[i] = (y[i] - x[i]) / hz
            other = d[1] - d[4] - d[6]
            if (other < 0) other = 0
            printf "  (%s: %.1f s wall, %.0f CPU-s available; natter-api %.1f, whole benchmark %.1f, kernel threads %.1f, irq/softirq %.1f, steal %.1f, other processes %.1f%s)\n",
                n, w, cores * w, d[5], d[6], d[4], d[2], d[3], other, (other > 0.1 * cores * w ? " -- DISTURBED" : "")
        }'
}
has() {
    [[ " $SCENARIOS " == *" $1 "* ]]
}

echo "natter bench $(date -u +%Y-%m-%dT%H:%MZ), tree $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?') — $(nproc) cores, natter-api with $HTTP_THREADS HTTP threads and $DB_POOL DB connections, PostgreSQL fsync+synchronous_commit on"

if has http; then
    curl -fs -X POST "$BASE/v1/auth/register" -H 'Content-Type: application/json' \
        -d '{"username":"bench","password":"bench password 1"}' >/dev/null
    TOKEN=$(curl -fs -X POST "$BASE/v1/auth/login" -H 'Content-Type: application/json' \
        -d '{"username":"bench","password":"bench password 1"}' |
        /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
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
        printf '%-16s %10s req/s   p50 %8s   p99 %8s   %s (wrk, %s connections)\n' "$name" "$rps" "$p50" "$p99" \
            "${errs:-no errors}" "$CONNS"
    }
    run healthz "$BASE/healthz"
    run users_me -H "Authorization: Bearer $TOKEN" "$BASE/v1/users/me"
fi

# Devices: users u00000… with 4 devices each (each login is a device). The
# idle scenario uses the first BENCH_IDLE_POLLS devices; deliver and sends use
# device 0 of users 0..BENCH_POLLERS-1, paired into direct chats (2k, 2k+1).
if has idle || has deliver || has sends; then
    need=$((IDLE_POLLS > POLLERS ? IDLE_POLLS : POLLERS))
    has idle || need=$POLLERS
    users=$(((need + 3) / 4))
    ((users < POLLERS)) && users=$POLLERS
    ((users % 2)) && users=$((users + 1))
    load users --prefix u --users "$users" --devices 4 --out "$STATE_DIR/u.devices"
fi

if has idle; then
    scenario_begin
    measure idle --devices "$STATE_DIR/u.devices" --count "$IDLE_POLLS" --hold 10 --api-pid "$api_pid"
    scenario_end idle
fi

if has deliver || has sends; then
    load pairs --devices "$STATE_DIR/u.devices" --users "$POLLERS" --out "$STATE_DIR/u.pairs"
fi

if has deliver; then
    for rate in "$RATE" "$RATE_LOW"; do
        [[ $rate == 0 ]] && continue
        scenario_begin
        measure deliver --devices "$STATE_DIR/u.devices" --chats "$STATE_DIR/u.pairs" --pollers "$POLLERS" \
            --rate "$rate" --seconds "$SECS"
        scenario_end "deliver at $rate msg/s"
        sleep 5 # let the server finish what the last run left behind
    done
fi

if has group; then
    load users --prefix g --users 100 --devices 2 --out "$STATE_DIR/g.devices"
    load group --devices "$STATE_DIR/g.devices" --members 100 --out "$STATE_DIR/g.chat"
    scenario_begin
    measure fanout --devices "$STATE_DIR/g.devices" --chat "$(cat "$STATE_DIR/g.chat")" --members 100 \
        --sends "$GROUP_SENDS"
    scenario_end group
fi

if has sends; then
    scenario_begin
    measure sends --devices "$STATE_DIR/u.devices" --chats "$STATE_DIR/u.pairs" --users "$POLLERS" \
        --conns "$SEND_CONNS" --seconds "$SECS"
    scenario_end sends
fi

if has history; then
    load users --prefix h --users 2 --devices 1 --out "$STATE_DIR/h.devices"
    load pairs --devices "$STATE_DIR/h.devices" --users 2 --out "$STATE_DIR/h.pairs"
    hchat=$(cut -d' ' -f1 "$STATE_DIR/h.pairs")
    load fill --devices "$STATE_DIR/h.devices" --chat "$hchat" --count "$HISTORY_MESSAGES"
    for c in $HISTORY_CONNS; do
        scenario_begin
        measure history --devices "$STATE_DIR/h.devices" --chat "$hchat" --conns "$c" --seconds "$SECS"
        scenario_end "history, $c connections"
    done
fi

if grep -q '"level":"error"' "$STATE_DIR/api.log"; then
    echo "natter-api logged errors during the run (first 5):"
    grep '"level":"error"' "$STATE_DIR/api.log" | head -n 5
fi
