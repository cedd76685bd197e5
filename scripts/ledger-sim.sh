#!/usr/bin/env bash
# The ledger under generated sequences (tests/ledger_sim), for longer than `cargo test`
# runs it: new seeds for SECS seconds (default 600, ten minutes), starting from a random
# seed unless LEDGER_FIRST_SEED is set, then what it found: sequences and steps run, and
# for each failing seed the promise it broke, its steps and the command that replays it.
# Other LEDGER_* settings pass through: LEDGER_STEPS (steps a sequence), LEDGER_ALLOW
# (invariants reported without failing), LEDGER_SKIP (kinds of step left out).
#
#   scripts/ledger-sim.sh            # ten minutes
#   scripts/ledger-sim.sh 3600       # an hour
#   LEDGER_SEED=1234 cargo test --release --test ledger_sim -- --nocapture   # replay one
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
first="${LEDGER_FIRST_SEED:-$(((RANDOM << 15 | RANDOM) + 1000))}"
echo "ledger-sim: new seeds from $first for ${secs}s" >&2
LEDGER_SECS="$secs" LEDGER_FIRST_SEED="$first" \
    exec cargo test --release --locked --test ledger_sim -- --nocapture
