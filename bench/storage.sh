#!/usr/bin/env bash
# bench/storage.sh: bytes stored per message and per inbox event, for the
# README's capacity arithmetic. Starts a private PostgreSQL (the settings of
# `make run`/`make bench`: fsync on, lz4 WAL compression) + Redis + natter-api
# like bench/run.sh, fills them through the real API with natterload (nothing
# is inserted by hand), then reads pg_total_relation_size (heap + TOAST + every
# index) of the tables that grow with messages, divides by the rows and
# prints. Nobody polls, so no inbox row is acked or cleaned up: every event
# the sends wrote is still there, as for a user who is offline.
#
# The fill, in chats of the sizes a chat service has (knobs below):
#   - direct chats: STORAGE_USERS users with one device each, every user in
#     STORAGE_CHATS_PER_USER direct chats (natterload mesh); then closed-loop
#     sends for STORAGE_SECONDS from STORAGE_CONNS connections, connection i
#     as user i into a random one of its direct chats (natterload sends: a
#     ~65-character text each). WAL written per message is read from
#     pg_current_wal_lsn around this phase and around each group's fill.
#   - groups: one group per size in STORAGE_GROUP_SIZES (members = users
#     0..size-1), each filled with STORAGE_GROUP_MESSAGES messages by users 0
#     and 1 (natterload fill: a ~150-character text each).
# Figures are printed after each phase (direct only, then all), so the
# per-event cost is seen for both shapes. Talks only to 127.0.0.1; every step
# is bounded by the counts and durations below. Not part of `make bench`; the
# figures go with the date into bench/README.md.
#
# Knobs:
#   STORAGE_USERS (400)              users (one device each)
#   STORAGE_CHATS_PER_USER (20)      direct chats per user (USERS x this / 2 chats)
#   STORAGE_SECONDS (20)             duration of the direct sends
#   STORAGE_CONNS (64)               connections of the direct sends (<= USERS)
#   STORAGE_GROUP_SIZES ("8 20 100") one group of each size
#   STORAGE_GROUP_MESSAGES (1000)    messages per group
set -euo pipefail

# shellcheck source=scripts/env.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../scripts" && pwd -P)/env.sh"
REPO=$(natter_repo_root)
USERS=${STORAGE_USERS:-400}
CHATS_PER_USER=${STORAGE_CHATS_PER_USER:-20}
SECONDS_=${STORAGE_SECONDS:-20}
CONNS=${STORAGE_CONNS:-64}
GROUP_SIZES=${STORAGE_GROUP_SIZES:-8 20 100}
GROUP_MESSAGES=${STORAGE_GROUP_MESSAGES:-1000}

for g in $GROUP_SIZES; do
    ((g >= 2 && g <= 100 && g <= USERS)) || { echo "storage: group sizes must be 2..100 and <= STORAGE_USERS" >&2; exit 2; }
done
((CONNS >= 1 && CONNS <= USERS && SECONDS_ >= 1 && SECONDS_ <= 600)) ||
    { echo "storage: STORAGE_CONNS 1..USERS, STORAGE_SECONDS 1..600" >&2; exit 2; }

natter_ensure_packages
make -s -C "$REPO" all >/dev/null
OUT="$REPO/bench/out"
mkdir -p "$OUT"
cc -O2 -g -Wall -Wextra -std=c11 -o "$OUT/natterload" "$REPO/bench/natterload.c" -ljansson -lm
LOAD="$OUT/natterload"

STATE_DIR=$(mktemp -d /tmp/natter-bench-storage.XXXXXX)
chmod 755 "$STATE_DIR"
api_pid=
cleanup() {
    natter_kill_wait "$api_pid"
    natter_private_stop "$STATE_DIR"
}
trap cleanup EXIT

natter_pg_start "$STATE_DIR" >/dev/null
natter_redis_start "$STATE_DIR" test >/dev/null
export NATTER_DATABASE_URL NATTER_REDIS_URL
"$REPO/build/natter-api" migrate 2>/dev/null
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# as in bench/run.sh: cheap hashing and no rate limits, only so that the fill is quick
env NATTER_PORT="$PORT" NATTER_STATE_DIR="$STATE_DIR/api" NATTER_PWHASH_COST=min NATTER_LOG_LEVEL=warn \
    NATTER_LOGIN_MAX_PER_USER=1000000 NATTER_LOGIN_MAX_PER_IP=1000000 NATTER_ACCESS_TOKEN_TTL=7200 \
    NATTER_RATE_REGISTER_IP_BURST=0 NATTER_RATE_REGISTER_ALL_BURST=0 NATTER_RATE_SEND_BURST=0 \
    NATTER_RATE_CHAT_BURST=0 NATTER_RATE_MEMBER_BURST=0 NATTER_MAX_CONNECTIONS_PER_IP=1000000 \
    "$REPO/build/natter-api" 2>"$STATE_DIR/api.log" &
