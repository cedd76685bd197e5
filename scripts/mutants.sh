#!/usr/bin/env bash
# Mutation check: does a test fail when the code under it is broken? Not part of .ci/run
# (it takes an hour or more on 2 cores). Runs cargo-mutants over the pure modules with the
# unit tests, then prints every surviving mutant that is not in scripts/mutants.accepted
# (each accepted one is there with the reason it is harmless) and fails if there is one.
#
#   cargo install cargo-mutants --locked      # once
#   scripts/mutants.sh                        # the default module list
#   scripts/mutants.sh src/limiter.rs         # chosen files
#   FULL=1 scripts/mutants.sh src/ledger.rs   # with the integration suite too (slow)
set -euo pipefail
cd "$(dirname "$0")/.."
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(
    src/inert.rs src/human.rs src/breaker.rs src/latency.rs src/retry.rs src/saved_plan.rs
    src/adaptive.rs src/limiter.rs src/diff.rs src/shard.rs src/model.rs src/manifest/check.rs
)
args=()
for f in "${files[@]}"; do args+=(-f "$f"); done
out=target/mutants
tests=(-- --lib)
[ -n "${FULL:-}" ] && tests=()
# The `mutants` profile builds without debug info: each mutant builds faster.
cargo mutants --no-shuffle --profile mutants "${args[@]}" -o "$out" "${tests[@]}" || true
missed="$out/mutants.out/missed.txt"
timeouts="$out/mutants.out/timeout.txt"
caught=$(wc -l <"$out/mutants.out/caught.txt")
echo "caught $caught, missed $(wc -l <"$missed"), timeouts $(wc -l <"$timeouts")"
# Matched without line and column, so an accepted survivor stays accepted when code above
# it moves.
strip() { sed -E 's/^([^:]+):[0-9]+:[0-9]+:/\1:/'; }
unexpected=$(grep -vxF -f <(grep -v '^#' scripts/mutants.accepted | sed 's/  *#.*//' | sed '/^$/d' | strip) <(strip <"$missed") || true)
if [ -n "$unexpected" ]; then
    echo "survivors not in scripts/mutants.accepted (a test is missing):"
    echo "$unexpected"
    exit 1
fi
echo "no survivor outside scripts/mutants.accepted"
