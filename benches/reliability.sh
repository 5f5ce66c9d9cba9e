#!/usr/bin/env bash
# The reliability suites at full length (CI runs them shorter), then the figures
# that docs/reliability.md records. Any broken invariant fails a test, and then
# this script, before a figure is printed.
#
#   bash benches/reliability.sh            # full: 50 crash runs, 20 fault runs, ...
#   FTL_TEST_CRASH_RUNS=200 bash benches/reliability.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Tests must never see the machine's AWS settings or reach AWS.
unset AWS_CA_BUNDLE AWS_PROFILE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN \
      AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_REGION AWS_DEFAULT_REGION FTL_TEST_S3_ENDPOINT || true
export AWS_EC2_METADATA_DISABLED=true
export CARGO_TERM_COLOR=never

export FTL_TEST_CRASH_RUNS=${FTL_TEST_CRASH_RUNS:-50}
export FTL_TEST_FAULT_RUNS=${FTL_TEST_FAULT_RUNS:-20}
export FTL_TEST_MULTIPART_RUNS=${FTL_TEST_MULTIPART_RUNS:-6}
export FTL_TEST_RACE_ROUNDS=${FTL_TEST_RACE_ROUNDS:-30}
FTL_TEST_FIGURES=$(mktemp)
export FTL_TEST_FIGURES
trap 'rm -f "$FTL_TEST_FIGURES"' EXIT

suites=(--test faults --test crash --test concurrency --test resources --test hostile)
started=$(date +%s)
cargo test --locked "${suites[@]}" 2>&1 | tee target/reliability.log | grep -E '^test result|^figure|skipped|FAILED' || true
if grep -qE '^test result: FAILED|error: test failed' target/reliability.log \
   || ! grep -q '^test result: ok' target/reliability.log; then
  echo "reliability: FAILED (see target/reliability.log)" >&2
  exit 1
fi
elapsed=$(( $(date +%s) - started ))
cases=$(cargo test --locked --test hostile -- --list 2>/dev/null | grep -c ': test$')

sum() { awk -v k="$1" '$1 == k { s += $2 } END { print s + 0 }' "$FTL_TEST_FIGURES"; }
skips=$(grep -c '^skipped' target/reliability.log || true)

echo
echo "== reliability figures ($(date -u +%Y-%m-%d), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), ${elapsed} s)"
echo "sync runs under a 10 % fault rate:     $(sum fault_sync_runs) ($(sum fault_sync_completed) completed by retrying, $(sum fault_sync_failed_cleanly) failed with a clear error)"
echo "spool runs under faults:               $(sum fault_spool_runs) (single PUT and multipart)"
echo "faults injected:                       $(sum faults_injected)"
echo "sync runs killed (SIGKILL) at random:  $(sum crash_runs)"
echo "crashes survived:                      $(sum crashes_survived)"
echo "blessing races (8 operators at once):  $(sum blessing_races)"
echo "commands at once on one root:          $(sum concurrent_commands)"
echo "resource faults (full disk, read-only): $(sum resource_faults)"
echo "hostile inputs tried:                  $(sum hostile_inputs) (in ${cases} test cases)"
echo "bytes verified against their packages: $(sum bytes_verified)"
echo "bytes lost or corrupted:               0"
echo "suites skipped (no permission):        ${skips}"
