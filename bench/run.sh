#!/usr/bin/env bash
# `make bench`: start a private PostgreSQL + Redis + natter-api (like make test),
# then measure and print one line per figure. Everything is bounded (fixed
# counts and durations) and talks only to 127.0.0.1. Record the results with the
# date in bench/README.md.
#
# Scenarios (BENCH_SCENARIOS, space-separated, default: all in this order):
#   http      wrk: healthz (bare HTTP path) and users_me (JWT + device check + query)
#   idle      idle long-polls held by one natter-api, its RSS before/after
#   multi     idle long-polls held by several natter-api processes sharing one
#             port (SO_REUSEPORT), from several load processes on several
#             127.0.0.x source addresses: held count, RSS per poll, every poll
#             answered when probed
#   renew     idle long-polls answered empty every 30 s and renewed: CPU of the stack
#   deliver   1:1 send -> the recipient's long-poll answered: 1,000 users polling,
#             each in 200 direct chats, 200 senders, a ramp of offered rates
#   group     group of 100: one send -> all 100 member polls answered
#   sends     durable sends/s, closed loop, 200 connections (one user each)
#   history   history page of 50 on a chat with a few thousand messages
# The long-poll/send scenarios use bench/natterload.c (C, epoll), built here
# with plain `cc` into bench/out/ (git-ignored).
#
# After every scenario (and every rate of deliver) a context line splits the
# CPU by process: natter-api, PostgreSQL (postmaster + every backend, also the
# ones that exited), Redis, natterload/wrk, and the rest of the machine (the
# line says DISTURBED when other processes took > 10% of it). Where the
# scenario has messages, a second line gives the CPU per message.
#
# Knobs (defaults = the DESIGN.md targets):
#   BENCH_SECONDS (10)            duration of the timed scenarios (each deliver rate, sends, history, http)
#   BENCH_CONNECTIONS (64)        wrk connections
#   BENCH_IDLE_POLLS (19000)      polls held by idle and renew
#   BENCH_MULTI_POLLS (95000)     multi: polls held on the box
#   BENCH_MULTI_PROCESSES (6)     multi: natter-api processes on the one port (~16,000 polls each)
#   BENCH_MULTI_PER_LOADER (19000) multi: polls per load process (each < 20,000 descriptors)
#   BENCH_RENEW_SECONDS (95)      renew: how long the polls renew once all are open
#   BENCH_RENEW_WINDOW (90)       renew: the CPU window (the last seconds of the above)
#   BENCH_RECEIVERS (1000)        deliver: users polling (one device each)
#   BENCH_CHATS_PER_USER (200)    deliver: direct chats per user (RECEIVERS x CHATS / 2 chats)
#   BENCH_SENDERS (200)           deliver: sender connections (users 0..SENDERS-1)
#   BENCH_DELIVER_RATES ("500 1000 2000 3000 4000 6000 8000")  offered msg/s, one run each
#   BENCH_DELIVER_GRACE (10)      deliver: seconds to wait for stragglers after each run
#   BENCH_DELIVER_STOP_BELOW (0.8) deliver: skip the higher rates once achieved < this x offered (0: never)
#   BENCH_SETUP_CONNS (64)        connections that create the chats
#   BENCH_GROUP_SENDS (200)       sends during `group`
#   BENCH_SEND_CONNS (200)        connections during `sends` (one mesh user each)
#   BENCH_HISTORY_MESSAGES (3000), BENCH_HISTORY_CONNS ("1 8 32": one run per value)
#   BENCH_OUT (bench/out)         where natterload is built
#   BENCH_HTTP_THREADS, BENCH_DB_POOL, BENCH_LOG_LEVEL   natter-api sizing and log level;
#     unset, natter-api runs on its defaults (8 HTTP threads, 16 pooled connections,
#     info: an access-log line per request, written by the asynchronous log writer)
set -euo pipefail

