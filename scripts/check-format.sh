#!/usr/bin/env bash
# Every C file is as clang-format (14, .clang-format) would write it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v clang-format >/dev/null 2>&1; then
    # shellcheck source=scripts/env.sh
    . scripts/env.sh
    natter_ensure_packages
fi
mapfile -t files < <(git ls-files '*.c' '*.h')
bad=0
for f in "${files[@]}"; do
    if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
        echo "format: $f differs from clang-format (run: make format)" >&2
        bad=$((bad + 1))
    fi
done
echo "format: $((${#files[@]} - bad)) passed, $bad failed"
((bad == 0))
