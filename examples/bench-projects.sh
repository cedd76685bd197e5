#!/usr/bin/env bash
# One run across three projects against three single-project processes started together,
# on one write limit for the space: announced (fixed 10 s windows with rate-limit headers)
# or not (each process paces by its estimate). Prints one table row per case from the
# sandbox's stats: writes sent, writes refused (429), the lowest remaining count right
# after a job's write was let through (announced only), and the total time.
#
#   examples/bench-projects.sh [GATEWAYS] [WRITE_LIMIT]      # defaults: 1500, 100
set -euo pipefail
BIN=${SIPGW_BULK:-target/release/sipgw-bulk}
N=${1:-1500}
LIMIT=${2:-100}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export SIPGW_BULK_STATE_DIR=$WORK/state

stats() {
  curl -s "$SIGNALWIRE_BASE_URL/__sandbox/stats" | python3 -c \
    "import json,sys; s=json.load(sys.stdin); print(s['writes'], s['writes_throttled'], s['lowest_remaining_after_client_write'])"
}

case_run() { # $1: announced|estimated  $2: one-run|three-processes
  local extra=() sb="$WORK/$1-$2"
  [ "$1" = announced ] && extra=(--announce-limit)
  "$BIN" sandbox --port 0 --gateways "$N" --project-count 3 --write-limit "$LIMIT" \
    --projects-out "$sb.projects.yaml" "${extra[@]}" > "$sb.env" 2>/dev/null &
  local server=$!
  until [ -s "$sb.env" ] && [ "$(wc -l < "$sb.env")" -ge 4 ]; do sleep 0.1; done
  set -a; . "$sb.env"; set +a
  for i in 1 2 3; do   # each project's gateways, every codec list changed
    "$BIN" export --projects "$sb.projects.yaml" --project "p$i" -q \
      | awk -F, -v OFS=, 'NR==1{print;next}{$6="OPUS;PCMU";print}' > "$sb.p$i.csv"
    cut -d, -f1-6 "$sb.p$i.csv" > "$sb.p$i.plain.csv"
  done
  local start end
  start=$(date +%s.%N)
  if [ "$2" = one-run ]; then
    { head -1 "$sb.p1.csv"; tail -q -n +2 "$sb.p1.csv" "$sb.p2.csv" "$sb.p3.csv"; } > "$sb.all.csv"
    "$BIN" apply "$sb.all.csv" --yes -q --rate 1000 --projects "$sb.projects.yaml" \
      --report "$sb.all.report.csv" || true
  else
    local pids=() i=0
    while read -r id token; do
      i=$((i + 1))
      env -u SIGNALWIRE_PROJECTS_FILE SIGNALWIRE_PROJECT_ID="$id" SIGNALWIRE_API_TOKEN="$token" \
        "$BIN" apply "$sb.p$i.plain.csv" --yes -q --rate 1000 --report "$sb.p$i.report.csv" &
      pids+=($!)
    done < <(awk '/- id:/{id=$3} /token:/{print id, $2}' "$sb.projects.yaml")
    wait "${pids[@]}" || true
  fi
  end=$(date +%s.%N)
  read -r writes refused low < <(stats)
  printf '| %s | %s | %s | %s | %s | %.1f s |\n' "$1" "$2" "$writes" "$refused" "$low" \
    "$(echo "$end - $start" | bc)"
  kill "$server"; wait "$server" 2>/dev/null || true
}

echo "| budget | processes | writes sent | refused | lowest remaining after a job's write | total time |"
echo "|---|---|---|---|---|---|"
for budget in announced estimated; do
  for how in one-run three-processes; do case_run "$budget" "$how"; done
done
