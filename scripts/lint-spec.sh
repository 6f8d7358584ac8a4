#!/usr/bin/env bash
# Lint openapi/openapi.yaml with Redocly CLI (.redocly.yaml, .redocly.lint-ignore.yaml)
# and Spectral (.spectral.yaml); any finding fails. Run by `make test` (scripts/test.sh).
# The two npm packages are pinned and installed once into $REPO/.cache/lint-tools
# (git-ignored), so later runs work offline and download nothing.
set -euo pipefail

# shellcheck source=scripts/env.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/env.sh"

REPO=$(natter_repo_root)
REDOCLY_VERSION=1.34.5       # 1.x: runs on Debian 12's Node.js 18 (2.x needs Node 20.19)
SPECTRAL_VERSION=6.15.0
TOOLS=$REPO/.cache/lint-tools

# installed_version PACKAGE: the version in $TOOLS, or nothing.
installed_version() {
    local pj=$TOOLS/node_modules/$1/package.json
    [[ -r $pj ]] || return 0
    sed -n 's/^  "version": "\([^"]*\)".*/\1/p' "$pj" | head -n 1
}

if ! command -v npm >/dev/null 2>&1; then
    natter_ensure_packages nodejs npm
fi
if [[ $(installed_version @redocly/cli) != "$REDOCLY_VERSION" ||
    $(installed_version @stoplight/spectral-cli) != "$SPECTRAL_VERSION" ]]; then
    echo "natter: installing @redocly/cli@$REDOCLY_VERSION and" \
        "@stoplight/spectral-cli@$SPECTRAL_VERSION into $TOOLS" >&2
    mkdir -p -- "$TOOLS"
    npm install --prefix "$TOOLS" --no-audit --no-fund --no-save --loglevel=error \
        --cache "$REPO/.cache/npm" \
        "@redocly/cli@$REDOCLY_VERSION" "@stoplight/spectral-cli@$SPECTRAL_VERSION" >&2
fi

cd "$REPO"
rc=0
# Redocly phones home unless told not to; the lint itself needs no network.
REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
    "$TOOLS/node_modules/.bin/redocly" lint --config .redocly.yaml --format=stylish \
    openapi/openapi.yaml || rc=1
"$TOOLS/node_modules/.bin/spectral" lint --ruleset .spectral.yaml --fail-severity=warn \
    openapi/openapi.yaml || rc=1
exit "$rc"
