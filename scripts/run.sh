#!/usr/bin/env bash
# `make run`: build, start a private PostgreSQL + Redis in the state dir, migrate, then run
# natter-api and natter-worker in the foreground until Ctrl-C (or until one of them dies).
# State (database, Redis AOF, dev JWT secret) lives in $NATTER_STATE_DIR or $REPO/.state and
# survives between runs.
set -euo pipefail

# Values the user set win over the ones we compute (natter_pg_start/natter_redis_start
# export their own), so remember them before anything else.
user_db_url_set=${NATTER_DATABASE_URL+x}
user_db_url=${NATTER_DATABASE_URL-}
user_redis_url_set=${NATTER_REDIS_URL+x}
user_redis_url=${NATTER_REDIS_URL-}

# shellcheck source=scripts/env.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/env.sh"

REPO=$(natter_repo_root)
STATE_DIR=${NATTER_STATE_DIR:-$REPO/.state}
mkdir -p -- "$STATE_DIR"
STATE_DIR=$(cd -- "$STATE_DIR" && pwd -P)

natter_ensure_packages
make -C "$REPO"

api_pid=
worker_pid=
cleaned_up=

# Is PID a live (not zombie) process? (It may be reaped between the test and the read:
# a failed `$(<file)` expansion ends a `set -e` script, a failed `read` only returns 1.)
alive() {
    local pid=$1 stat
    [[ -n $pid ]] || return 1
    if [[ -r /proc/$pid/stat ]]; then
        { read -r stat <"/proc/$pid/stat"; } 2>/dev/null || return 1
        stat=${stat##*) }
        [[ ${stat:0:1} != Z ]]
    else
        kill -0 "$pid" 2>/dev/null
    fi
}

stop_children() {
    local pid i
    for pid in $api_pid $worker_pid; do
        if alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    for ((i = 0; i < 150; i++)); do
        alive "$api_pid" || alive "$worker_pid" || break
        sleep 0.1
    done
    for pid in $api_pid $worker_pid; do
        if alive "$pid"; then
            echo "natter: pid $pid did not stop within 15 s; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for pid in $api_pid $worker_pid; do
        wait "$pid" 2>/dev/null || true
    done
}

cleanup() {
    [[ -z $cleaned_up ]] || return 0
    cleaned_up=1
    trap '' INT TERM HUP
    stop_children
    natter_redis_stop "$STATE_DIR" || true
    natter_pg_stop "$STATE_DIR" || true
}

# shellcheck disable=SC2317  # invoked by trap
on_signal() {
    echo >&2
    echo "natter: stopping…" >&2
    cleanup
    echo "natter: stopped (data kept in $STATE_DIR)" >&2
    exit 0
}

# HUP too: in sessions of their own, the servers no longer get the terminal's hangup
trap on_signal INT TERM HUP
trap cleanup EXIT

natter_pg_start "$STATE_DIR" run
natter_redis_start "$STATE_DIR" run

if [[ -n $user_db_url_set ]]; then
    export NATTER_DATABASE_URL=$user_db_url
fi
if [[ -n $user_redis_url_set ]]; then
    export NATTER_REDIS_URL=$user_redis_url
fi
export NATTER_ENV=${NATTER_ENV:-development}
export NATTER_STATE_DIR=$STATE_DIR
# The embedded store's pre-signed URLs must point at the port we serve on.
if [[ -z ${NATTER_PUBLIC_URL-} ]]; then
    listen=${NATTER_LISTEN_ADDR:-127.0.0.1}
    [[ $listen != *:* ]] || listen="[$listen]"
    export NATTER_PUBLIC_URL="http://$listen:${NATTER_PORT:-8080}"
fi
# Everything else (NATTER_PORT, NATTER_LOG_LEVEL, NATTER_PUSH_WEBHOOK_URL/_SECRET, …) is
# already in our environment if the user exported it, and reaches the children as is.

# natter-worker's operator listener (NATTER_WORKER_LISTEN: address:port, empty = none)
worker_listen=${NATTER_WORKER_LISTEN-127.0.0.1:8081}
worker_url="http://$worker_listen/  (its own /metrics, /healthz, /readyz)"
[[ -n $worker_listen ]] || worker_url="no operator listener (NATTER_WORKER_LISTEN is empty)"

cd "$REPO"
"$REPO/build/natter-api" migrate

# Each server runs in a session of its own (setsid execs it: same pid), so the SIGINT of
# Ctrl-C reaches only this script, whose trap stops them. Were they in the terminal's
# process group they would get it too, and one of them could exit before the trap ran:
# `wait -n` below would then report it as having "exited on its own".
setsid "$REPO/build/natter-api" &
api_pid=$!
setsid "$REPO/build/natter-worker" &
worker_pid=$!

cat <<EOF

  Natter is running ($NATTER_ENV)
    API:        http://${NATTER_LISTEN_ADDR:-127.0.0.1}:${NATTER_PORT:-8080}/  (try /healthz, /readyz, /openapi.yaml)
    worker:     $worker_url
    state dir:  $STATE_DIR
    PostgreSQL: psql "$NATTER_DATABASE_URL"
    Redis:      $NATTER_REDIS_URL
    pids:       natter-api $api_pid, natter-worker $worker_pid
  Press Ctrl-C to stop everything (data is kept for the next run).

EOF

rc=0
wait -n "$api_pid" "$worker_pid" || rc=$?
if alive "$api_pid"; then
    echo "natter: natter-worker exited on its own (status $rc); stopping" >&2
else
    echo "natter: natter-api exited on its own (status $rc); stopping" >&2
fi
cleanup
exit "$rc"
