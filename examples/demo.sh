#!/usr/bin/env bash
# The main job, end to end, against the built-in sandbox: no credentials, nothing leaves
# this machine. Builds the release binary, starts a sandbox seeded from the example
# manifest, then validates, plans, applies, and applies again (which changes nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== building the release binary (the first build compiles every dependency: about"
echo "   3 minutes on 2 cores, longer on a busy machine; later builds take seconds)"
cargo build --release --locked
echo "== built: target/release/sipgw-bulk"
bin="$PWD/target/release/sipgw-bulk"
manifest="$PWD/examples/gateways.csv"
work=$(mktemp -d)
"$bin" sandbox --port 0 --seed-from "$manifest" >"$work/sandbox.env" 2>"$work/sandbox.log" &
sandbox_pid=$!
trap 'kill "$sandbox_pid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ "$(wc -l <"$work/sandbox.env")" -ge 3 ] && break; sleep 0.1; done
set -a; . "$work/sandbox.env"; set +a
echo "sandbox at $SIGNALWIRE_BASE_URL; reports in $work"
cd "$work"
echo; echo "== validate: every row checked offline, nothing sent"
"$bin" validate "$manifest"
echo; echo "== plan: the field-level diff of each gateway (stdout), nothing written"
"$bin" plan "$manifest" --report plan.csv || true
echo; echo "== apply at 20 writes/s: the summary ends with latencies and the achieved rate"
"$bin" apply "$manifest" --yes --rate 20 --report apply.csv
echo; echo "== apply again: every gateway is already right, so nothing is written"
"$bin" apply "$manifest" --yes --report again.csv
echo; echo "== first lines of the apply report ($work/apply.csv): the record and undo file"
head -n 3 apply.csv
