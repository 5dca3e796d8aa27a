#!/usr/bin/env bash
# Runs every fuzz target under libFuzzer, one after another (one process,
# one core), for RUNS executions each (default 10^7), and prints each
# target's executions, executions per second and crashes.
#
#   fuzz/run-all.sh [RUNS] [libFuzzer flags...]
#   TARGETS="token merkle" fuzz/run-all.sh 100000
#   MERGE=1 fuzz/run-all.sh      # then add what found new coverage to fuzz/corpus
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
# What a run finds new is kept in fuzz/cargo-fuzz/target/scratch/<target>;
# fuzz/corpus/<target> is only read, unless MERGE=1. A crash stops its
# target and is written to fuzz/cargo-fuzz/artifacts/<target>/.
set -euo pipefail

runs=${1:-10000000}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
fuzz_dir=$root/fuzz/cargo-fuzz
scratch=$fuzz_dir/target/scratch
targets=${TARGETS:-$(cd "$fuzz_dir/fuzz_targets" && ls ./*.rs | sed 's|^\./||; s|\.rs$||')}
# Overflow checks on (-a); no sanitizer: the code is safe Rust, and the
# runs go two to three times faster without one.
flags=(-a -s none --fuzz-dir "$fuzz_dir")

cd "$root"
cargo +nightly fuzz build "${flags[@]}"
printf '%-14s %12s %8s %8s %8s\n' target executions exec/s crashes seconds
failed=0
for target in $targets; do
    mkdir -p "$scratch/$target"
    log=$scratch/$target.log
    started=$(date +%s)
    status=0
    cargo +nightly fuzz run "${flags[@]}" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
        -runs="$runs" -timeout=10 -print_final_stats=1 "$@" >"$log" 2>&1 || status=$?
    seconds=$(($(date +%s) - started))
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    crashes=$(find "$fuzz_dir/artifacts/$target" -type f 2>/dev/null | wc -l)
    printf '%-14s %12s %8s %8s %8s\n' "$target" "${executions:-?}" "${rate:-?}" "$crashes" "$seconds"
    if [ "$status" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        failed=1
        echo "  $target: exit $status; see $log" >&2
    fi
    if [ "${MERGE:-0}" = 1 ] && [ "$status" -eq 0 ]; then
        # An input per new edge (hit counts aside), greedily: a corpus of
        # hundreds of small files rather than thousands.
        cargo +nightly fuzz run "${flags[@]}" "$target" "fuzz/corpus/$target" "$scratch/$target" -- \
            -set_cover_merge=1 -use_counters=0 >>"$log" 2>&1
    fi
done
exit "$failed"
