#!/usr/bin/env bash
# Bus messages per natter-api instance per 1:1 message with 1, 3 and 6
# instances (bench/bus.py): a private PostgreSQL + Redis under /tmp, the
# migrations, then bus.py. Counts messages, not time: a busy machine does not
# change the figures. BUS_INSTANCES ("1 3 6"), BUS_PAIRS (6), BUS_MESSAGES (10).
set -euo pipefail

# shellcheck source=scripts/env.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../scripts" && pwd -P)/env.sh"
REPO=$(natter_repo_root)
natter_ensure_packages
make -s -C "$REPO" all >/dev/null

STATE_DIR=$(mktemp -d /tmp/natter-bus.XXXXXX)
chmod 755 "$STATE_DIR"
cleanup() {
    natter_private_stop "$STATE_DIR"
}
trap cleanup EXIT
natter_pg_start "$STATE_DIR" test >/dev/null
natter_redis_start "$STATE_DIR" test >/dev/null
export NATTER_DATABASE_URL NATTER_REDIS_URL
"$REPO/build/natter-api" migrate 2>/dev/null
timeout -k 5 900 /usr/bin/python3 "$REPO/bench/bus.py" --instances "${BUS_INSTANCES:-1 3 6}" \
    --pairs "${BUS_PAIRS:-6}" --messages "${BUS_MESSAGES:-10}"