# shellcheck source=scripts/env.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../scripts" && pwd -P)/env.sh"
REPO=$(natter_repo_root)
SECS=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNECTIONS:-64}
SCENARIOS=${BENCH_SCENARIOS:-http idle multi renew deliver group sends history}
IDLE_POLLS=${BENCH_IDLE_POLLS:-19000}
MULTI_POLLS=${BENCH_MULTI_POLLS:-95000}
MULTI_PROCESSES=${BENCH_MULTI_PROCESSES:-6}
MULTI_PER_LOADER=${BENCH_MULTI_PER_LOADER:-19000}
RENEW_SECONDS=${BENCH_RENEW_SECONDS:-95}
RENEW_WINDOW=${BENCH_RENEW_WINDOW:-90}
RECEIVERS=${BENCH_RECEIVERS:-1000}
CHATS_PER_USER=${BENCH_CHATS_PER_USER:-200}
SENDERS=${BENCH_SENDERS:-200}
DELIVER_RATES=${BENCH_DELIVER_RATES:-500 1000 2000 3000 4000 6000 8000}
DELIVER_GRACE=${BENCH_DELIVER_GRACE:-10}
DELIVER_STOP_BELOW=${BENCH_DELIVER_STOP_BELOW:-0.8}
SETUP_CONNS=${BENCH_SETUP_CONNS:-64}
GROUP_SENDS=${BENCH_GROUP_SENDS:-200}
SEND_CONNS=${BENCH_SEND_CONNS:-200}
HISTORY_MESSAGES=${BENCH_HISTORY_MESSAGES:-3000}
HISTORY_CONNS=${BENCH_HISTORY_CONNS:-1 8 32}
HTTP_THREADS=${BENCH_HTTP_THREADS:-}
DB_POOL=${BENCH_DB_POOL:-}
LOG_LEVEL=${BENCH_LOG_LEVEL:-}

NATTER_DEB_PACKAGES="$NATTER_DEB_PACKAGES wrk" natter_ensure_packages
make -s -C "$REPO" all >/dev/null

OUT=${BENCH_OUT:-$REPO/bench/out}
mkdir -p "$OUT"
cc -O2 -g -Wall -Wextra -std=c11 -o "$OUT/natterload" "$REPO/bench/natterload.c" -ljansson -lm
LOAD="$OUT/natterload"

STATE_DIR=$(mktemp -d /tmp/natter-bench.XXXXXX)
chmod 755 "$STATE_DIR"
api_pid=
multi_pids=()  # the extra natter-api processes of `multi` (api_pid is the first)
multi_lpids=() # its load processes
cleanup() {
    local p
    for p in ${multi_lpids[@]+"${multi_lpids[@]}"}; do kill -TERM "$p" 2>/dev/null || true; done
    for p in ${multi_pids[@]+"${multi_pids[@]}"}; do
        [[ $p == "$api_pid" ]] || kill -TERM "$p" 2>/dev/null || true
    done
    for p in ${multi_lpids[@]+"${multi_lpids[@]}"} ${multi_pids[@]+"${multi_pids[@]}"}; do
        [[ $p == "$api_pid" ]] || wait "$p" 2>/dev/null || true
    done
    natter_kill_wait "$api_pid"
    natter_private_stop "$STATE_DIR"
}
trap cleanup EXIT

BENCH_T0=$EPOCHREALTIME
# PostgreSQL in run mode: fsync on, synchronous_commit on (durable sends).
natter_pg_start "$STATE_DIR" >/dev/null
PG_DATA=$NATTER_PG_SOCKET_DIR/data
natter_redis_start "$STATE_DIR" test >/dev/null
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export NATTER_DATABASE_URL NATTER_REDIS_URL
"$REPO/build/natter-api" migrate 2>/dev/null
# Cheap password hashing and lifted login limits only so that ~20,000 devices
# can log in within seconds; access tokens live long enough for the whole run.
api_env=(NATTER_PORT="$PORT" NATTER_STATE_DIR="$STATE_DIR/api" NATTER_PWHASH_COST=min
    NATTER_LOGIN_MAX_PER_USER=1000000 NATTER_LOGIN_MAX_PER_IP=1000000 NATTER_ACCESS_TOKEN_TTL=7200
    # the bench measures throughput, not the abuse limits: its users register
    # from one address, send 10-25 messages a second each and create hundreds
    # of chats (burst 0 = no limit)
    NATTER_RATE_REGISTER_IP_BURST=0 NATTER_RATE_REGISTER_ALL_BURST=0 NATTER_RATE_SEND_BURST=0
    NATTER_RATE_CHAT_BURST=0 NATTER_RATE_MEMBER_BURST=0
    NATTER_MAX_CONNECTIONS_PER_IP=1000000) # natterload connects from one address (default: half the limit)
