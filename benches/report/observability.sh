#!/usr/bin/env bash
# Measures what weft's observability costs: the monitor thread (stall
# reports, the deadlock hint), the per-worker metrics counters, and
# Runtime::dump. Writes its own collection, benches/results/observability/,
# with its own machine.json; render.py reads it from there.
#
#   bash benches/report/observability.sh                  # full sizes
#   bash benches/report/observability.sh --quick          # short runs (a check of the pipeline)
#   bash benches/report/observability.sh --base COMMIT    # compare with another commit (default below)
#   bash benches/report/observability.sh --out DIR        # another results directory
#
# Three builds of the same two workloads, one yield between two coroutines
# (WEFT_RUNTIME_COUNT=yield:N of benches/runtime.rs, 1 worker) and one
# Mutex+Condvar hand-off (WEFT_SYNC_COUNT=handoff:N of benches/sync.rs, 1
# worker):
#
#   base         the bench binaries of BASE, the last commit before the
#                monitor and the metrics counters existed
#   monitor-on   this tree's binaries, default runtime (monitor running,
#                counters counting)
#   monitor-off  this tree's binaries in the `yield_nomon` / `handoff_nomon`
#                count modes (the runtime is built with stall_threshold(None):
#                no monitor thread; the counters still count, they cannot be
#                turned off)
#
# What it writes (each command is in machine.json's "steps"):
#
#   machine.json         the machine, the commit, the load average, the steps
#   observability.json   timing: per workload and build, the time of every
#                        run (the three builds' runs interleaved round by
#                        round, so that drift on a shared machine hits all
#                        three) and its ns per operation, and their median.
#                        A run includes the process's start-up, under 0.1 %
#                        of it at these sizes (the difference of two sizes
#                        cancels it but doubles the noise: tried, the rounds
#                        then spread over 3x); callgrind: instructions per operation
#                        of each build (two run sizes, start-up cancelled);
#                        dump: Runtime::dump() with 10 000 and 100 000 parked
#                        coroutines (examples/dump.rs; 100 000 need
#                        vm.max_map_count above 204 096, else that size is
#                        skipped and machine.json says why); idle: the CPU
#                        an idle runtime with its monitor uses
#                        (WEFT_RUNTIME_PROBE=idle:SECONDS of benches/runtime.rs)
#
# Exits 1 if a step failed (the other steps still run), 2 on a bad argument.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# The last commit before the monitor and the metrics counters (issue 10).
base=7f8ad12
quick=0
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; shift ;;
        --base) base="${2:?--base needs a commit}"; shift 2 ;;
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        -h|--help) usage ;;
        *) echo "observability.sh: unknown argument '$1'" >&2; usage ;;
    esac
done
out="${out:-benches/results/observability}"

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
tmp="$(mktemp -d)"
log_name=observability
failures=0
# record, log, shell_words, step, skip, fail
source "$here/steps.sh"

