#!/usr/bin/env bash
# The write budget's simulation for longer than the suite runs it: rounds of 200 fresh
# seeds per header behaviour (3,200 scenarios a round) until MINUTES (default 10) have
# passed. Prints each round's production shares; stops at the first failure, which prints
# its seed and the command that replays it.
#
#   scripts/simulate.sh          # 10 minutes
#   scripts/simulate.sh 60       # an hour
#   BUDGET_SIM_FIRST_SEED=50000 scripts/simulate.sh   # other seeds
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
end=$(( $(date +%s) + minutes * 60 ))
cargo test --release --locked --test budget_sim --no-run
first=${BUDGET_SIM_FIRST_SEED:-1000}
rounds=0
while [ "$(date +%s)" -lt "$end" ]; do
    echo "round $((rounds + 1)): seeds $first..$((first + 199))"
    if ! out=$(BUDGET_SIM_SEEDS=200 BUDGET_SIM_FIRST_SEED=$first \
        cargo test --release --locked --test budget_sim \
        the_write_budget_keeps_its_promises_in_generated_scenarios -- --nocapture 2>&1); then
        echo "$out" | grep -E "panicked|seed|replay" >&2
        echo "FAILED in round $((rounds + 1)) after $((rounds * 3200)) scenarios" >&2
        exit 1
    fi
    echo "$out" | grep -E "scenarios|^  [A-Za-z]"
    first=$((first + 200))
    rounds=$((rounds + 1))
done
echo "$rounds rounds, $((rounds * 3200)) scenarios, no failure"
