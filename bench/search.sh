#!/usr/bin/env bash
# bench/search.sh: message search latency (GET /v1/search, issue 14) on a table of a
# few million messages. Starts a private PostgreSQL + Redis + natter-api (like
# bench/run.sh), loads the messages directly with SQL (generate_series: bounded,
# minutes rather than hours of sends), rebuilds the search index and times it, then
# asks natter-api the same search several times per query kind and prints the
# p50/p99 latency of each (one HTTP client, one request at a time). Talks only to
# 127.0.0.1; everything is bounded by the counts below. Record the figures with the
# date in bench/README.md.
#
# Knobs:
#   BENCH_SEARCH_MESSAGES (2000000)   messages loaded
#   BENCH_SEARCH_CHATS (20000)        chats they are spread over (2 members each)
#   BENCH_SEARCH_MY_CHATS (200)       of which the searching user is a member
#   BENCH_SEARCH_RUNS (40)            requests per query kind
#   BENCH_SEARCH_TIMEOUT_MS (20000)   NATTER_SEARCH_TIMEOUT_MS during the bench (the
#                                     default, 3000, would cut the slowest kinds short)
set -euo pipefail

# shellcheck source=scripts/env.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../scripts" && pwd -P)/env.sh"
REPO=$(natter_repo_root)
MESSAGES=${BENCH_SEARCH_MESSAGES:-2000000}
CHATS=${BENCH_SEARCH_CHATS:-20000}
MY_CHATS=${BENCH_SEARCH_MY_CHATS:-200}
RUNS=${BENCH_SEARCH_RUNS:-40}
TIMEOUT_MS=${BENCH_SEARCH_TIMEOUT_MS:-20000}
PYTHON=/usr/bin/python3

natter_ensure_packages
make -C "$REPO" -s all

STATE_DIR=$(mktemp -d /tmp/natter-bench-search.XXXXXX)
chmod 755 "$STATE_DIR"
api_pid=
cleanup() {
    natter_kill_wait "$api_pid"
    natter_private_stop "$STATE_DIR"
}
trap cleanup EXIT