api_pid=$!
natter_wait_http "http://127.0.0.1:$PORT/healthz" "$STATE_DIR/api.log" || exit 1
load() { timeout -k 5 900 "$LOAD" "$@" --port "$PORT"; }
psql_() { "$NATTER_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -At -d "$NATTER_DATABASE_URL" "$@"; }

# Prints the figures. VACUUM first: the counters of users and chats are
# updated per message, and the measured tables should be what a settled
# system holds (insert-only tables lose nothing to it).
report() {
    local phase=$1
    psql_ -c "VACUUM (ANALYZE)"
    psql_ -F '|' <<'EOF' | awk -F'|' -v phase="$phase" '
        $1 == "t" { printf "storage_%-11s %s: %d rows, %.1f MB (heap %.1f MB, TOAST %.1f MB, indexes %.1f MB: %s) = %.0f bytes per row\n",
                        $2, phase, $3, $4 / 1048576, $5 / 1048576, $6 / 1048576, $7 / 1048576, $8, ($3 > 0 ? $4 / $3 : 0) }
        $1 == "m" { printf "storage_shape       %s: %d messages (avg text %.0f bytes, avg row %.0f bytes); %d inbox events (avg payload %.0f bytes), of which %d message events = %.2f per message; by type: %s\n",
                        phase, $2, $3, $4, $5, $6, $7, ($2 > 0 ? $7 / $2 : 0), $8 }'
SELECT 't', c.relname, (SELECT count(*) FROM messages WHERE c.relname = 'messages')
                     + (SELECT count(*) FROM inbox WHERE c.relname = 'inbox')
                     + (SELECT count(*) FROM push_outbox WHERE c.relname = 'push_outbox'),
       pg_total_relation_size(c.oid), pg_relation_size(c.oid),
       coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0),
       pg_indexes_size(c.oid),
       (SELECT string_agg(i.indexrelid::regclass || ' ' || round(pg_relation_size(i.indexrelid) / 1048576.0, 1) || ' MB', ', '
                          ORDER BY i.indexrelid::regclass::text)
          FROM pg_index i WHERE i.indrelid = c.oid)
  FROM pg_class c WHERE c.relname IN ('messages', 'inbox', 'push_outbox') AND c.relkind = 'r'
 ORDER BY c.relname;
SELECT 'm', (SELECT count(*) FROM messages), (SELECT coalesce(avg(octet_length(body)), 0) FROM messages),
       (SELECT coalesce(avg(pg_column_size(m.*)), 0) FROM messages m),
       (SELECT count(*) FROM inbox), (SELECT coalesce(avg(pg_column_size(payload)), 0) FROM inbox),
       (SELECT count(*) FROM inbox WHERE type = 'message'),
       (SELECT string_agg(type || ' ' || n, ', ' ORDER BY n DESC) FROM (SELECT type, count(*) n FROM inbox GROUP BY type) t);
EOF
}

echo "natter storage $(date -u +%Y-%m-%dT%H:%MZ), tree $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
load users --prefix s --users "$USERS" --devices 1 --out "$STATE_DIR/s.devices"
load mesh --devices "$STATE_DIR/s.devices" --users "$USERS" --per-user "$CHATS_PER_USER" --conns 32 \
    --out "$STATE_DIR/s.mesh"
psql_ -c "VACUUM (ANALYZE)"
lsn0=$(psql_ -c "SELECT pg_current_wal_lsn()")
m0=$(psql_ -c "SELECT count(*) FROM messages")
load sends --devices "$STATE_DIR/s.devices" --chats "$STATE_DIR/s.mesh" --conns "$CONNS" --seconds "$SECONDS_" |
    grep -v '^@' || true
sleep 1
psql_ -F ' ' -c "SELECT count(*) - $m0, pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0') FROM messages" |
    awk '{ printf "storage_wal       direct sends: %d messages, %.1f MB of WAL = %.0f bytes of WAL per message (commits shared by the send pipeline'"'"'s batches; lz4 full-page images)\n", $1, $2 / 1048576, ($1 > 0 ? $2 / $1 : 0) }'
report "direct chats"

for g in $GROUP_SIZES; do
    load group --devices "$STATE_DIR/s.devices" --members "$g" --out "$STATE_DIR/g$g.chat"
    lsn0=$(psql_ -c "SELECT pg_current_wal_lsn()")
    load fill --devices "$STATE_DIR/s.devices" --chat "$(cat "$STATE_DIR/g$g.chat")" --count "$GROUP_MESSAGES"
    sleep 1
    psql_ -F ' ' -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')" |
        awk -v n="$GROUP_MESSAGES" -v g="$g" '{ printf "storage_wal       group of %d: %d messages, %.1f MB of WAL = %.0f bytes of WAL per message, %.0f per member\n", g, n, $1 / 1048576, $1 / n, $1 / n / g }'
done
report "direct chats + groups of $GROUP_SIZES"