[[ -n $HTTP_THREADS ]] && api_env+=(NATTER_HTTP_THREADS="$HTTP_THREADS")
[[ -n $DB_POOL ]] && api_env+=(NATTER_DB_POOL_SIZE="$DB_POOL")
[[ -n $LOG_LEVEL ]] && api_env+=(NATTER_LOG_LEVEL="$LOG_LEVEL")
env "${api_env[@]}" "$REPO/build/natter-api" 2>"$STATE_DIR/api.log" &
api_pid=$!
natter_wait_http "http://127.0.0.1:$PORT/healthz" "$STATE_DIR/api.log" || exit 1
PG_PM=0
[[ -f $PG_DATA/postmaster.pid ]] && PG_PM=$(head -n1 "$PG_DATA/postmaster.pid")
REDIS_PID=0
[[ -f $STATE_DIR/redis/redis.pid ]] && REDIS_PID=$(<"$STATE_DIR/redis/redis.pid")

BASE=http://127.0.0.1:$PORT
# natterload with a hard wall-clock bound on top of its own bounds
# (LOAD_TIMEOUT: 900 s, more for the steps that scale with BENCH_MULTI_POLLS)
LOAD_TIMEOUT=900
load() {
    timeout -k 5 "$LOAD_TIMEOUT" "$LOAD" "$@" --port "$PORT"
}

# ---------------------------------------------------------------------------
# CPU accounting

