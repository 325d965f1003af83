#!/usr/bin/env bash
# The fuzz campaign: every target for SECONDS (default 600), JOBS at a time
# (default 2, one per core), from the committed seeds in fuzz/corpus/<target>/ into a
# working corpus in fuzz/work/<target>/. Prints executions per target and any
# crash; a crash input lands in fuzz/artifacts/<target>/: copy it into
# fuzz/regressions/<target>/ (the stable suite replays those) and fix the bug.
#
# Needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
targets=(manifest envelope wire path chunk)
cargo +nightly fuzz build -O >/dev/null
run() {
  local t=$1
  mkdir -p "work/$t" "logs"
  cargo +nightly fuzz run -O "$t" "work/$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"logs/$t.log" 2>&1 || true
  local runs crash
  runs=$(grep -Eo 'Done [0-9]+ runs' "logs/$t.log" | grep -Eo '[0-9]+' || echo "?")
  crash=$(grep -c -E '^(==[0-9]+== ERROR|thread .* panicked)' "logs/$t.log" || true)
  echo "$t: $runs executions in $secs s, $crash crash(es), corpus $(ls "work/$t" | wc -l) inputs"
}
jobs=${JOBS:-2}
for ((i = 0; i < ${#targets[@]}; i += jobs)); do
  for ((j = i; j < i + jobs && j < ${#targets[@]}; j++)); do
    run "${targets[j]}" &
  done
  wait
done
