#!/usr/bin/env bash
# Run every fuzz target in turn, each until 10 minutes or 1 M executions
# (whichever comes first), at low priority, and print libFuzzer's figures.
#
#   tests/fuzz/run-all.sh [TARGET...]     (after make-seeds.sh)
#
# Logs: tests/fuzz/logs/<target>.log; crashes: tests/fuzz/artifacts/<target>/.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(bootfs usedblocks_fat usedblocks_ext4 partition_table bmap cluster_file bundle)
mkdir -p "$here/logs"
for t in "${targets[@]}"; do
  mkdir -p "$here/corpus/$t"
  start=$(date +%s)
  nice -n 10 cargo +nightly fuzz run --fuzz-dir tests/fuzz "$t" "$here/corpus/$t" -- \
    -max_total_time="${FUZZ_SECONDS:-600}" -runs="${FUZZ_RUNS:-1000000}" -timeout=10 \
    -max_len=131072 -rss_limit_mb=2048 -print_final_stats=1 >"$here/logs/$t.log" 2>&1
  rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$here/logs/$t.log" | grep -o '[0-9]*$')
  crashes=$(ls "$here/artifacts/$t" 2>/dev/null | wc -l)
  echo "$t: exit $rc, ${runs:-?} executions in $(( $(date +%s) - start )) s, $crashes artifact(s)"
done
