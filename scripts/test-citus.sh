#!/usr/bin/env bash
# `make test-citus`: the API test suite against a real Citus cluster (issue 12, item 5).
# Builds Citus 13.2.2 once (scripts/citus.sh), starts a coordinator and two workers as
# private clusters on unix sockets and a private Redis under a throw-away directory in
# /tmp, migrates, distributes the tables as scripts/citus-distribute.sql declares, and runs
# tests/api against the coordinator with the normal build. Everything it started is
# stopped again. NATTER_PYTEST_ARGS: extra pytest arguments (word-split).
set -euo pipefail

# shellcheck source=scripts/env.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/env.sh"

REPO=$(natter_repo_root)
PYTHON=/usr/bin/python3

natter_ensure_packages
# shellcheck disable=SC2086  # a list of package names
natter_ensure_packages $NATTER_TEST_DEB_PACKAGES
bash "$REPO/scripts/citus.sh" build
make -C "$REPO" -j2 all

STATE_DIR=$(mktemp -d /tmp/natter-citus.XXXXXX)
chmod 755 "$STATE_DIR"
cleanup() {
    bash "$REPO/scripts/citus.sh" stop "$STATE_DIR" || true
    local node
    for node in "$STATE_DIR"/citus-*; do natter_pg_remove "$node"; done
    natter_private_stop "$STATE_DIR"
}
trap 'rc=$?; trap - EXIT; cleanup; exit "$rc"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

url=$(bash "$REPO/scripts/citus.sh" start "$STATE_DIR")
natter_redis_start "$STATE_DIR" test

read -r -a PYTEST_EXTRA <<<"${NATTER_PYTEST_ARGS:-}"
cd "$REPO"
env NATTER_BIN_DIR="$REPO/build" NATTER_TEST_DATABASE_URL="$url" \
    NATTER_TEST_PG_SOCKET_DIR="$STATE_DIR/citus-coord/pg" \
    NATTER_TEST_REDIS_URL="$NATTER_REDIS_URL" NATTER_TEST_REDIS_SOCKET="$NATTER_REDIS_SOCKET" \
    NATTER_TEST_STATE_DIR="$STATE_DIR" NATTER_TEST_CITUS_DISTRIBUTE="$REPO/scripts/citus-distribute.sql" \
    PYTHONDONTWRITEBYTECODE=1 \
    "$PYTHON" -m pytest -q -p no:cacheprovider "${PYTEST_EXTRA[@]}" "$REPO/tests/api"