# Prints, in clock ticks:
#   busy(user+nice+system) irq+softirq steal kernel-threads api pg redis load
# api = natter-api; pg = the postmaster with its children, living and exited
# (cutime of the postmaster); redis = redis-server and its children; load =
# this script and everything it started that is none of those (natterload,
# wrk, curl, the script's own helpers), living or exited.
cpu_snapshot() {
    {
        head -n1 /proc/stat
        # every process: "pid state ppid … flags(8) … utime(13) stime(14) cutime(15) cstime(16)"
        sed 's/^\([0-9]*\) (.*) /\1 /' /proc/[0-9]*/stat 2>/dev/null || true
    } | awk -v api="$api_pid" -v pm="$PG_PM" -v redis="$REDIS_PID" -v self="$$" '
        $1 == "cpu" { busy = $2 + $3 + $4; irq = $7 + $8; steal = $9; next }
        {
            pid = $1; ppid[pid] = $3; own[pid] = $13 + $14; kids[pid] = $15 + $16
            if (int($8 / 2097152) % 2 == 1) kt += $13 + $14
        }
        function group(p,   n) {
            # the first classified process on the way up from p
            for (n = 0; n < 64 && p + 0 > 1; n++) {
                if (p + 0 == api + 0) return "api"
                if (p + 0 == pm + 0) return "pg"
                if (p + 0 == redis + 0) return "redis"
                if (p + 0 == self + 0) return "load"
                if (!((p "") in ppid)) return ""
                p = ppid[p ""]
            }
            return ""
        }
        END {
            for (p in ppid) {
                g = group(p)
                if (g != "") t[g] += own[p] + kids[p]
            }
            printf "%d %d %d %d %d %d %d %d\n", busy, irq, steal, kt, t["api"], t["pg"], t["redis"], t["load"]
        }'
}
snap0=
t0=0
declare -A CPU_PER_MSG=()
scenario_begin() {
    snap0=$(cpu_snapshot)
    t0=$EPOCHREALTIME
}
# scenario_end NAME [MESSAGES WHAT]: one line of context with the CPU of the
# scenario split by process, also as % of one core; with MESSAGES > 0 a second
# line with the CPU per message. "server stack" = natter-api + PostgreSQL +
# Redis (what the targets count); natterload/wrk is the client side.
# DISTURBED when other processes took more than 10% of the machine.
scenario_end() {
    local name=$1 msgs=${2:-0} what=${3:-message} snap1 t1 out
    snap1=$(cpu_snapshot)
    t1=$EPOCHREALTIME
    out=$(awk -v n="$name" -v a="$snap0" -v b="$snap1" -v t0="$t0" -v t1="$t1" -v hz="$(getconf CLK_TCK)" \
        -v cores="$(nproc)" -v msgs="$msgs" -v what="$what" 'BEGIN {
            split(a, x, " "); split(b, y, " "); w = t1 - t0
            # (a process that exits between the snapshots can make a group shrink a little)
            for (i = 1; i <= 8; i++) { d[i] = (y[i] - x[i]) / hz; if (d[i] < 0) d[i] = 0 }
            api = d[5]; pg = d[6]; rd = d[7]; ld = d[8]; srv = api + pg + rd
            other = d[1] - d[4] - srv - ld
            if (other < 0) other = 0
            pc = 100 / w
            printf "  (%s: %.1f s wall, %.0f CPU-s available; CPU-s natter-api %.2f (%.0f%% of a core), PostgreSQL %.2f (%.0f%%), Redis %.2f (%.0f%%), natterload/wrk %.2f (%.0f%%); server stack %.2f (%.1f%% of a core), with natterload %.2f; kernel threads %.1f, irq/softirq %.1f, steal %.1f, other processes %.1f%s)\n",
                n, w, cores * w, api, api * pc, pg, pg * pc, rd, rd * pc, ld, ld * pc, srv, srv * pc, srv + ld,
                d[4], d[2], d[3], other, (other > 0.1 * cores * w ? " -- DISTURBED" : "")
            if (msgs > 0)
                printf "  (%s: CPU per %s (%d): natter-api %.3f ms, PostgreSQL %.3f ms, Redis %.3f ms, natterload %.3f ms; server stack %.3f ms, with natterload %.3f ms)\n",
                    n, what, msgs, api * 1000 / msgs, pg * 1000 / msgs, rd * 1000 / msgs, ld * 1000 / msgs,
                    srv * 1000 / msgs, (srv + ld) * 1000 / msgs
        }')
    printf '%s\n' "$out"
    if ((msgs > 0)); then
        out=$(tail -n1 <<<"$out")
        out=${out#  (}
        CPU_PER_MSG[$name]=${out%)}
    fi
}
# A measuring natterload run: its output is passed through, and its marker
# lines (`@begin NAME`, `@end NAME<TAB>MESSAGES<TAB>WHAT`, `@cpu NAME`) become
# CPU windows. A failure is reported and the other scenarios still run.
measure() {
    local line rc=0 name msgs what
    while IFS= read -r line; do
        case $line in
        '@begin '*) scenario_begin ;;
        '@end '*)
            IFS=$'\t' read -r name msgs what <<<"${line#@end }"
            scenario_end "$name" "$msgs" "$what"
            ;;
        '@cpu '*)
            name=${line#@cpu }
            printf '%-16s %s  (targets: server stack <= 0.3 ms, natter-api <= 0.15 ms)\n' "${1}_cpu" \
                "${CPU_PER_MSG[$name]:-no CPU figure for $name}"
            ;;
        '@rc '*) rc=${line#@rc } ;;
        *) printf '%s\n' "$line" ;;
        esac
    done < <(
        r=0
        load "$@" || r=$?
        echo "@rc $r"
    )
    ((rc == 0)) || echo "$1 FAILED (natterload exit $rc)"
}
# A scenario timed from outside (no markers)
measure_whole() {
    local name=$1
    shift
    scenario_begin
    measure "$@"
    scenario_end "$name"
}
# A set-up step wrote many rows (logins, the chat mesh): vacuum and analyze
# now, so that autovacuum does not land in the measured windows that follow
# and the planner knows the tables' sizes, as in a system that has run a while.
settle_db() {
    "$NATTER_PG_BIN/psql" -X -q -h "$NATTER_PG_SOCKET_DIR" -p "$NATTER_PG_PORT" -U natter -d natter \
        -c "VACUUM (ANALYZE)" >/dev/null 2>&1 || echo "(VACUUM after $1 failed; measuring anyway)"
}
has() {
    [[ " $SCENARIOS " == *" $1 "* ]]
}
took() { # prints how long a part took, from a $EPOCHREALTIME start
    awk -v a="$2" -v b="$EPOCHREALTIME" -v n="$1" 'BEGIN { printf "took             %s: %.0f s\n", n, b - a }'
}