base_tree="$tmp/base-tree"
cleanup() {
    if [ -d "$base_tree" ]; then git worktree remove --force "$base_tree" >/dev/null 2>&1 || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# bench_exe NAME: the path of the current directory's tree's release bench
# binary NAME (builds it). The benches are in the weft-benches package since
# the workspace split; a base commit from before it has them in weft itself.
bench_exe() {
    local package=()
    if [ -f benches/Cargo.toml ]; then package=(-p weft-benches); fi
    cargo bench ${package[@]+"${package[@]}"} --bench "$1" --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        message = json.loads(line)
    except ValueError:
        continue
    if message.get("reason") == "compiler-artifact" and message["target"]["name"] == sys.argv[1] \
            and "bench" in message["target"]["kind"] and message.get("executable"):
        print(message["executable"])
' "$1"
}

mkdir -p "$out"
rm -f "$out"/{machine,observability}.json "$out/steps.jsonl"
steps="$out/steps.jsonl"
mode=full
if [ "$quick" = 1 ]; then mode=quick; fi
record machine-start "$out/machine.json" "$mode"
started=$SECONDS
results="$out/observability.json"

if [ "$quick" = 1 ]; then
    yield_n=400000; handoff_n=200000; rounds=3; dump_sizes=(1000 10000); dump_rounds=3; idle_seconds=2
else
    yield_n=4000000; handoff_n=2000000; rounds=21; dump_sizes=(10000 100000); dump_rounds=7; idle_seconds=20
fi

# The binaries: this tree's, and BASE's, built in a worktree of their own
# with a target directory of their own (the two trees' builds would
# otherwise invalidate each other).
declare -A bin
bin[head.runtime]="$(bench_exe runtime || true)"
bin[head.sync]="$(bench_exe sync || true)"
base_commit="$(git rev-parse --short "$base" 2>/dev/null || true)"
if [ -n "$base_commit" ] && git worktree add --detach "$base_tree" "$base_commit" >/dev/null 2>&1; then
    for name in runtime sync; do
        bin[base.$name]="$(cd "$base_tree" && CARGO_TARGET_DIR="$target_dir/observability-base" bench_exe "$name" || true)"
    done
fi
for build in head base; do
    for name in runtime sync; do
        if [ -z "${bin[$build.$name]:-}" ]; then
            what="this tree's"
            if [ "$build" = base ]; then what="commit $base's"; fi
            fail observability.json "$build" "cannot build $what $name bench" cargo bench -p weft-benches --bench "$name" --no-run
        fi
    done
done

# count_spec VARIANT WORKLOAD: the count mode that runs WORKLOAD in VARIANT
# (monitor-off: the `_nomon` mode, whose runtime is built with
# stall_threshold(None)).
count_spec() {
    if [ "$1" = monitor-off ]; then echo "${2}_nomon"; else echo "$2"; fi
}

# run_count BUILD VARIANT WORKLOAD N: one timed run of a count mode.
run_count() {
    local build="$1" variant="$2" workload="$3" n="$4" exe var bench=runtime
    exe="${bin[$build.runtime]:-}"; var=WEFT_RUNTIME_COUNT
    if [ "$workload" = handoff ]; then exe="${bin[$build.sync]:-}"; var=WEFT_SYNC_COUNT; bench=sync; fi
    [ -n "$exe" ] || return 0
    local spec
    spec="$(count_spec "$variant" "$workload"):$n"
    local shown_prefix=""
    if [ "$build" = base ]; then shown_prefix="(at $base) "; fi
    shown_as="$shown_prefix$(shell_words env "$var=$spec" cargo bench -p weft-benches --bench "$bench")"
    if step observability.json "$variant $workload" env "$var=$spec" "$exe"; then
        record observe-time "$results" "$workload" "$variant" "$n" "$tmp/step.out"
    fi
}

# Timing: the three builds' runs interleaved, round by round.
for round in $(seq "$rounds"); do
    log "timing round $round of $rounds"
    for workload in yield handoff; do
        n=$yield_n
        if [ "$workload" = handoff ]; then n=$handoff_n; fi
        run_count base base "$workload" "$n"
        run_count head monitor-on "$workload" "$n"
        run_count head monitor-off "$workload" "$n"
    done
done

# Instructions per operation: two run sizes per build, start-up cancelled.
if ! command -v valgrind >/dev/null 2>&1; then
    skip observability.json callgrind "valgrind is not installed" \
        valgrind --tool=callgrind "target/release/deps/runtime-<hash>"
else
    for pair in base:base head:monitor-on head:monitor-off; do
        build="${pair%%:*}"
        variant="${pair#*:}"
        for workload in yield handoff; do
            exe="${bin[$build.runtime]:-}"; var=WEFT_RUNTIME_COUNT; n=$((yield_n / 20))
            if [ "$workload" = handoff ]; then exe="${bin[$build.sync]:-}"; var=WEFT_SYNC_COUNT; n=$((handoff_n / 20)); fi
            [ -n "$exe" ] || continue
            spec="$(count_spec "$variant" "$workload")"
            ok=1
            for count in "$n" "$((2 * n))"; do
                step observability.json "callgrind $variant $workload" env "$var=$spec:$count" \
                    valgrind --tool=callgrind "--callgrind-out-file=$tmp/cg.$variant.$workload.$count" "$exe" || ok=0
            done
            if [ "$ok" = 1 ]; then
                record callgrind-diff "$results" "$tmp/cg.$variant.$workload.$n" "$n" \
                    "$tmp/cg.$variant.$workload.$((2 * n))" "$((2 * n))" callgrind "$workload" "$variant"
            fi
        done
    done
fi

# Runtime::dump with N parked coroutines (examples/dump.rs), and an idle
# runtime's CPU. Each parked coroutine holds a stack, two memory maps:
# a size that vm.max_map_count cannot hold is skipped, saying so.
map_limit="$(cat /proc/sys/vm/max_map_count 2>/dev/null || echo 0)"
if step observability.json "dump build" cargo build --release --example dump; then
    for size in "${dump_sizes[@]}"; do
        command=(cargo run --release --quiet --example dump -- "$size" "$dump_rounds")
        if [ "$((2 * size + 4096))" -gt "$map_limit" ]; then
            skip observability.json "dump $size" "vm.max_map_count is $map_limit, too few maps for $size parked \
coroutines (2 each): raise it, e.g. sudo sysctl -w vm.max_map_count=262144" "${command[@]}"
            continue
        fi
        if step observability.json "dump $size" "${command[@]}"; then
            record observe-probe "$results" dump "$tmp/step.out"
        fi
    done
fi
if [ -n "${bin[head.runtime]:-}" ]; then
    shown_as="$(shell_words env WEFT_RUNTIME_PROBE="idle:$idle_seconds" cargo bench -p weft-benches --bench runtime)"
    if step observability.json idle env WEFT_RUNTIME_PROBE="idle:$idle_seconds" "${bin[head.runtime]}"; then
        record observe-probe "$results" idle "$tmp/step.out"
    fi
fi

record observe-summarize "$results" "$base_commit"
record machine-finish "$out/machine.json" "$steps"
rm -f "$steps"
log "done in $((SECONDS - started)) s: $out ($failures failed steps)"
if [ "$failures" -gt 0 ]; then
    exit 1
fi
