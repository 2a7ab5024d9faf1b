#!/usr/bin/env bash
# Runs weft's measurements and writes their raw results, one JSON file per
# source, for benches/report/render.py to turn into BENCHMARKS.md.
#
#   bash benches/report/collect.sh                 # full sizes into benches/results/ (long; a quiet machine)
#   bash benches/report/collect.sh --quick         # short runs into target/bench-results-quick/
#   bash benches/report/collect.sh --go            # also the Go peer (benches/peers/go)
#   bash benches/report/collect.sh --out DIR       # another results directory
#   bash benches/report/collect.sh --only callgrind  # only these sources (a comma-separated list of
#                                                    # criterion, versus_threads, callgrind, rss, skynet, go)
#   bash benches/report/collect.sh --tree DIR      # measure the checkout in DIR (another commit) with
#                                                  # these scripts; see "before/" in README.md
#
# What it writes into DIR (each file names the commands that made it in
# machine.json's "steps"):
#
#   machine.json         the machine, the commit, the load average before and
#                        after, and every step: its command and its status
#                        (ok / skipped: why / failed: why)
#   versus_threads.json  examples/versus_threads --only KEY --json, one row
#                        at a time, each right before criterion's benchmarks
#                        of that key, merged into one file
#   criterion.json       every benchmark of the switch, runtime, sync and
#                        versus groups, labelled by the run that made it:
#                        default, fp-control (switch built with
#                        --features fp-control), may-1-worker (versus' may
#                        rows with WEFT_BENCH_MAY_WORKERS=1)
#   callgrind.json       instructions per switch round trip and per
#                        create+run+drop (weft and corosensei, both
#                        builds), per yield, per spawned coroutine and per
#                        skynet leaf (runtime bench), per Mutex+Condvar
#                        hand-off (sync bench) and per rendezvous hand-off
#                        (channel bench), if valgrind exists
#   rss.json             the WEFT_RSS_PROBE modes of benches/runtime.rs
#   skynet.json          examples/skynet on 1 and 2 workers, 3 runs each,
#                        with peak RSS if /usr/bin/time exists
#   go.json              (--go) benches/peers/go/run.sh -json
#
# scaling/ is left alone: it is its own collection, by scaling.sh, usually
# on another machine (one with many CPUs).
#
# A collection replaces every source in DIR (plots/ is render.py's and is
# left alone): one directory is one collection, on one machine, at one commit.
# Progress goes to stderr. Exits 1 if a step failed (every other step still
# runs); a step whose tool or bench target does not exist is skipped, and
# machine.json says so.
#
# Criterion writes to $CARGO_TARGET_DIR/criterion (target/criterion without
# it; $CRITERION_HOME if set), and this script reads it from there.
#
# --quick passes criterion `--quick --noplot`: the benches set warm-up time,
# measurement time and sample size per group, and a group's settings win over
# criterion's --warm-up-time/--measurement-time/--sample-size flags, so only
# criterion's own quick mode (stop once the estimate is stable, no warm-up)
# makes a group shorter.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

quick=0
go=0
out=""
only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; shift ;;
        --go) go=1; shift ;;
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        --out=*) out="${1#*=}"; shift ;;
        --only) only="${2:?--only needs a list of sources}"; shift 2 ;;
        --tree) root="$(cd "${2:?--tree needs a directory}" && pwd)"; shift 2 ;;
        -h|--help) usage ;;
        *) echo "collect.sh: unknown argument '$1'" >&2; usage ;;
    esac
done
scripts_root="$(cd "$here/../.." && pwd)"
if [ -z "$out" ]; then
    if [ "$root" != "$scripts_root" ]; then
        echo "collect.sh: --tree needs --out (the default would replace this checkout's results)" >&2
        exit 2
    fi
    if [ "$quick" = 1 ]; then out="$root/target/bench-results-quick"; else out="$root/benches/results"; fi
fi
# A relative DIR is taken from where the script was started.
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$root"

# wants SOURCE: whether this collection measures SOURCE (--only).
wants() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
criterion_dir="${CRITERION_HOME:-$target_dir/criterion}"

log_name=collect
# record, log, shell_words, step, skip, fail
source "$here/steps.sh"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/go"

rm -f "$out/machine.json" "$out/steps.jsonl"
for source in versus_threads criterion callgrind rss skynet go; do
    if wants "$source"; then rm -f "$out/$source.json"; fi
