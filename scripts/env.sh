# shellcheck shell=bash
# Natter development/test environment helpers. Source this file from bash:
#
#   . scripts/env.sh
#   natter_ensure_packages
#   natter_pg_start "$STATE_DIR" [test]     # exports NATTER_PG_SOCKET_DIR, NATTER_DATABASE_URL
#   natter_redis_start "$STATE_DIR" [test]  # exports NATTER_REDIS_SOCKET, NATTER_REDIS_URL
#   natter_redis_stop "$STATE_DIR"
#   natter_pg_stop "$STATE_DIR"
#
# Everything is safe under `set -euo pipefail`: functions return non-zero with a message on
# stderr instead of relying on errexit, and every wait is bounded. Nothing here changes the
# caller's shell options.

# Directory of this file, resolved once at source time (never hard-coded).
_NATTER_SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)

NATTER_DEB_PACKAGES="build-essential pkg-config xz-utils patch libpq-dev libhiredis-dev libjansson-dev libjwt-dev libsodium-dev libcurl4-openssl-dev postgresql-15 postgresql-client-15 redis-server python3-pytest python3-requests python3-jsonschema python3-yaml python3-botocore clang-format jq"

# What `make test` needs on top: prometheus provides promtool (tests/api/test_health.py
# checks /metrics with it); clang and its runtime build the fuzz harnesses (tests/fuzz/);
# chromium, chromium-driver and python3-selenium run the web client in a real browser
# (tests/api/test_web_client.py; the emoji font for its screenshots); haproxy runs
# deploy/haproxy.cfg in front of three natter-api (tests/api/test_haproxy.py);
# python3-cryptography and python3-h2 make the fake FCM and APNs servers (test CA, JWT
# signature checks, HTTP/2; tests/api/providerlib.py).
NATTER_TEST_DEB_PACKAGES="prometheus clang libclang-rt-14-dev chromium chromium-driver python3-selenium fonts-noto-color-emoji haproxy python3-cryptography python3-h2"

NATTER_PG_BIN=${NATTER_PG_BIN:-/usr/lib/postgresql/15/bin}
NATTER_PG_PORT=5432 # only names the socket file (.s.PGSQL.5432); TCP is off

natter_repo_root() {
    (cd "$_NATTER_SCRIPTS_DIR/.." && pwd -P)
}

_natter_err() {
    printf 'natter: %s\n' "$*" >&2
}

# ---------------------------------------------------------------------------------------
# Packages