natter_pg_start "$STATE_DIR" test >/dev/null
natter_redis_start "$STATE_DIR" test >/dev/null
export NATTER_DATABASE_URL NATTER_REDIS_URL
"$REPO/build/natter-api" migrate 2>/dev/null
PORT=$($PYTHON -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
env NATTER_PORT="$PORT" NATTER_STATE_DIR="$STATE_DIR/api" NATTER_PWHASH_COST=min NATTER_LOG_LEVEL=warn \
    NATTER_ACCESS_TOKEN_TTL=7200 \
    NATTER_RATE_SEARCH_BURST=0 NATTER_SEARCH_TIMEOUT_MS="$TIMEOUT_MS" \
    "$REPO/build/natter-api" 2>"$STATE_DIR/api.log" &
api_pid=$!
natter_wait_http "http://127.0.0.1:$PORT/healthz" "$STATE_DIR/api.log" || exit 1

psql_() { "$NATTER_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -At -d "$NATTER_DATABASE_URL" "$@"; }

# two users through the API (the searcher logs in; the other one is every chat's partner)
"$PYTHON" - "$PORT" >"$STATE_DIR/token" <<'EOF'
import sys, requests
base = f"http://127.0.0.1:{sys.argv[1]}"
for name in ("searcher", "partner"):
    r = requests.post(base + "/v1/auth/register", json={"username": name, "password": "bench password 1"})
    assert r.status_code == 201, r.text
r = requests.post(base + "/v1/auth/login", json={"username": "searcher", "password": "bench password 1"})
print(r.json()["access_token"])
EOF

t0=$EPOCHREALTIME
# Vocabulary: 5,000 made-up lowercase words (pg_temp.word); a message takes 6-25 of them, word i
# drawn with a skewed (power) distribution so that a few words are very common
# and most are rare, as in real text. The searcher is a member of MY_CHATS chats
# (ids 1..MY_CHATS); the partner of all of them.
psql_ <<EOF
DROP INDEX messages_search_idx;
-- word i of the vocabulary, computed rather than looked up (an array lookup per
-- word would detoast the whole array each time)
CREATE FUNCTION pg_temp.word(i int) RETURNS text IMMUTABLE LANGUAGE sql
  AS \$\$ SELECT translate(substr(md5(i::text), 1, 3 + i % 7), '0123456789', 'ghijklmnop') \$\$;
INSERT INTO chats (id, kind, title, creator_id, last_seq) OVERRIDING SYSTEM VALUE
  SELECT c, 'group', 'bench ' || c, 2, 0 FROM generate_series(1, $CHATS) c;
SELECT FROM setval(pg_get_serial_sequence('chats', 'id'), $CHATS);
INSERT INTO chat_members (chat_id, user_id, role) SELECT c, 2, 'owner' FROM generate_series(1, $CHATS) c;
INSERT INTO chat_members (chat_id, user_id, role) SELECT c, 1, 'member' FROM generate_series(1, $MY_CHATS) c;
INSERT INTO messages (chat_id, seq, sender_id, kind, body, created_at)
  SELECT 1 + (n - 1) % $CHATS, 1 + (n - 1) / $CHATS, 1 + n % 2, 'text',
         (SELECT string_agg(pg_temp.word(1 + floor(4999 * power(random(), 3))::int + 0 * k), ' ')
            FROM generate_series(1, 6 + (n::bigint * 7919 % 20)::int) k),
         now() - make_interval(secs => ($MESSAGES - n) * 0.5)
  FROM generate_series(1, $MESSAGES) n;
UPDATE chats c SET last_seq = m.mx FROM (SELECT chat_id, max(seq) mx FROM messages GROUP BY chat_id) m
  WHERE m.chat_id = c.id;
ANALYZE;
EOF
t1=$EPOCHREALTIME
psql_ -c "CREATE INDEX messages_search_idx ON messages USING gin (chat_id, to_tsvector('simple'::regconfig, body))
          WHERE kind = 'text' AND deleted_at IS NULL"
t2=$EPOCHREALTIME
psql_ -c "ANALYZE messages"
printf 'loaded %s messages in %s chats (searcher in %s) in %.0f s; index built in %.1f s (%.2f s per 100,000); table %s, index %s\n' \
    "$(psql_ -c 'SELECT count(*) FROM messages')" "$CHATS" "$MY_CHATS" "$(echo "$t1 - $t0" | bc)" \
    "$(echo "$t2 - $t1" | bc)" "$(echo "($t2 - $t1) * 100000 / $MESSAGES" | bc -l)" \
    "$(psql_ -c "SELECT pg_size_pretty(pg_table_size('messages'))")" \
    "$(psql_ -c "SELECT pg_size_pretty(pg_relation_size('messages_search_idx'))")"

# words by frequency in the searcher's chats: a common one, a middling one, a rare one
read -r COMMON MIDDLE RARE < <(psql_ -F ' ' <<'EOF'
WITH w AS (SELECT word, nentry FROM ts_stat($$SELECT to_tsvector('simple', body) FROM messages
                                              WHERE chat_id <= 200 AND kind = 'text'$$))
SELECT (SELECT word FROM w ORDER BY nentry DESC, word LIMIT 1),
       (SELECT word FROM w ORDER BY abs(nentry - 500), word LIMIT 1),
       (SELECT word FROM w ORDER BY nentry, word LIMIT 1)
EOF
)
SECOND=$(psql_ -c "SELECT word FROM ts_stat(\$\$SELECT to_tsvector('simple', body) FROM messages WHERE chat_id <= 200\$\$)
                   ORDER BY nentry DESC, word OFFSET 1 LIMIT 1")
echo "query words: common=$COMMON ($SECOND) middle=$MIDDLE rare=$RARE"

"$PYTHON" - "$PORT" "$(cat "$STATE_DIR/token")" "$RUNS" "$COMMON" "$SECOND" "$MIDDLE" "$RARE" <<'EOF'
import sys, time, requests
port, token, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
common, second, middle, rare = sys.argv[4:8]
s = requests.Session()
s.headers["Authorization"] = f"Bearer {token}"
kinds = [
    ("rare word", {"q": rare}),
    ("middling word", {"q": middle}),
    ("common word, newest", {"q": common}),
    ("common word, relevance", {"q": common, "order": "relevance"}),
    ("two common words (and)", {"q": f"{common} {second}"}),
    ("phrase of two", {"q": f'"{common} {second}"'}),
    ("prefix", {"q": common[:2] + "*"}),
    ("common word, one chat", {"q": common, "chat_id": 7}),
    ("common word, page 2", None),
]
for name, params in kinds:
    if params is None:
        first = s.get(f"http://127.0.0.1:{port}/v1/search", params={"q": common}, timeout=120).json()
        params = {"q": common, "cursor": first["next_cursor"]}
    lat, results, statuses = [], 0, {}
    for _ in range(runs):
        t = time.perf_counter()
        r = s.get(f"http://127.0.0.1:{port}/v1/search", params=params, timeout=120)
        lat.append((time.perf_counter() - t) * 1000)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        if r.status_code == 200:
            results = len(r.json()["results"])
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print(f"search {name:26s} p50 {p(0.50):8.1f} ms  p99 {p(0.99):8.1f} ms  max {lat[-1]:8.1f} ms"
          f"  ({runs} runs, {results} results/page, statuses {statuses})")
EOF