done
steps="$out/steps.jsonl"
mode=full
if [ "$quick" = 1 ]; then mode=quick; fi
record machine-start "$out/machine.json" "$mode"
collection_start=$SECONDS
failures=0

# The bench and example targets of the package, as "bench:switch" lines.
cargo metadata --no-deps --format-version 1 2>/dev/null | python3 -c '
import json, sys
for package in json.load(sys.stdin)["packages"]:
    for target in package["targets"]:
        for kind in target["kind"]:
            print(kind + ":" + target["name"])
' >"$tmp/targets" || true
has_target() { grep -qx "$1:$2" "$tmp/targets"; }

# The path of a bench binary: bench_exe NAME [CARGO FLAGS...] (builds it).
bench_exe() {
    local name="$1"
    shift
    cargo bench -p weft-benches --bench "$name" "$@" --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
name = sys.argv[1]
for line in sys.stdin:
    try:
        message = json.loads(line)
    except ValueError:
        continue
    if message.get("reason") == "compiler-artifact" and message["target"]["name"] == name \
            and "bench" in message["target"]["kind"] and message.get("executable"):
        print(message["executable"])
' "$name"
}

# ---------------------------------------------------------------------------
# machine.json's host_probe: what an atomic read-modify-write, a clock read
# and a spin hint cost on this host, measured before anything else runs
# (hosts that print the same CPU name differ severalfold here).
# ---------------------------------------------------------------------------

if has_target bench sync; then
    probe_bin="$(bench_exe sync || true)"
    if [ -n "$probe_bin" ]; then
        shown_as="WEFT_HOST_PROBE=1 cargo bench -p weft-benches --bench sync"
        if step machine.json host-probe env WEFT_HOST_PROBE=1 "$probe_bin"; then
            record host-probe "$out/machine.json" "$tmp/step.out"
        fi
    else
        fail machine.json host-probe "cannot build the sync bench" cargo bench -p weft-benches --bench sync --no-run
    fi
fi

quick_flag=()
criterion_flags=()
if [ "$quick" = 1 ]; then
    quick_flag=(--quick)
    criterion_flags=(--quick --noplot)
fi

# ---------------------------------------------------------------------------
# criterion.json
# ---------------------------------------------------------------------------

