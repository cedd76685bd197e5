#!/usr/bin/env bash
# Runs every fuzz target (or those named after RUNS) for RUNS executions (default
# 1,000,000) from the seed corpus in
# fuzz/seeds, with cargo-fuzz on the stable toolchain (RUSTC_BOOTSTRAP=1). New inputs go to
# fuzz/corpus (not committed); a crash lands in fuzz/artifacts and stops the script.
#   cargo install cargo-fuzz --locked      # once
#   fuzz/run.sh 1000000
set -euo pipefail
cd "$(dirname "$0")"
runs="${1:-1000000}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(csv_manifest yaml_manifest report_reader error_body retry_after link_resolver)
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    echo "== $target: $runs runs"
    started=$(date +%s)
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -runs="$runs" -max_len=4096 -print_final_stats=1 >"log-$target.txt" 2>&1 || true
    grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|ERROR|panicked" \
        "log-$target.txt" || true
    echo "   $(( $(date +%s) - started ))s"
    if compgen -G "artifacts/$target/crash-*" >/dev/null; then
        echo "crash found in $target: see fuzz/artifacts/$target" >&2
        exit 1
    fi
done
