#!/usr/bin/env bash
# A scheduled reconcile for cron: credentials from a root-only env file, JSON logs to a
# file, a report per day that doubles as checkpoint and undo file, metrics for
# node_exporter, and an alert on the exit codes that need a person.
#
# Every run reads every gateway. The report is named by the day and passed with --resume:
# a run that was cut off (interrupted, aborted, killed) is continued; after a run that
# finished, the next one (a second run that day, an hourly schedule, a rerun by hand)
# starts a new report beside it, DAY.2.csv, DAY.3.csv, ... (named in the log and in its
# summary). A finished report is never appended to: each stays its run's undo file.
#
# Settings, from the environment (cron lines can set them):
#   SIPGW_BULK           the binary, by absolute path (cron's PATH is short)
#                        [/usr/local/bin/sipgw-bulk]
#   SIPGW_STATE_DIR      reports, summaries and logs [/var/lib/sipgw-bulk]
#   SIPGW_CREDENTIALS    an env file: SIGNALWIRE_SPACE (or SIGNALWIRE_BASE_URL),
#                        SIGNALWIRE_PROJECT_ID, SIGNALWIRE_API_TOKEN
#                        [/etc/sipgw-bulk/credentials.env]
#   SIPGW_METRICS_FILE   node_exporter's textfile, written when its directory exists
#                        [/var/lib/prometheus/node-exporter/sipgw_bulk.prom]
set -uo pipefail
manifest=${1:?usage: run-nightly.sh MANIFEST}
bin=${SIPGW_BULK:-/usr/local/bin/sipgw-bulk}
state=${SIPGW_STATE_DIR:-/var/lib/sipgw-bulk}
credentials=${SIPGW_CREDENTIALS:-/etc/sipgw-bulk/credentials.env}
metrics=${SIPGW_METRICS_FILE:-/var/lib/prometheus/node-exporter/sipgw_bulk.prom}

alert() {   # PRIORITY MESSAGE: to syslog, or to stderr (cron mails it) without one
  if [[ -S /dev/log ]] && logger -t sipgw-bulk -p "user.$1" -- "$2" 2>/dev/null; then
    return
  fi
  echo "sipgw-bulk: $2" >&2
}

if [[ ! -x $bin ]]; then
  alert err "cannot run $bin: install it there (README, Install) or set SIPGW_BULK"
  exit 127
fi
mkdir -p "$state/reports" "$state/logs" || exit 73
day=$(date +%F)
# One summary per run, never shared: two runs started in one second differ by their PID.
summary="$state/reports/$day.$(date +%H%M%S).$$.summary.json"
metrics_args=()
[[ -d $(dirname "$metrics") ]] && metrics_args=(--metrics-file "$metrics")

set -a; . "$credentials" || exit 78; set +a

"$bin" apply "$manifest" --yes --resume --detailed-exitcode \
  --rate 500 --max-errors 2% \
  --report "$state/reports/$day.csv" \
  --summary-json "$summary" \
  --log-format json --no-progress \
  "${metrics_args[@]}" \
  2>>"$state/logs/$day.jsonl"
code=$?

# The report this run wrote (DAY.csv, DAY.2.csv, ...), as its summary names it: the file
# that says what changed and undoes it (`sipgw-bulk rollback REPORT`).
report=$(sed -n 's/^ *"report": *"\(.*\)",\{0,1\}$/\1/p' "$summary" 2>/dev/null | head -n 1)
report=${report:-"$state/reports/$day*.csv"}

case $code in
  0) ;;                                                  # nothing had drifted
  2) alert notice "drift fixed; what changed and its undo file: $report (summary: $summary)" ;;
  1) alert err "rows need a person (failed/invalid/not_found/mismatch/conflict): $report (summary: $summary)" ;;
  3) alert err "aborted: credentials refused, space unreachable or --max-errors reached; what it wrote and its undo file: $report; see $state/logs/$day.jsonl" ;;
  4) alert err "interrupted; the next run continues its report, the undo file of what it wrote: $report" ;;
  5) ;;                                                  # the previous run still holds the lock
  *) alert err "configuration or manifest error (exit $code); see $state/logs/$day.jsonl" ;;
esac
exit $code