# natter_ensure_packages [PACKAGE...]: apt-get install the given packages (default: the
# list above) that are not installed.
natter_ensure_packages() {
    local pkg status missing=() wanted=("$@")
    if ((${#wanted[@]} == 0)); then
        read -r -a wanted <<<"$NATTER_DEB_PACKAGES"
    fi
    for pkg in "${wanted[@]}"; do
        # shellcheck disable=SC2016  # ${Status} is a dpkg-query field, not a shell variable
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        if [[ $status != "install ok installed" ]]; then
            missing+=("$pkg")
        fi
    done
    ((${#missing[@]} == 0)) && return 0

    local -a sudo=()
    if ((EUID != 0)); then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            _natter_err "missing Debian packages: ${missing[*]}"
            _natter_err "not root and no sudo: install them with apt-get as root and retry"
            return 1
        fi
    fi
    echo "natter: installing missing Debian packages: ${missing[*]}" >&2
    if ! "${sudo[@]}" apt-get update; then
        _natter_err "apt-get update failed (needed for: ${missing[*]})"
        return 1
    fi
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"; then
        _natter_err "apt-get install failed for: ${missing[*]}"
        return 1
    fi
}

# ---------------------------------------------------------------------------------------
# Small helpers

# Absolute, symlink-free path of STATE_DIR (created if missing).
_natter_abs_state_dir() {
    local dir=${1:?state dir required}
    if ! mkdir -p -- "$dir"; then
        _natter_err "cannot create state dir $dir"
        return 1
    fi
    (cd -- "$dir" && pwd -P)
}

# First 12 hex digits of sha256 of a string.
_natter_hash12() {
    local sum
    sum=$(printf '%s' "$1" | sha256sum) || return 1
    printf '%s\n' "${sum:0:12}"
}

# Percent-encode a value for a URI query (keeps / . _ ~ - and alphanumerics).
_natter_uri_encode() {
    local s=$1 out='' c i
    local LC_ALL=C
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
        [A-Za-z0-9/._~-]) out+=$c ;;
        *) out+=$(printf '%%%02X' "'$c") ;;
        esac
    done
    printf '%s\n' "$out"
}

# Run a command as the PostgreSQL OS user: `postgres` via runuser when we are root
# (initdb/postgres refuse to run as root), else as ourselves. cwd is / so that a
# root-only current directory does not produce warnings.
_natter_as_pg() {
    if ((EUID == 0)); then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

_natter_pg_owner() {
    if ((EUID == 0)); then echo postgres; else id -un; fi
}

# Unix socket paths must fit in sun_path (108 bytes incl. the NUL).
_natter_sock_fits() {
    local LC_ALL=C
    ((${#1} <= 107))
}

# ---------------------------------------------------------------------------------------
# PostgreSQL

# Prints the cluster directory (data in ./data, socket and log in .) for STATE_DIR,
# creating it (and the /tmp fallback + symlink) when needed.
_natter_pg_dir() {
    local abs link target owner fallback
    abs=$(_natter_abs_state_dir "$1") || return 1
    link="$abs/pg"
    owner=$(_natter_pg_owner)
    if ((EUID == 0)) && ! id postgres >/dev/null 2>&1; then
        _natter_err "OS user 'postgres' does not exist (is postgresql-15 installed?)"
        return 1
    fi

    if [[ -L $link ]]; then
        target=$(readlink -- "$link")
        if [[ ! -d $target ]] && ! mkdir -m 700 -- "$target"; then
            _natter_err "cannot create $target (target of $link)"
            return 1
        fi
        chown "$owner:" -- "$target" 2>/dev/null || true
        (cd -- "$target" && pwd -P)
        return 0
    fi

    if { [[ -d $link ]] || mkdir -m 700 -- "$link"; } && chown "$owner:" -- "$link" &&
        _natter_as_pg test -d "$link" -a -w "$link" -a -x "$link" 2>/dev/null &&
        _natter_sock_fits "$link/.s.PGSQL.$NATTER_PG_PORT"; then
        printf '%s\n' "$link"
        return 0
    fi

    # Not reachable by the postgres user (e.g. under /root) or socket path too long:
    # the cluster lives under /tmp, $STATE_DIR/pg is a symlink to it.
    fallback="/tmp/natter-pg-$(_natter_hash12 "$abs")"
    if [[ -d $link && ! -L $link ]]; then
        if ! rmdir -- "$link" 2>/dev/null; then
            _natter_err "$link exists, is not empty, and the postgres user cannot use it;" \
                "move it away and retry"
            return 1
        fi
    fi
    if [[ -e $fallback || -L $fallback ]]; then
        if [[ -L $fallback || ! -d $fallback || $(stat -c %U -- "$fallback") != "$owner" ]]; then
            _natter_err "$fallback exists but is not a directory owned by $owner; remove it and retry"
            return 1
        fi
    else
        if ! mkdir -m 700 -- "$fallback" || ! chown "$owner:" -- "$fallback"; then
            _natter_err "cannot create $fallback"
            return 1
        fi
    fi
    if ! ln -s -- "$fallback" "$link"; then
        _natter_err "cannot create symlink $link -> $fallback"
        return 1
    fi
    printf '%s\n' "$fallback"
}

# Quote a value for postgresql.conf.
_natter_pg_quote() {
    printf "'%s'" "${1//\'/\'\'}"
}

_natter_pg_log_tail() {
    local log=$1
    if [[ -f $log ]]; then
        _natter_err "last lines of $log:"
        tail -n 30 -- "$log" >&2 || true
    fi
}

# Writes $data/natter.conf (rewritten on every start, so run/test mode can change) and
# makes postgresql.conf include it.
_natter_pg_write_conf() {
    local dir=$1 mode=$2 data="$1/data" conf
    conf=$(
        echo "# generated by scripts/env.sh on every start; edits are lost"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = $(_natter_pg_quote "$dir")"
        echo "port = $NATTER_PG_PORT"
        echo "max_connections = 200"
        echo "logging_collector = off"
        echo "log_destination = 'stderr'"
        # Tuned for Natter's write path (README "PostgreSQL settings"); fsync and
        # synchronous_commit stay on outside the test suite: a 201 means on disk.
        echo "shared_buffers = 256MB"
        echo "wal_buffers = 16MB"
        echo "wal_compression = lz4"
        echo "max_wal_size = 4GB"
        echo "min_wal_size = 512MB"
        echo "checkpoint_timeout = 15min"
        echo "checkpoint_completion_target = 0.9"
        echo "jit = off"
        echo "random_page_cost = 1.1"
        echo "effective_cache_size = 2GB"
        # NATTER_PG_PRELOAD: libraries to preload first (scripts/citus.sh: citus, which
        # also needs prepared transactions for its two-phase commits)
        local preload=${NATTER_PG_PRELOAD:-}
        if [[ -n ${NATTER_PG_STAT_STATEMENTS:-} ]]; then
            preload=${preload:+$preload,}pg_stat_statements
            echo "pg_stat_statements.track = all"
        fi
        if [[ -n $preload ]]; then
            echo "shared_preload_libraries = $(_natter_pg_quote "$preload")"
        fi
        if [[ ,$preload, == *,citus,* ]]; then
            echo "max_prepared_transactions = 200"
        fi
        if [[ $mode == test ]]; then
            echo "fsync = off"
            echo "full_page_writes = off"
        else
            echo "fsync = on"
        fi
        echo "synchronous_commit = on"
    ) || return 1
    printf '%s\n' "$conf" >"$data/natter.conf" || return 1
    chown "$(_natter_pg_owner):" -- "$data/natter.conf" || return 1
    if ! grep -qx "include_if_exists = 'natter.conf'" "$data/postgresql.conf"; then
        printf "\n# natter\ninclude_if_exists = 'natter.conf'\n" >>"$data/postgresql.conf" || return 1
    fi
}

# Is the cluster in $1 running? (pidfile present and pg_ctl agrees)
_natter_pg_running() {
    local data="$1/data"
    [[ -f $data/postmaster.pid ]] || return 1
    _natter_as_pg "$NATTER_PG_BIN/pg_ctl" status -D "$data" >/dev/null 2>&1
}

_natter_psql() {
    local dir=$1
    shift
    PGOPTIONS='-c client_min_messages=warning' \
        "$NATTER_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$NATTER_PG_PORT" "$@"
}

natter_pg_start() {
    local state=${1:?usage: natter_pg_start STATE_DIR [test]} mode=${2:-run}
    local dir data log locale out exists
    if [[ $mode != run && $mode != test ]]; then
        _natter_err "natter_pg_start: mode must be 'run' or 'test', not '$mode'"
        return 1
    fi
    if [[ ! -x $NATTER_PG_BIN/pg_ctl ]]; then
        _natter_err "PostgreSQL 15 not found in $NATTER_PG_BIN (run natter_ensure_packages)"
        return 1
    fi
    dir=$(_natter_pg_dir "$state") || return 1
    data="$dir/data"
    log="$dir/postgres.log"

    if [[ ! -f $data/PG_VERSION ]]; then
        if [[ -d $data ]] && [[ -n $(ls -A -- "$data") ]]; then
            _natter_err "$data exists but holds no cluster (interrupted initdb?); remove it and retry"
            return 1
        fi
        locale=C
        if locale -a 2>/dev/null | grep -qiE '^C\.utf-?8$'; then locale=C.UTF-8; fi
        if ! out=$(_natter_as_pg "$NATTER_PG_BIN/initdb" -D "$data" -A trust -U postgres \
            -E UTF8 --locale="$locale" 2>&1); then
            _natter_err "initdb failed for $data:"
            printf '%s\n' "$out" >&2
            return 1
        fi
    fi
    _natter_pg_write_conf "$dir" "$mode" || {
        _natter_err "cannot write the PostgreSQL configuration in $data"
        return 1
    }

    if _natter_pg_running "$dir"; then
        # Reuse; pick up the (possibly changed) configuration.
        _natter_as_pg "$NATTER_PG_BIN/pg_ctl" reload -D "$data" </dev/null >/dev/null 2>&1 || true
    elif ! _natter_as_pg "$NATTER_PG_BIN/pg_ctl" start -D "$data" -l "$log" -w -t 60 \
        </dev/null >/dev/null 2>&1; then
        _natter_err "PostgreSQL failed to start (data $data)"
        _natter_pg_log_tail "$log"
        return 1
    fi

    # Role and database, idempotent.
    if ! _natter_psql "$dir" -U postgres -d postgres -c "DO \$\$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'natter') THEN
                CREATE ROLE natter SUPERUSER LOGIN;
            END IF;
        END \$\$;" >/dev/null; then
        _natter_err "cannot create role natter (socket dir $dir)"
        _natter_pg_log_tail "$log"
        return 1
    fi
    if ! exists=$(_natter_psql "$dir" -U postgres -d postgres -tA \
        -c "SELECT 1 FROM pg_database WHERE datname = 'natter'"); then
        _natter_err "cannot query databases (socket dir $dir)"
        return 1
    fi
    if [[ $exists != 1 ]]; then
        if ! _natter_psql "$dir" -U postgres -d postgres \
            -c "CREATE DATABASE natter OWNER natter" >/dev/null; then
            _natter_err "cannot create database natter (socket dir $dir)"
            return 1
        fi
    fi

    local host
    host=$(_natter_uri_encode "$dir") || return 1
    export NATTER_PG_SOCKET_DIR="$dir"
    export NATTER_DATABASE_URL="postgresql:///natter?host=$host&user=natter"
}

natter_pg_stop() {
    local state=${1:?usage: natter_pg_stop STATE_DIR} link dir
    [[ -d $state ]] || return 0
    link="$state/pg"
    [[ -e $link ]] || return 0
    dir=$(cd -- "$link" && pwd -P) || return 0
    [[ -f $dir/data/PG_VERSION ]] || return 0
    _natter_pg_running "$dir" || return 0
    if ! _natter_as_pg "$NATTER_PG_BIN/pg_ctl" stop -D "$dir/data" -m fast -w -t 60 \
        </dev/null >/dev/null 2>&1; then
        _natter_err "PostgreSQL did not stop (data $dir/data)"
        _natter_pg_log_tail "$dir/postgres.log"
        return 1
    fi
}

# natter_pg_remove STATE_DIR: removes the data directory natter_pg_start put under
# /tmp/natter-pg-* for STATE_DIR (the target of STATE_DIR/pg), once it is stopped.
natter_pg_remove() {
    local link="${1:?usage: natter_pg_remove STATE_DIR}/pg" dir
    [[ -L $link ]] || return 0
    dir=$(readlink -- "$link" || true)
    if [[ $dir == /tmp/natter-pg-* ]]; then rm -rf -- "$dir"; fi
}

# natter_wait_http URL LOG: waits up to 10 s for URL to answer 2xx (a server just
# started in the background); otherwise prints the end of LOG and fails.
natter_wait_http() {
    local url=${1:?usage: natter_wait_http URL LOG} log=${2:?usage: natter_wait_http URL LOG}
    for _ in $(seq 1 100); do
        curl -fs "$url" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    curl -fs "$url" >/dev/null 2>&1 && return 0
    _natter_err "$url did not answer; the end of $log:"
    tail -n 20 "$log" >&2 || true
    return 1
}

# natter_kill_wait PID: SIGTERM to a process this shell started, then waits for it
# (empty PID: nothing).
natter_kill_wait() {
    [[ -n ${1:-} ]] || return 0
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# natter_private_stop STATE_DIR: stops the private Redis and PostgreSQL of a throw-away
# state directory and removes everything (the cleanup of the test and bench runs).
natter_private_stop() {
    local state=${1:?usage: natter_private_stop STATE_DIR}
    natter_redis_stop "$state" || true
    natter_pg_stop "$state" || true
    natter_pg_remove "$state"
    rm -rf -- "$state"
}

# ---------------------------------------------------------------------------------------
# Redis

# Socket path for STATE_DIR (absolute); /tmp fallback when the path is too long.
_natter_redis_sock_path() {
    local abs sock
    abs=$(_natter_abs_state_dir "$1") || return 1
    sock="$abs/redis/redis.sock"
    if ! _natter_sock_fits "$sock"; then
        sock="/tmp/natter-redis-$(_natter_hash12 "$abs").sock"
    fi
    printf '%s\n' "$sock"
}

# Quote a value for redis.conf (double-quoted string with escapes).
_natter_redis_quote() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

# Prints the PID of the redis-server of this state dir if it is alive, else fails.
_natter_redis_pid() {
    local pidfile="$1/redis.pid" pid comm
    [[ -f $pidfile ]] || return 1
    pid=$(<"$pidfile") || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled PID.
    if [[ -r /proc/$pid/comm ]]; then
        comm=$(<"/proc/$pid/comm") || return 1
        [[ $comm == redis-server* ]] || return 1
    fi
    printf '%s\n' "$pid"
}

_natter_redis_ping() {
    [[ $(redis-cli -s "$1" ping 2>/dev/null </dev/null) == PONG ]]
}

natter_redis_start() {
    local state=${1:?usage: natter_redis_start STATE_DIR [test]} mode=${2:-run}
    local abs dir sock conf pid i
    if [[ $mode != run && $mode != test ]]; then
        _natter_err "natter_redis_start: mode must be 'run' or 'test', not '$mode'"
        return 1
    fi
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        _natter_err "redis-server/redis-cli not found (run natter_ensure_packages)"
        return 1
    fi
    abs=$(_natter_abs_state_dir "$state") || return 1
    dir="$abs/redis"
    sock=$(_natter_redis_sock_path "$abs") || return 1
    if [[ ! -d $dir ]] && ! mkdir -m 700 -- "$dir"; then
        _natter_err "cannot create $dir"
        return 1
    fi

    if pid=$(_natter_redis_pid "$dir"); then
        # Already running (maybe still starting): wait for it to answer.
        for ((i = 0; i < 100; i++)); do
            if _natter_redis_ping "$sock"; then
                export NATTER_REDIS_SOCKET="$sock"
                export NATTER_REDIS_URL="unix://$sock"
                return 0
            fi
            sleep 0.1
        done
        _natter_err "redis-server (pid $pid) runs for $dir but does not answer on $sock"
        return 1
    fi
    rm -f -- "$dir/redis.pid"
    [[ -S $sock ]] && rm -f -- "$sock"

    conf=$(
        echo "# generated by scripts/env.sh on every start; edits are lost"
        echo "port 0"
        echo "unixsocket $(_natter_redis_quote "$sock")"
        echo "unixsocketperm 700"
        echo "daemonize yes"
        echo "pidfile $(_natter_redis_quote "$dir/redis.pid")"
        echo "logfile $(_natter_redis_quote "$dir/redis.log")"
        echo "dir $(_natter_redis_quote "$dir")"
        if [[ $mode == test ]]; then
            echo 'save ""'
            echo "appendonly no"
        else
            echo "appendonly yes"
        fi
    ) || return 1
    printf '%s\n' "$conf" >"$dir/redis.conf" || {
        _natter_err "cannot write $dir/redis.conf"
        return 1
    }

    if ! redis-server "$dir/redis.conf" </dev/null >"$dir/start.out" 2>&1; then
        _natter_err "redis-server failed to start:"
        cat -- "$dir/start.out" >&2 || true
        [[ -f $dir/redis.log ]] && tail -n 20 -- "$dir/redis.log" >&2
        return 1
    fi
    for ((i = 0; i < 100; i++)); do
        if _natter_redis_ping "$sock"; then
            export NATTER_REDIS_SOCKET="$sock"
            export NATTER_REDIS_URL="unix://$sock"
            return 0
        fi
        sleep 0.1
    done
    _natter_err "redis-server did not answer on $sock within 10 s"
    [[ -f $dir/redis.log ]] && tail -n 20 -- "$dir/redis.log" >&2
    return 1
}

natter_redis_stop() {
    local state=${1:?usage: natter_redis_stop STATE_DIR} abs dir sock pid i
    [[ -d $state/redis ]] || return 0
    abs=$(cd -- "$state" && pwd -P) || return 0
    dir="$abs/redis"
    pid=$(_natter_redis_pid "$dir") || return 0
    sock=$(_natter_redis_sock_path "$abs") || return 1

    # SHUTDOWN saves per the config (run mode: RDB + AOF flush; test mode: nothing).
    redis-cli -s "$sock" shutdown </dev/null >/dev/null 2>&1 || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        if ((i == 50)); then
            # Refused (e.g. failed save) or stuck: stop without saving.
            redis-cli -s "$sock" shutdown nosave </dev/null >/dev/null 2>&1 ||
                kill -TERM "$pid" 2>/dev/null || true
        fi
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        _natter_err "redis-server (pid $pid) did not stop in 10 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f -- "$dir/redis.pid"
    [[ -S $sock ]] && rm -f -- "$sock"
    return 0
}