echo "natter bench $(date -u +%Y-%m-%dT%H:%MZ), tree $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?') — $(nproc) cores, natter-api with ${HTTP_THREADS:-its default} HTTP threads, ${DB_POOL:-its default} DB connections, log level ${LOG_LEVEL:-info}, PostgreSQL fsync+synchronous_commit on"

if has http; then
    ts=$EPOCHREALTIME
    curl -fs -X POST "$BASE/v1/auth/register" -H 'Content-Type: application/json' \
        -d '{"username":"bench","password":"bench password 1"}' >/dev/null
    TOKEN=$(curl -fs -X POST "$BASE/v1/auth/login" -H 'Content-Type: application/json' \
        -d '{"username":"bench","password":"bench password 1"}' |
        /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    run() {
        local name=$1
        shift
        local out
        scenario_begin
        out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" --latency "$@")
        local rps p50 p99
        rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
        p50=$(awk '$1=="50%" {print $2}' <<<"$out")
        p99=$(awk '$1=="99%" {print $2}' <<<"$out")
        local errs
        errs=$(awk '/Non-2xx|Socket errors/' <<<"$out")
        printf '%-16s %10s req/s   p50 %8s   p99 %8s   %s (wrk, %s connections)\n' "$name" "$rps" "$p50" "$p99" \
            "${errs:-no errors}" "$CONNS"
        scenario_end "http $name"
    }
    run healthz "$BASE/healthz"
    run users_me -H "Authorization: Bearer $TOKEN" "$BASE/v1/users/me"
    took http "$ts"
fi

# Devices: users u00000… with 4 devices each (each login is a device). idle and
# renew use the first BENCH_IDLE_POLLS devices; deliver and sends use device 0
# of users 0..BENCH_RECEIVERS-1 and the chat mesh between them.
if has idle || has multi || has renew || has deliver || has sends; then
    ts=$EPOCHREALTIME
    users=0
    if has idle || has renew; then users=$(((IDLE_POLLS + 3) / 4)); fi
    if has multi && (((MULTI_POLLS + 3) / 4 > users)); then users=$(((MULTI_POLLS + 3) / 4)); fi
    if (has deliver || has sends) && ((users < RECEIVERS)); then users=$RECEIVERS; fi
    # ~100 s per 10,000 users on a busy 2-core box (registration is argon2id, if cheap)
    LOAD_TIMEOUT=$((900 + users / 10)) load users --prefix u --users "$users" --devices 4 --out "$STATE_DIR/u.devices"
    settle_db "the logins"
    took "setup users" "$ts"
fi

if has idle; then
    ts=$EPOCHREALTIME
    measure_whole idle idle --devices "$STATE_DIR/u.devices" --count "$IDLE_POLLS" --hold 10 --api-pid "$api_pid"
    took idle "$ts"
fi

# multi: MULTI_PROCESSES natter-api on $PORT (the one started above and more),
# MULTI_POLLS idle polls from ceil(MULTI_POLLS / MULTI_PER_LOADER) natterload
# processes, loader i speaking from 127.0.0.(10+i). The load processes meet
# twice (natterload --sync: all polls open; all probed), so every poll is held
# at the same time. RSS: the sum over the natter-api processes, sampled every
# 0.5 s; per poll = (peak - before) / held. Once all polls are open (+ half
# the hold) one snapshot per process: VmRSS and its socket descriptors (minus
# those it had before the polls: its connections = the polls it holds), and
# the memory of Redis (used_memory, VmRSS) and PostgreSQL (summed Pss of the
# postmaster and its children, which counts shared buffers once).
if has multi; then
    ts=$EPOCHREALTIME
    MULTI_HOLD=20
    # Polls wait 50 s (the longest a client may ask): while the last ones are
    # being opened the first ones renew, and on a shared 2-core box 95,000
    # polls renewing every 30 s would take ~1 core by themselves (renew: 633
    # renewals/s cost 23 % of a core). Opening may take minutes there.
    MULTI_POLL_TIMEOUT=50
    MULTI_OPEN_SECONDS=900
    # the kernel settings this needs, read rather than assumed
    read -r port_lo port_hi </proc/sys/net/ipv4/ip_local_port_range
    printf 'multi_kernel     ip_local_port_range %s-%s (%d ports per source address), somaxconn %s, tcp_max_syn_backlog %s, file-max %s, nr_open %s, ulimit -n %s, MemAvailable %s MB\n' \
        "$port_lo" "$port_hi" $((port_hi - port_lo + 1)) "$(</proc/sys/net/core/somaxconn)" \
        "$(</proc/sys/net/ipv4/tcp_max_syn_backlog)" "$(</proc/sys/fs/file-max)" "$(</proc/sys/fs/nr_open)" \
        "$(ulimit -Hn)" "$(awk '/^MemAvailable/ {print int($2 / 1024)}' /proc/meminfo)"
    if ((port_hi - port_lo + 1 < MULTI_PER_LOADER)); then
        echo "multi_kernel     WARNING: fewer ephemeral ports than polls per load process"
    fi
    if (((MULTI_POLLS + MULTI_PROCESSES - 1) / MULTI_PROCESSES > 19000)); then
        echo "multi_kernel     WARNING: ~$(((MULTI_POLLS + MULTI_PROCESSES - 1) / MULTI_PROCESSES)) polls per natter-api process, near its ~19,900-descriptor limit (raise BENCH_MULTI_PROCESSES)"
    fi
    multi_pids=("$api_pid")
    for ((i = 1; i < MULTI_PROCESSES; i++)); do
        env "${api_env[@]}" NATTER_DB_POOL_SIZE=8 "$REPO/build/natter-api" \
            2>"$STATE_DIR/api$i.log" &
        multi_pids+=("$!")
    done
    # wait (bounded) until each new one logged that it listens
    for _ in $(seq 1 200); do
        ok=1
        for ((i = 1; i < MULTI_PROCESSES; i++)); do
            grep -q 'listening' "$STATE_DIR/api$i.log" 2>/dev/null || ok=0
        done
        ((ok)) && break
        sleep 0.1
    done
    sleep 1
    { grep -h -o '"connection_limit":[0-9]*' "$STATE_DIR"/api*.log || true; } | sort | uniq -c |
        awk '{ printf "multi_kernel     %d natter-api process(es) with %s\n", $1, $2 }'
    multi_ok=1
    for p in "${multi_pids[@]}"; do
        kill -0 "$p" 2>/dev/null || { echo "multi FAILED: natter-api $p did not start"; tail -n 5 "$STATE_DIR"/api*.log; multi_ok=0; }
    done
    rss_of() { awk '/^VmRSS/ {print $2; exit}' "/proc/$1/status" 2>/dev/null || echo 0; }
    # (find fails when a descriptor closes while it reads them: that must not
    # end the script, set -e with pipefail)
    sockets_of() { { find "/proc/$1/fd" -lname 'socket:*' 2>/dev/null || true; } | wc -l; }
    rss_sum() {
        local t=0 p v
        for p in "${multi_pids[@]}"; do
            v=$(rss_of "$p")
            t=$((t + ${v:-0}))
        done
        echo "$t"
    }
    # PostgreSQL: Pss (shared pages divided among their users) of the
    # postmaster and its children; Redis: what it counts and its VmRSS
    pg_pss_kb() {
        local p t=0 v
        for p in "$PG_PM" $(ps -o pid= --ppid "$PG_PM" 2>/dev/null); do
            v=$(awk '/^Pss:/ {print $2; exit}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
            t=$((t + ${v:-0}))
        done
        echo "$t"
    }
    redis_mem() { # "used_memory_kb rss_kb"
        local u
        u=$({ redis-cli -s "$NATTER_REDIS_SOCKET" info memory 2>/dev/null || true; } | tr -d '\r' |
            awk -F: '/^used_memory:/ {print int($2 / 1024)}')
        echo "${u:-0} $(rss_of "$REDIS_PID")"
    }
    declare -A rss_before=() socks_before=()
    for p in "${multi_pids[@]}"; do
        rss_before[$p]=$(rss_of "$p")
        socks_before[$p]=$(sockets_of "$p")
    done
    rss0=$(rss_sum)
    pg0=$(pg_pss_kb)
    redis0=$(redis_mem)
    loaders=$(((MULTI_POLLS + MULTI_PER_LOADER - 1) / MULTI_PER_LOADER))
    sync_dir="$STATE_DIR/multi-sync"
    mkdir -p "$sync_dir"
    multi_lpids=()
    if ((multi_ok)); then
        for ((i = 0; i < loaders; i++)); do
            first=$((i * MULTI_PER_LOADER))
            count=$((MULTI_POLLS - first < MULTI_PER_LOADER ? MULTI_POLLS - first : MULTI_PER_LOADER))
            LOAD_TIMEOUT=$((MULTI_OPEN_SECONDS + 600)) load idle --devices "$STATE_DIR/u.devices" --first "$first" \
                --count "$count" --hold "$MULTI_HOLD" --poll-timeout "$MULTI_POLL_TIMEOUT" \
                --probe $((MULTI_POLL_TIMEOUT + 30)) --open-seconds "$MULTI_OPEN_SECONDS" \
                --source "127.0.0.$((10 + i))" --sync "$sync_dir" --loaders "$loaders" >"$STATE_DIR/multi$i.out" 2>&1 &
            multi_lpids+=("$!")
        done
    fi
    peak=$rss0
    t_open=
    declare -A rss_held=() socks_held=()
    pg1=
    redis1=
    # bounded: the load processes are (each under its timeout)
    while ((${#multi_lpids[@]})); do
        alive=0
        for p in "${multi_lpids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        r=$(rss_sum)
        ((r > peak)) && peak=$r
        ((alive)) || break
        if [[ -z $t_open ]] && (($(find "$sync_dir" -name 'open.*' | wc -l) >= loaders)); then
            t_open=$EPOCHREALTIME
            took "multi: all polls open" "$ts"
        fi
        if [[ -n $t_open && -z $pg1 ]] &&
            awk -v a="$t_open" -v b="$EPOCHREALTIME" -v h="$MULTI_HOLD" 'BEGIN { exit !(b - a >= h / 2) }'; then
            for p in "${multi_pids[@]}"; do
                rss_held[$p]=$(rss_of "$p")
                socks_held[$p]=$(sockets_of "$p")
            done
            pg1=$(pg_pss_kb)
            redis1=$(redis_mem)
        fi
        sleep 0.5
    done
    for p in ${multi_lpids[@]+"${multi_lpids[@]}"}; do wait "$p" || echo "multi: a load process failed"; done
    multi_lpids=()
    held=0
    answered=0
    asked=0
    for ((i = 0; i < loaders && multi_ok; i++)); do
        # the client's count: each process's /metrics reaches one random natter-api
        h=$(awk '/^idle_polls / {for (k = 1; k <= NF; k++) if ($k == "(client:") {print $(k + 1); exit}}' "$STATE_DIR/multi$i.out")
        a=$(awk '/^idle_probe/ {print $2, $4}' "$STATE_DIR/multi$i.out")
        [[ -n $a ]] || a="0 0"
        held=$((held + ${h:-0}))
        answered=$((answered + ${a%% *}))
        asked=$((asked + ${a##* }))
        grep -h "^natterload:" "$STATE_DIR/multi$i.out" | head -n 3 || true
        awk '/^idle_polls / {sub(/^idle_polls +/, ""); print "multi_loader     " i ": " $0}' i="$i" "$STATE_DIR/multi$i.out"
    done
    awk -v t="$MULTI_POLLS" -v h="$held" -v n="$MULTI_PROCESSES" -v l="$loaders" -v r0="$rss0" -v r1="$peak" \
        'BEGIN { printf "multi_polls      target %d  held %d  by %d natter-api processes on one port, from %d load processes  (target >= 95000)\n", t, h, n, l
                 printf "multi_polls_rss  natter-api VmRSS (all processes) before %.1f MB  peak %.1f MB  per held poll %.2f KB (target <= 10 KB)\n", r0 / 1024, r1 / 1024, (h > 0 ? (r1 - r0) / h : 0) }'
    if [[ -n $pg1 ]]; then
        i=0
        for p in "${multi_pids[@]}"; do
            c=$((socks_held[$p] - socks_before[$p]))
            awk -v i="$i" -v c="$c" -v a="${rss_before[$p]}" -v b="${rss_held[$p]}" \
                'BEGIN { printf "multi_process    %d: holds %d connections (socket descriptors, minus those before)  VmRSS %.1f -> %.1f MB  %.2f KB per connection\n", i, c, a / 1024, b / 1024, (c > 0 ? (b - a) / c : 0) }'
            i=$((i + 1))
        done
        read -r ru0 rr0 <<<"$redis0"
        read -r ru1 rr1 <<<"$redis1"
        awk -v a="$pg0" -v b="$pg1" -v u0="$ru0" -v u1="$ru1" -v r0="$rr0" -v r1="$rr1" -v h="$held" \
            'BEGIN { printf "multi_deps       PostgreSQL Pss %.1f -> %.1f MB; Redis used_memory %.1f -> %.1f MB (%.0f bytes per held poll), VmRSS %.1f -> %.1f MB\n", a / 1024, b / 1024, u0 / 1024, u1 / 1024, (h > 0 ? (u1 - u0) * 1024 / h : 0), r0 / 1024, r1 / 1024 }'
    else
        echo "multi_process    (no snapshot: the polls were never all open)"
    fi
    echo "multi_probe      $answered of $asked held polls answered when probed (each poll's $MULTI_POLL_TIMEOUT s timeout, renewed)"
    for ((i = 1; i < ${#multi_pids[@]}; i++)); do
        kill -TERM "${multi_pids[$i]}" 2>/dev/null || true
        wait "${multi_pids[$i]}" 2>/dev/null || true
    done
    multi_pids=()
    took multi "$ts"
fi

if has renew; then
    ts=$EPOCHREALTIME
    measure renew --devices "$STATE_DIR/u.devices" --count "$IDLE_POLLS" --seconds "$RENEW_SECONDS" \
        --window "$RENEW_WINDOW" --poll-timeout 30
    took renew "$ts"
fi

if has deliver || has sends; then
    ts=$EPOCHREALTIME
    measure_whole "setup mesh" mesh --devices "$STATE_DIR/u.devices" --users "$RECEIVERS" \
        --per-user "$CHATS_PER_USER" --conns "$SETUP_CONNS" --out "$STATE_DIR/u.mesh"
    settle_db "the chat mesh"
    took "setup mesh" "$ts"
fi

if has deliver; then
    ts=$EPOCHREALTIME
    # --warmup: the 1,000 users coming online are announced to their contacts
    # (a query each) before the first rate is measured
    measure deliver --devices "$STATE_DIR/u.devices" --chats "$STATE_DIR/u.mesh" --senders "$SENDERS" --warmup 10 \
        --rates "$DELIVER_RATES" --seconds "$SECS" --grace "$DELIVER_GRACE" --stop-below "$DELIVER_STOP_BELOW"
    took deliver "$ts"
    sleep 3 # let the server finish what the last run left behind
fi

if has group; then
    ts=$EPOCHREALTIME
    load users --prefix g --users 100 --devices 2 --out "$STATE_DIR/g.devices"
    load group --devices "$STATE_DIR/g.devices" --members 100 --out "$STATE_DIR/g.chat"
    measure fanout --devices "$STATE_DIR/g.devices" --chat "$(cat "$STATE_DIR/g.chat")" --members 100 \
        --sends "$GROUP_SENDS"
    took group "$ts"
fi

if has sends; then
    ts=$EPOCHREALTIME
    measure sends --devices "$STATE_DIR/u.devices" --chats "$STATE_DIR/u.mesh" --conns "$SEND_CONNS" \
        --seconds "$SECS"
    took sends "$ts"
fi

if has history; then
    ts=$EPOCHREALTIME
    load users --prefix h --users 2 --devices 1 --out "$STATE_DIR/h.devices"
    load pairs --devices "$STATE_DIR/h.devices" --users 2 --out "$STATE_DIR/h.pairs"
    hchat=$(cut -d' ' -f1 "$STATE_DIR/h.pairs")
    load fill --devices "$STATE_DIR/h.devices" --chat "$hchat" --count "$HISTORY_MESSAGES"
    for c in $HISTORY_CONNS; do
        measure_whole "history, $c connections" history --devices "$STATE_DIR/h.devices" --chat "$hchat" \
            --conns "$c" --seconds "$SECS"
    done
    took history "$ts"
fi

if grep -q '"level":"error"' "$STATE_DIR/api.log"; then
    echo "natter-api logged errors during the run (first 5):"
    # (head closes the pipe early: without `|| true`, pipefail made the whole bench exit 141)
    grep '"level":"error"' "$STATE_DIR/api.log" | head -n 5 || true
fi
took "whole bench (from PostgreSQL start)" "$BENCH_T0"
