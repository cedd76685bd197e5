#!/usr/bin/env bash
# Mutation check: does a test fail when the code under it is broken? Not part of .ci/run
# (the whole list takes well over an hour on 2 cores).
#
# Phase 1 runs cargo-mutants over the files with the unit tests only (seconds a mutant).
# Phase 2 reruns every survivor of phase 1 that is not in scripts/mutants.accepted
# against the whole test suite (the integration tests run the real binary: about 80 s a
# mutant). The script fails on any mutant that survives both and is not accepted (each
# accepted one is listed with the reason it changes no behaviour). A timeout counts as
# caught: the mutant hung a test, which then fails.
#
#   cargo install cargo-mutants --locked      # once
#   scripts/mutants.sh                        # the default module list
#   scripts/mutants.sh src/limiter.rs         # chosen files
#   UNIT_ONLY=1 scripts/mutants.sh ...        # phase 1 only
#   RE='verify|Held' scripts/mutants.sh ...   # only mutants whose name matches (the
#                                             # functions a change touched)
set -euo pipefail
cd "$(dirname "$0")/.."
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(
    src/inert.rs src/human.rs src/breaker.rs src/latency.rs src/retry.rs src/saved_plan.rs
    src/budget/mod.rs src/budget/estimate.rs src/budget/announced.rs src/budget/headers.rs
    src/limiter.rs src/diff.rs src/snapshot.rs src/shard.rs src/model.rs
    src/report.rs src/ledger/mod.rs src/ledger/journal.rs src/ledger/run_lock.rs
    src/ledger/run_note.rs src/ledger/side_file.rs
    src/engine/reader.rs src/engine/recorder.rs src/engine/stop.rs src/engine/verdict.rs
    src/client/body.rs src/client/error.rs
    src/manifest/mod.rs src/manifest/check.rs src/manifest/csv_format.rs
    src/manifest/yaml_format.rs src/manifest/plan_format.rs src/manifest/write.rs
)
args=()
for f in "${files[@]}"; do args+=(-f "$f"); done
out=target/mutants
count() { [ -f "$1" ] && wc -l <"$1" || echo 0; }
# Matched without line and column, so an accepted survivor stays accepted when code above
# it moves.
strip() { sed -E 's/^([^:]+):[0-9]+:[0-9]+:/\1:/'; }
accepted() { grep -v '^#' scripts/mutants.accepted | sed 's/  *#.*//' | sed '/^$/d' | strip; }
# The lines of missed.txt in $1 that are not accepted, with their line and column.
unaccepted() {
    [ -f "$1" ] || return 0
    while IFS= read -r name; do
        grep -qxF "$(strip <<<"$name")" <(accepted) || echo "$name"
    done <"$1"
}

# cargo-mutants exits 2 when a mutant survives and 3 on a timeout: both are results. Any
# other failure (the unmutated tree fails its tests, a usage error) means there are none.
mutants() {
    local rc=0
    cargo mutants --no-shuffle --profile mutants "$@" || rc=$?
    case $rc in
        0 | 2 | 3) ;;
        *) echo "cargo mutants failed (exit $rc): no result" >&2; exit "$rc" ;;
    esac
}

# The `mutants` profile builds without debug info: each mutant builds faster.
filter=()
[ -z "${RE:-}" ] || filter=(--re "$RE")
mutants "${args[@]}" "${filter[@]}" -o "$out" -- --lib
unit="$out/mutants.out"
echo "phase 1 (unit tests): caught $(count "$unit/caught.txt"), missed $(count "$unit/missed.txt"), timeouts $(count "$unit/timeout.txt"), unviable $(count "$unit/unviable.txt")"
survivors=$(unaccepted "$unit/missed.txt")
full="$out/full/mutants.out"
rm -rf "$out/full"
if [ -n "$survivors" ] && [ -z "${UNIT_ONLY:-}" ]; then
    # Each survivor by its exact name (cargo-mutants matches --re against `--list` names).
    re=()
    while IFS= read -r name; do
        re+=(--re "^$(sed 's/[][\\.*^$+?(){}|]/\\&/g' <<<"$name")\$")
    done <<<"$survivors"
    echo "phase 2: $(wc -l <<<"$survivors") survivors against the whole test suite"
    mutants "${args[@]}" "${re[@]}" -o "$out/full"
    echo "phase 2 (whole suite): caught $(count "$full/caught.txt"), missed $(count "$full/missed.txt"), timeouts $(count "$full/timeout.txt")"
    survivors=$(unaccepted "$full/missed.txt")
fi
echo "accepted survivors: $(($(count "$unit/missed.txt") - $(unaccepted "$unit/missed.txt" | wc -l)))"
if [ -n "$survivors" ]; then
    echo "survivors not in scripts/mutants.accepted (a test is missing):"
    echo "$survivors"
    exit 1
fi
echo "no survivor outside scripts/mutants.accepted"
