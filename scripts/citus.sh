#!/usr/bin/env bash
# Citus for natter's scale-out tests (`make test-citus`).
#
#   scripts/citus.sh build           build Citus 13.2.2 from its source archive and install it
#                                    into the system PostgreSQL 15 (once: a second run with the
#                                    same archive and recipe returns at once)
#   scripts/citus.sh start STATE     a coordinator and two workers as three private clusters
#                                    on unix sockets under STATE/citus-{coord,w1,w2}, Citus
#                                    loaded and the workers added; prints the coordinator's
#                                    database URL (database `natter`, role `natter`)
#   scripts/citus.sh stop STATE      stop the three clusters
#
# The archive: NATTER_CITUS_TARBALL, by default ../shared/vendor/citus-13.2.2.tar.gz beside
# the repository (its README lists the build facts this script follows). Build
# dependencies come from Debian (postgresql-server-dev-15 liblz4-dev libzstd-dev libkrb5-dev).
set -euo pipefail

# shellcheck source=scripts/env.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/env.sh"

REPO=$(natter_repo_root)
CITUS_VERSION=13.2.2
TARBALL=${NATTER_CITUS_TARBALL:-$REPO/../shared/vendor/citus-$CITUS_VERSION.tar.gz}
CITUS_DEB_PACKAGES="postgresql-server-dev-15 liblz4-dev libzstd-dev libkrb5-dev"
CACHE=$REPO/.cache/citus-$CITUS_VERSION
NODES=(coord w1 w2)

# What an installed build is made of: the archive and the build recipe below (bump
# CITUS_RECIPE when citus_build changes how it builds).
CITUS_RECIPE=1
_citus_stamp() {
    printf '%s recipe %s\n' "$(sha256sum <"$TARBALL" | cut -d' ' -f1)" "$CITUS_RECIPE"
}

citus_build() {
    local libdir sharedir want work src
    if [[ ! -f $TARBALL ]]; then
        _natter_err "Citus source archive not found: $TARBALL (set NATTER_CITUS_TARBALL)"
        return 1
    fi
    # shellcheck disable=SC2086  # a list of package names
    natter_ensure_packages $CITUS_DEB_PACKAGES
    libdir=$("$NATTER_PG_BIN/pg_config" --pkglibdir)
    sharedir=$("$NATTER_PG_BIN/pg_config" --sharedir)
    mkdir -p "$CACHE"
    exec 8>"$CACHE.lock"
    flock 8
    want=$(_citus_stamp)
    if [[ -f $CACHE/installed && $(<"$CACHE/installed") == "$want" && -f $libdir/citus.so &&
        -f $sharedir/extension/citus.control ]]; then
        exec 8>&- # the servers started next must not inherit (and hold) the lock
        return 0
    fi
    work=$(mktemp -d "$CACHE/build.XXXXXX")
    echo "natter: building Citus $CITUS_VERSION (a few minutes; once)" >&2
    tar -xzf "$TARBALL" -C "$work"
    src=$work/citus-$CITUS_VERSION
    # PostgreSQL 15.20 declares have_createdb_privilege() itself (commands/dbcommands.h);
    # Citus's own static inline copy then fails to compile: drop the copy when the
    # server header has the declaration (../shared/vendor/README.md).
    if grep -q 'have_createdb_privilege' "$("$NATTER_PG_BIN/pg_config" --includedir-server)/commands/dbcommands.h"; then
        /usr/bin/python3 - "$src/src/include/pg_version_compat.h" <<'EOF'
import re, sys
path = sys.argv[1]
text = open(path).read()
pat = re.compile(r"\nstatic inline bool\nhave_createdb_privilege\(void\)\n\{.*?\n\}\n", re.S)
new, n = pat.subn("\n/* natter: declared by PostgreSQL 15.20's commands/dbcommands.h */\n"
                  "#include \"commands/dbcommands.h\"\n", text)
if n != 1:
    sys.exit("natter: have_createdb_privilege() not found once in " + path)
open(path, "w").write(new)
EOF
    fi
    (
        cd "$src"
        PG_CONFIG=$NATTER_PG_BIN/pg_config ./configure --without-libcurl >"$work/configure.log" 2>&1 ||
            {
                tail -n 30 "$work/configure.log" >&2
                exit 1
            }
        make -s with_llvm=no -j2 >"$work/make.log" 2>&1 || {
            grep -E 'error|Error' "$work/make.log" | head -n 30 >&2
            exit 1
        }
        make -s with_llvm=no install >>"$work/make.log" 2>&1 || {
            tail -n 30 "$work/make.log" >&2
            exit 1
        }
    )
    rm -rf -- "$work"
    echo "$want" >"$CACHE/installed"
    exec 8>&-
}

# _citus_node_dir STATE NODE: the state directory natter_pg_start gets for NODE
_citus_node_dir() {
    printf '%s/citus-%s\n' "$1" "$2"
}

citus_start() {
    local state=${1:?usage: citus.sh start STATE} node dir sock coord_sock url
    mkdir -p "$state"
    chmod 755 "$state"
    for node in "${NODES[@]}"; do
        dir=$(_citus_node_dir "$state" "$node")
        mkdir -p "$dir"
        chmod 755 "$dir"
        NATTER_PG_PRELOAD=citus natter_pg_start "$dir" test >/dev/null
        sock=$NATTER_PG_SOCKET_DIR
        if [[ $node == coord ]]; then
            coord_sock=$sock
            url=$NATTER_DATABASE_URL
        fi
        _natter_psql "$sock" -U natter -d natter -c "CREATE EXTENSION IF NOT EXISTS citus" >/dev/null
    done
    # a socket directory is the node's host name (psql variables: quoted by psql)
    _natter_psql "$coord_sock" -U natter -d natter -tA -v host="$coord_sock" -v port="$NATTER_PG_PORT" \
        >/dev/null <<<"SELECT citus_set_coordinator_host(:'host', :'port'::int);"
    for node in w1 w2; do
        dir=$(cd -- "$(_citus_node_dir "$state" "$node")/pg" && pwd -P)
        _natter_psql "$coord_sock" -U natter -d natter -tA -v host="$dir" -v port="$NATTER_PG_PORT" \
            >/dev/null <<<"SELECT citus_add_node(:'host', :'port'::int)
                WHERE NOT EXISTS (SELECT 1 FROM pg_dist_node WHERE nodename = :'host');"
    done
    printf '%s\n' "$url"
}

citus_stop() {
    local state=${1:?usage: citus.sh stop STATE} node rc=0
    for node in "${NODES[@]}"; do
        natter_pg_stop "$(_citus_node_dir "$state" "$node")" || rc=1
    done
    return "$rc"
}

case ${1:-} in
build) citus_build ;;
start)
    citus_build
    citus_start "${2:-}"
    ;;
stop) citus_stop "${2:-}" ;;
*)
    echo "usage: scripts/citus.sh build | start STATE | stop STATE" >&2
    exit 2
    ;;
esac
