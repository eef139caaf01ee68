#!/usr/bin/env bash
# fuzz/long.sh — long libFuzzer runs (`make fuzz-long`): each chosen target
# runs FUZZ_SECONDS on its grown corpus (build/fuzz/corpus/<t>) plus the
# committed seeds, then `-merge=1` adds to fuzz/corpus/<t> only the inputs
# that bring new coverage (so the committed corpus stays small and ctest
# replays it). Per target it prints and records executions, final cov/ft
# and corpus size. It never edits src/; crash reproducers are copied to
# fuzz/crashes/ (not replayed) for a person to look at.
#
#   FUZZ_SECONDS  seconds per target (default 3600)
#   FUZZ_TARGETS  subset, e.g. "fuzz_ws fuzz_http" (default: all built)
#   FUZZ_JOBS     targets run at once (default 1)
#   FUZZ_NICE     nice level of fuzzers and merges (default 19)
#   FUZZ_MERGE    0 to skip the merge into fuzz/corpus (default 1)
#   FUZZ_BUILD    where the fuzzers are; logs/, corpus/, crashes/ go there
#                 too (default build/fuzz)
set -u
cd "$(dirname "$0")/.."

secs=${FUZZ_SECONDS:-3600}
jobs=${FUZZ_JOBS:-1}
nicelvl=${FUZZ_NICE:-19}
merge=${FUZZ_MERGE:-1}
bin=${FUZZ_BUILD:-build/fuzz}
logs=$bin/logs
summary=$logs/summary.tsv
mkdir -p "$logs" fuzz/crashes

targets=${FUZZ_TARGETS:-}
if [ -z "$targets" ]; then
    for t in "$bin"/fuzz_*; do
        [ -x "$t" ] && targets="$targets $(basename "$t")"
    done
fi
targets=$(echo "$targets" | tr ',' ' ')
for t in $targets; do
    if [ ! -x "$bin/$t" ]; then
        echo "fuzz-long: no fuzzer $bin/$t (run make fuzz-build; FUZZ_TARGETS names fuzz_*)" >&2
        exit 2
    fi
done
[ -f "$summary" ] ||
    printf 'date\ttarget\tseconds_run\texecutions\texec_per_sec\tcov\tft\tcorpus_files\tmerged_new\tresult\tlog\n' >"$summary"

# Last "cov: N ft: M" of a libFuzzer log, and a stat:: value.
last_field() { grep -o "$1: [0-9]*" "$2" | tail -1 | awk '{print $2}'; }
stat_of() { awk -v k="stat::$1:" '$1 == k {print $2}' "$2" | tail -1; }

run_one() {
    local t=$1 stamp log rc result grown=$bin/corpus/$1 seeds=fuzz/corpus/$1
    local crashes=$bin/crashes/$1
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    log=$logs/$t-$stamp.log
    mkdir -p "$grown" "$seeds" "$crashes"
    echo "fuzz-long: $t for ${secs}s at nice $nicelvl -> $log"
    local t0=$SECONDS
    nice -n "$nicelvl" "$bin/$t" -max_total_time="$secs" -print_final_stats=1 -timeout=30 \
        -rss_limit_mb=2048 -artifact_prefix="$crashes/" "$grown" "$seeds" >"$log" 2>&1
    rc=$?
    local ran=$((SECONDS - t0))
    result=ok
    if [ $rc -ne 0 ]; then
        result="FAIL(rc=$rc)"
        for a in "$crashes"/*; do
            [ -f "$a" ] || continue
            cp -n "$a" "fuzz/crashes/$t-$(basename "$a")"
            result="$result $(basename "$a")"
        done
    fi
    local before after=0 added=0
    before=$(find "$seeds" -maxdepth 1 -type f | wc -l)
    if [ "$merge" = 1 ]; then
        # Into the committed directory: existing seeds stay, only inputs
        # with new features are added (files named by their SHA-1).
        nice -n "$nicelvl" "$bin/$t" -merge=1 -timeout=30 -rss_limit_mb=2048 \
            -artifact_prefix="$crashes/" "$seeds" "$grown" >"$logs/$t-$stamp.merge.log" 2>&1 ||
            result="$result merge-failed"
    fi
    after=$(find "$seeds" -maxdepth 1 -type f | wc -l)
    added=$((after - before))
    local execs eps cov ft
    execs=$(stat_of number_of_executed_units "$log")
    # No final stats after a crash: the last status line's count instead.
    [ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    eps=$(stat_of average_exec_per_sec "$log")
    cov=$(last_field cov "$log")
    ft=$(last_field ft "$log")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%F)" "$t" "$ran" \
        "${execs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}" "$after" "$added" "$result" "$log" \
        >>"$summary"
    printf 'fuzz-long: %-16s %6ss execs=%s (%s/s) cov=%s ft=%s corpus=%s (+%s) %s\n' "$t" "$ran" \
        "${execs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}" "$after" "$added" "$result"
    [ "$result" = ok ]
}

fail=0
running=0
for t in $targets; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || fail=1
        running=$((running - 1))
    fi
    run_one "$t" &
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
    wait -n || fail=1
    running=$((running - 1))
done
echo "fuzz-long: summary in $summary"
exit $fail
