#!/usr/bin/env bash
# Every test: the unit tests and the integration tests (the real binary against a real
# sandbox on loopback, and the real monitoring components the metrics tests read them
# with). Installs those components first when they are missing (Debian packages:
# prometheus for promtool, prometheus-pushgateway, prometheus-node-exporter), then runs
# the suite in release mode (the write-budget tests pace real writes against the
# sandbox's limit, which a debug build cannot stand for). The ledger's generated sequences
# (tests/ledger_sim, about a minute) run with them; scripts/ledger-sim.sh runs them
# longer. With arguments, one cargo test with them instead.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for pair in promtool:prometheus prometheus-pushgateway:prometheus-pushgateway \
    prometheus-node-exporter:prometheus-node-exporter; do
    [ -x "/usr/bin/${pair%%:*}" ] || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "installing ${missing[*]} (the metrics tests run them)" >&2
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
if [ $# -gt 0 ]; then
    exec cargo test --release --locked "$@"
fi
# The write-budget tests measure shares of refused writes against a paced sandbox: run
# alone, one at a time, so the rest of the suite's load on 2 cores does not skew them.
cargo test --release --locked -- --skip shared_budget::
cargo test --release --locked --test integration shared_budget:: -- --test-threads=1
