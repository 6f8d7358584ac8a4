#!/usr/bin/env bash
# Runs every libFuzzer harness of build-fuzz/ (make fuzz-build) for SECONDS
# each, from the committed seeds in tests/fuzz/corpus/<name>/. `make test` runs
# it for a few seconds per harness; `make fuzz` for longer (FUZZ_SECONDS) and
# keeps what it learns in .state/fuzz/<name>/ (git-ignored) for the next run.
# A failing input is kept as .state/fuzz/crash-<name>-*; reproduce it with
# `build-fuzz/fuzz-<name> FILE`, then add it to the seeds once fixed.
# Prints one line per harness and "fuzz: P passed, F failed" last; exits 1 on
# any failure.
set -uo pipefail

SECONDS_EACH=${1:-5}
KEEP=${2:-}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BIN=$REPO/build-fuzz
OUT=$REPO/.state/fuzz
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/natter-fuzz.XXXXXX)
trap 'rm -rf -- "$WORK"' EXIT

passed=0 failed=0
for seeds in "$REPO"/tests/fuzz/corpus/*/; do
    name=$(basename "$seeds")
    exe=$BIN/fuzz-$name
    if [[ ! -x $exe ]]; then
        echo "fuzz $name: no harness $exe (make fuzz-build)"
        failed=$((failed + 1))
        continue
    fi
    # the first corpus directory receives what the run finds; the seeds stay as committed
    corpus=$WORK/$name
    [[ $KEEP == keep ]] && corpus=$OUT/corpus-$name
    mkdir -p "$corpus"
    log=$WORK/$name.log
    if timeout -k 10 $((SECONDS_EACH + 60)) "$exe" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 -artifact_prefix="$OUT/crash-$name-" "$corpus" "$seeds" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
        echo "fuzz $name: ${runs:-?} inputs in ${SECONDS_EACH} s, no failure"
        passed=$((passed + 1))
    else
        echo "fuzz $name: FAILED (input kept under $OUT); the end of its output:"
        tail -n 30 "$log"
        failed=$((failed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