# criterion_run LABEL GROUP CLEAN [VAR=VALUE...] [CARGO_ARGS...] [-- BENCH_ARGS...]:
# one cargo bench run, with VAR=VALUE in its environment; CLEAN=clean
# deletes the group's old results first. Records every benchmark of GROUP
# that the run wrote, so a run that adds to a group records only its rows.
criterion_run() {
    local label="$1" group="$2" clean="$3"
    shift 3
    local vars=() cargo_args=() bench_args=()
    while [ $# -gt 0 ] && [[ "$1" =~ ^[A-Z_][A-Z0-9_]*= ]]; do vars+=("$1"); shift; done
    while [ $# -gt 0 ] && [ "$1" != -- ]; do cargo_args+=("$1"); shift; done
    if [ $# -gt 0 ]; then shift; fi
    bench_args=(${criterion_flags[@]+"${criterion_flags[@]}"} "$@")
    local command=(cargo bench -p weft-benches --bench "$group" ${cargo_args[@]+"${cargo_args[@]}"})
    if [ "${#vars[@]}" -gt 0 ]; then command=(env "${vars[@]}" "${command[@]}"); fi
    if [ "${#bench_args[@]}" -gt 0 ]; then command+=(-- "${bench_args[@]}"); fi
    if ! has_target bench "$group"; then
        skip criterion.json "$label" "no bench target named $group" "${command[@]}"
        return 0
    fi
    if [ "$clean" = clean ]; then rm -rf "${criterion_dir:?}/$group"; fi
    touch "$tmp/marker"
    sleep 0.01
    # A run that fails part-way still leaves the benchmarks it finished:
    # record them (machine.json says the step failed).
    if ! step criterion.json "$label" "${command[@]}"; then
        record criterion "$criterion_dir" "$group" "$label" "$tmp/marker" "$out/criterion.json" || true
    elif ! record criterion "$criterion_dir" "$group" "$label" "$tmp/marker" "$out/criterion.json"; then
        fail criterion.json "$label" "no results in $criterion_dir/$group" "${command[@]}"
    fi
}

if wants criterion || wants versus_threads; then
criterion_run default switch clean
criterion_run default runtime clean
criterion_run default sync clean
# versus_threads.json and criterion's versus group, one row at a time: each
# versus_threads row (`--only KEY`) runs right before and right after
# criterion's benchmarks of the same key, and the two runs are pooled into
# one row. The report cross-checks the two harnesses' ratios, and on a
# shared machine the drift between two runs grows with the time between
# them (a whole versus_threads run, then the whole group, put up to ten
# minutes between a row's two measurements); bracketing criterion's run
# puts the drift during it into the row's range of runs, where the report
# shows it, instead of between the two harnesses. The files are merged into
# one versus_threads.json (record.py vt-merge).
touch "$tmp/versus.list"
if has_target bench versus; then
    cargo bench -p weft-benches --bench versus --no-run --quiet >&2 2>/dev/null || true
    # The group's benchmark ids, to bracket only the rows it has.
    cargo bench -p weft-benches --bench versus --quiet -- --list 2>/dev/null | sed 's/: benchmark$//' \
        >"$tmp/versus.list" || true
fi
if has_target example versus_threads; then
    cargo build --release --example versus_threads --quiet >&2 2>/dev/null || true
    vt_keys="$(cargo run --release --quiet --example versus_threads -- --list)"
    mkdir -p "$tmp/vt"
    clean=clean
    vt_parts=()
    for key in $vt_keys; do
        # A row the versus group has no benchmark of (parked_memory is a
        # size, and a row may be newer than the group) runs once.
        brackets=(before after)
        if ! grep -q "^versus/$key/" "$tmp/versus.list"; then brackets=(before); fi
        for bracket in "${brackets[@]}"; do
            if [ "$bracket" = after ]; then
                criterion_run default versus "$clean" -- "^versus/$key/"
                clean=keep
            fi
            if step versus_threads.json "$key $bracket" \
                cargo run --release --example versus_threads -- ${quick_flag[@]+"${quick_flag[@]}"} \
                --only "$key" --json "$tmp/vt/$key.$bracket.json"; then
                vt_parts+=("$tmp/vt/$key.$bracket.json")
            fi
        done
    done
    if [ "${#vt_parts[@]}" -gt 0 ]; then
        record vt-merge "$out/versus_threads.json" "${vt_parts[@]}"
    fi
    # Benchmarks of the group with no versus_threads row (channel_handoff).
    criterion_run default versus "$clean" -- "^versus/channel_handoff/"
else
    skip versus_threads.json default "no example target named versus_threads" \
        cargo run --release --example versus_threads -- --json "$out/versus_threads.json"
    criterion_run default versus clean
fi
# may's one-worker rows (its hand-off rows), added to the versus group.
criterion_run may-1-worker versus keep WEFT_BENCH_MAY_WORKERS=1 -- /may
# Last: the switch group again, built with fp-control (same bench ids; the
# feature is off by default).
criterion_run fp-control switch clean --features fp-control
fi

# ---------------------------------------------------------------------------
# callgrind.json
# ---------------------------------------------------------------------------

# Round trips per callgrind run of the switch bench; then, per operation of
# the runtime and sync benches' count modes, two runs of different sizes
# (BENCH:WHAT:SMALL:BIG), whose difference is divided by BIG - SMALL so
# that start-up and shutdown cancel: yields (1 worker), spawned+joined
# coroutines (100 000 alive at once, 2 workers: spawn is a first burst,
# whose cells come from the allocator; spawn_warm a burst after a burst of
# 200 000, whose cells come from the worker's cache), skynet leaves (a spawn
# tree, 2 workers; sizes are powers of 10) and one-way Mutex+Condvar
# hand-offs (1 worker). valgrind runs one thread at a time, and by default
# which one next is up to the kernel's futex: the 2-worker counts then
# moved by up to a third between runs of one build (spawn_warm: 595 to
# 926), with the second worker stealing more or less of the burst.
# --fair-sched=yes hands the lock round-robin, and the same build gives the
# same count to about 0.2 % (741.0 to 742.7 in three runs); the 1-worker
# counts are the same either way (yield: 97.33 and 97.34). Each run keeps
# its instruction addresses (--dump-instr=yes), from which record.py counts
# the atomic read-modify-writes per operation as well.
fair=--fair-sched=yes
if [ "$quick" = 1 ]; then
    switch_count=100000
    op_counts=(runtime:yield:50000:100000 runtime:spawn:20000:40000 runtime:spawn_warm:20000:40000
        runtime:skynet:10000:100000 sync:handoff:20000:40000)
else
    switch_count=1000000
    op_counts=(runtime:yield:500000:1000000 runtime:spawn:100000:200000 runtime:spawn_warm:50000:100000
        runtime:skynet:100000:1000000 sync:handoff:100000:200000)
fi

if ! wants callgrind; then
    :
elif ! command -v valgrind >/dev/null 2>&1; then
    skip callgrind.json default "valgrind is not installed" \
        env WEFT_SWITCH_COUNT="$switch_count" valgrind --tool=callgrind "--toggle-collect=*weft_round_trips*" \
        "target/release/deps/switch-<hash>"
else
    for build in default fp-control; do
        features=()
        if [ "$build" = fp-control ]; then features=(--features fp-control); fi
        bin="$(bench_exe switch ${features[@]+"${features[@]}"} || true)"
        if [ -z "$bin" ]; then
            fail callgrind.json "$build" "cannot build the switch bench" \
                cargo bench -p weft-benches --bench switch ${features[@]+"${features[@]}"} --no-run
            continue
        fi
        # weft and corosensei: a round trip; *_create: a create+run+drop.
        for who in weft corosensei weft_create corosensei_create; do
            counted="${who}_round_trips"
            case "$who" in *_create) counted="${who%_create}_create_run_drops" ;; esac
            cg_out="$tmp/callgrind.$build.$who"
            if step callgrind.json "$build" env WEFT_SWITCH_COUNT="$switch_count" valgrind --tool=callgrind \
                "--callgrind-out-file=$cg_out" "--toggle-collect=*${counted}*" "$bin"; then
                record callgrind "$cg_out" "$switch_count" "$out/callgrind.json" switch "$build" "$who"
            fi
        done
    done

    for spec in "${op_counts[@]}"; do
        IFS=: read -r bench what small big <<<"$spec"
        var=WEFT_RUNTIME_COUNT
        if [ "$bench" = sync ]; then var=WEFT_SYNC_COUNT; fi
        bin="$(bench_exe "$bench" || true)"
        if [ -z "$bin" ]; then
            fail callgrind.json default "cannot build the $bench bench" \
                cargo bench -p weft-benches --bench "$bench" --no-run
            continue
        fi
        ok=1
        for count in "$small" "$big"; do
            # Once more if valgrind itself fails: callgrind 3.19 can trip an
            # assertion of its own (threads.c, vgCallgrind_post_signal) when
            # the runtime's monitor signals a worker it finds stalled, which
            # the slow spawn runs under callgrind provoke.
            step callgrind.json default env "$var=$what:$count" valgrind --tool=callgrind "$fair" --dump-instr=yes \
                "--callgrind-out-file=$tmp/callgrind.$what.$count" "$bin" \
                || step callgrind.json "$what:$count again" env "$var=$what:$count" valgrind --tool=callgrind "$fair" \
                    --dump-instr=yes "--callgrind-out-file=$tmp/callgrind.$what.$count" "$bin" \
                || ok=0
        done
        # A warm burst must take no cell from the allocator: under valgrind
        # the warm-up runs tens of times slower, and if an epoch of the
        # worker's cell cache ended while its cells lay unused they went back
        # (runtime/cell_cache.rs). Both runs then call allocate_new as often
        # as the warm-up alone did.
        if [ "$ok" = 1 ] && [ "$what" = spawn_warm ]; then
            new_cells() {
                callgrind_annotate --tree=calling "$1" 2>/dev/null \
                    | grep -m1 -o 'cell_cache::allocate_new ([0-9,]*x)' | tr -dc 0-9 || true
            }
            if [ "$(new_cells "$tmp/callgrind.$what.$small")" != "$(new_cells "$tmp/callgrind.$what.$big")" ]; then
                fail callgrind.json "$what" "the measured burst took cells from the allocator (a cell-cache epoch ended during the warm-up)" \
                    env "$var=$what:$big" valgrind --tool=callgrind "$fair" "$bin"
                ok=0
            fi
        fi
        if [ "$ok" = 1 ]; then
            record callgrind-diff "$out/callgrind.json" "$tmp/callgrind.$what.$small" "$small" \
                "$tmp/callgrind.$what.$big" "$big" runtime "$what"
        fi
    done
fi

# Instructions per rendezvous hand-off between two coroutines on one
# worker (benches/channel.rs, WEFT_CHANNEL_COUNT=rendezvous:N), from two
# run sizes, start-up cancelled. The channel figures themselves, with their
# peers, are their own collection: benches/report/channel.sh.
if wants callgrind && command -v valgrind >/dev/null 2>&1 && has_target bench channel; then
    bin="$(bench_exe channel || true)"
    n=$((switch_count / 5))
    if [ -z "$bin" ]; then
        fail callgrind.json default "cannot build the channel bench" cargo bench -p weft-benches --bench channel --no-run
    else
        ok=1
        for count in "$n" "$((2 * n))"; do
            step callgrind.json default env WEFT_CHANNEL_COUNT="rendezvous:$count" valgrind --tool=callgrind --dump-instr=yes \
                "--callgrind-out-file=$tmp/callgrind.rendezvous.$count" "$bin" || ok=0
        done
        if [ "$ok" = 1 ]; then
            record callgrind-diff "$out/callgrind.json" "$tmp/callgrind.rendezvous.$n" "$n" \
                "$tmp/callgrind.rendezvous.$((2 * n))" "$((2 * n))" channel rendezvous default
        fi
    fi
fi

# ---------------------------------------------------------------------------
# rss.json
# ---------------------------------------------------------------------------

for probe in 1 spawn skynet skynet1; do
    wants rss || break
    if step rss.json "$probe" env WEFT_RSS_PROBE="$probe" cargo bench -p weft-benches --bench runtime; then
        cp "$tmp/step.out" "$tmp/rss.$probe"
        if ! record rss "$probe" "$tmp/rss.$probe" "$out/rss.json"; then
            fail rss.json "$probe" "the probe's output did not parse" \
                env WEFT_RSS_PROBE="$probe" cargo bench -p weft-benches --bench runtime
        fi
    fi
done

# ---------------------------------------------------------------------------
# skynet.json
# ---------------------------------------------------------------------------

skynet_exe="$target_dir/release/examples/skynet"
if wants skynet && step skynet.json build cargo build --release --example skynet; then
    if [ -x /usr/bin/time ]; then
        timer=(/usr/bin/time -f %M -o "$tmp/peak_kib")
    else
        timer=()
        log "skynet.json: /usr/bin/time not found: no peak RSS"
    fi
    for workers in 1 2; do
        for run in 1 2 3; do
            rm -f "$tmp/peak_kib"
            if step skynet.json "workers=$workers run=$run" \
                ${timer[@]+"${timer[@]}"} "$skynet_exe" --workers "$workers"; then
                peak=""
                if [ -s "$tmp/peak_kib" ]; then peak="$(tail -1 "$tmp/peak_kib")"; fi
                if ! record skynet "$workers" "$out/skynet.json" "$tmp/step.out" "$peak"; then
                    fail skynet.json "workers=$workers run=$run" "no result line" "$skynet_exe" --workers "$workers"
                fi
            fi
        done
    done
fi

# ---------------------------------------------------------------------------
# go.json (--go)
# ---------------------------------------------------------------------------

go_quick=()
if [ "$quick" = 1 ]; then go_quick=(-quick); fi
if [ "$go" = 1 ] && wants go; then
    # run.sh may leave a file per setting next to the one asked for: keep
    # them out of DIR.
    shown_as="$(shell_words bash benches/peers/go/run.sh ${go_quick[@]+"${go_quick[@]}"} -json "$out/go.json")"
    if step go.json default bash benches/peers/go/run.sh ${go_quick[@]+"${go_quick[@]}"} -json "$tmp/go/go.json"; then
        if [ -s "$tmp/go/go.json" ]; then
            cp "$tmp/go/go.json" "$out/go.json"
        else
            fail go.json default "run.sh wrote no JSON file" bash benches/peers/go/run.sh -json "$out/go.json"
        fi
    fi
fi

record machine-finish "$out/machine.json" "$steps"
rm -f "$steps"
log "done in $((SECONDS - collection_start)) s: $out ($failures failed steps)"
if [ "$failures" -gt 0 ]; then
    exit 1
fi
