#!/usr/bin/env bash
# The layer rule (docs/ARCHITECTURE.md), proved against the Makefile's flags:
# every header compiles on its own for each layer allowed to see it, and fails
# to be found from every layer below it (so an include pointing up the stack
# breaks the build). The allowed pairs are written out here, independently of
# the Makefile, so widening a layer's include path fails this check too. And
# no directory includes a file of api/ itself (main.c, routes.c): it has no
# headers, so nothing can depend on the wiring.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"
CC=${CC:-gcc}
read -r -a PKG <<<"$(make -s --no-print-directory print-PKG_CFLAGS)"

declare -A DIR=(
    [common]=common [core]=api/core [realtime]=api/realtime [chat]=api/chat
    [blobstore]=api/blobstore [resources]=api/resources [workers]=workers
)
# layer -> the layers whose headers it may include (itself included)
declare -A SEES=(
    [common]="common"
    [core]="core common"
    [realtime]="realtime core common"
    [chat]="chat realtime core common"
    [blobstore]="blobstore core common"
    [resources]="resources chat realtime blobstore core common"
    [workers]="workers common"
)
headers_of() { # layer
    ls "${DIR[$1]}"/*.h
}

probe=$(mktemp -d /tmp/natter-layers.XXXXXX)
trap 'rm -rf -- "$probe"' EXIT
pass=0 fail=0
for layer in "${!SEES[@]}"; do
    flags=()
    for f in $(make -s --no-print-directory print-INC_"$layer"); do
        flags+=("-I$REPO/${f#-I}")
    done
    for owner in common core realtime chat blobstore resources workers; do
        allowed=no
        for s in ${SEES[$layer]}; do [[ $s == "$owner" ]] && allowed=yes; done
        for h in $(headers_of "$owner"); do
            name=$(basename "$h")
            # compiled from an empty directory: only the layer's -I paths can find it
            if (cd "$probe" && printf '#include "%s"\nint layer_probe;\n' "$name" |
                "$CC" -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror "${flags[@]}" "${PKG[@]}" \
                    -fsyntax-only -x c - 2>"$probe/err"); then
                found=yes
            else
                found=no
            fi
            if [[ $found == "$allowed" ]]; then
                pass=$((pass + 1))
            else
                fail=$((fail + 1))
                if [[ $allowed == yes ]]; then
                    echo "FAIL: $layer may include $h but it does not compile there:" >&2
                    sed 's/^/    /' "$probe/err" >&2
                else
                    echo "FAIL: $layer can include $h, which is above it" >&2
                fi
            fi
        done
    done
done
if compgen -G "$REPO/api/*.h" >/dev/null; then
    echo "FAIL: api/ holds headers ($(cd "$REPO" && ls api/*.h)); the wiring must not be included" >&2
    fail=$((fail + 1))
fi
echo "layers: $pass passed, $fail failed"
((fail == 0))
