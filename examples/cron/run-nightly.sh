#!/usr/bin/env bash
# Nightly reconcile for cron: credentials from a root-only env file, JSON logs to a file,
# a dated report that doubles as checkpoint (--resume) and undo file (rollback), and an
# alert on the exit codes that need a person.
set -uo pipefail
manifest=${1:?usage: run-nightly.sh MANIFEST}
state=/var/lib/sipgw-bulk
mkdir -p "$state/reports" "$state/logs"
day=$(date +%F)
# SIGNALWIRE_SPACE, SIGNALWIRE_PROJECT_ID, SIGNALWIRE_API_TOKEN
set -a; . /etc/sipgw-bulk/credentials.env; set +a

sipgw-bulk apply "$manifest" --yes --resume \
  --rate 500 --max-errors 2% \
  --report "$state/reports/$day.csv" \
  --summary-json "$state/reports/$day.summary.json" \
  --log-format json --no-progress \
  2>>"$state/logs/$day.jsonl"
code=$?

alert() { logger -t sipgw-bulk -p user.err "$1"; }   # or curl your pager here
case $code in
  0) ;;                                                  # every row updated or unchanged
  1) alert "rows failed, see $state/reports/$day.csv (status failed/invalid/not_found/mismatch)" ;;
  3) alert "aborted: credentials refused or --max-errors reached; see $state/logs/$day.jsonl" ;;
  4) alert "interrupted; the next run resumes from $state/reports/$day.csv" ;;
  5) ;;                                                  # yesterday's run still holds the lock
  *) alert "configuration or manifest error (exit $code); see $state/logs/$day.jsonl" ;;
esac
exit $code
