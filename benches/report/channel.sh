#!/usr/bin/env bash
# Measures weft's channels against their peers: the criterion group
# `channel` (benches/channel.rs: weft, may, crossbeam-channel, flume,
# std::sync::mpsc), callgrind's instruction counts of a rendezvous hand-off
# and of a select, and the Go peer's channel workloads. Writes its own
# collection, benches/results/channel/, with its own machine.json, so that
# every figure of BENCHMARKS.md's "Channels" section comes from one run;
# render.py reads it from there.
#
#   bash benches/report/channel.sh                 # full sizes (about 6 minutes on 2 cores)
#   bash benches/report/channel.sh --quick         # short runs into target/bench-results-quick/channel
#   bash benches/report/channel.sh --no-go         # without the Go peer
#   bash benches/report/channel.sh --out DIR       # another results directory
#   bash benches/report/channel.sh --tree DIR --weft-only --no-go --out benches/results/channel/before
#                                                  # another checkout (an earlier commit), weft's rows only
#   bash benches/report/channel.sh --before DIR    # also: that checkout against this one, interleaved
#
# What it writes into DIR (each command is in machine.json's "steps"):
#
#   machine.json     the machine, the commit, the load average before and
#                    after, the steps
#   criterion.json   the group `channel`, labelled by the build that ran it:
#                    default (the whole group, weft-benches' default
#                    features: no fp-control) and fp-control (the weft
#                    rendezvous rows again, built with --features fp-control:
#                    the switch's FP check is a visible part of a hand-off)
#   callgrind.json   instructions per rendezvous hand-off (`channel.
#                    rendezvous.BUILD`) and per completed select over 4
#                    rendezvous channels (`channel.select.BUILD`), each from
#                    two run sizes (start-up cancelled), if valgrind exists
#   placements.json  how the coroutines of each weft batch on 2 workers were
#                    split over the workers, with each batch's time
#   go.json          benches/peers/go/run.sh -json at GOMAXPROCS 1 and 2
#                    (not with --no-go)
#   ab.json          (--before DIR) the count modes rendezvous and select of
#                    DIR's channel bench and of this one, both built without
#                    fp-control, run in turns (rounds of before, after), each
#                    timed by /usr/bin/time: the process's CPU time per
#                    hand-off or select (a one-worker runtime: its worker
#                    thread's, plus start-up and the monitor's few wakes).
#                    Turns put the machine's drift into both builds alike;
#                    collections at different times do not
#
# --tree DIR runs the cargo commands in the checkout DIR (its
# benches/channel.rs, its weft) with these scripts; machine.json then names
# DIR's commit. --weft-only runs only weft's rows of the criterion group
# (a filter on the ids), for a before/after comparison.
#
# Exits 1 if a step failed (the other steps still run), 2 on a bad argument.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

quick=0
go=1
weft_only=0
tree=""
before=""
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; shift ;;
        --no-go) go=0; shift ;;
        --weft-only) weft_only=1; shift ;;
        --tree) tree="${2:?--tree needs a directory}"; shift 2 ;;
        --before) before="$(cd "${2:?--before needs a directory}" && pwd)"; shift 2 ;;
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        --out=*) out="${1#*=}"; shift ;;
        -h|--help) usage ;;
        *) echo "channel.sh: unknown argument '$1'" >&2; usage ;;
    esac
done
if [ -z "$out" ]; then
    if [ "$quick" = 1 ]; then out="target/bench-results-quick/channel"; else out="benches/results/channel"; fi
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
# How commands show the results directory: relative to this checkout.
out_shown="${out#"$root"/}"
if [ -n "$tree" ]; then
    root="$(cd "$tree" && pwd)"
    cd "$root"
fi

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
criterion_dir="${CRITERION_HOME:-$target_dir/criterion}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
log_name=channel
failures=0
# record, log, shell_words, step, skip, fail
source "$here/steps.sh"

rm -f "$out"/{machine,criterion,callgrind,placements,go,ab}.json "$out/steps.jsonl"
steps="$out/steps.jsonl"
mode=full
if [ "$quick" = 1 ]; then mode=quick; fi
record machine-start "$out/machine.json" "$mode"
started=$SECONDS

criterion_flags=()
if [ "$quick" = 1 ]; then criterion_flags=(--quick --noplot); fi
weft_filter=()
if [ "$weft_only" = 1 ]; then weft_filter=(-- '/weft '); fi

# bench_exe [CARGO FLAGS...]: the path of the channel bench binary (builds it).
bench_exe() {
    cargo bench -p weft-benches --bench channel "$@" --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        message = json.loads(line)
    except ValueError:
        continue
    if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "channel" \
            and "bench" in message["target"]["kind"] and message.get("executable"):
        print(message["executable"])
'
}

# ---------------------------------------------------------------------------
# criterion.json (and placements.json)
# ---------------------------------------------------------------------------

# criterion_run LABEL [CARGO FLAGS...] [-- FILTER]: one run of the group,
# its rows recorded under LABEL.
criterion_run() {
    local label="$1"
    shift
    local cargo_args=() filter=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do cargo_args+=("$1"); shift; done
    if [ $# -gt 0 ]; then shift; filter=("$@"); fi
    local command=(cargo bench -p weft-benches --bench channel ${cargo_args[@]+"${cargo_args[@]}"})
    local bench_args=(${criterion_flags[@]+"${criterion_flags[@]}"} ${filter[@]+"${filter[@]}"})
    if [ "${#bench_args[@]}" -gt 0 ]; then command+=(-- "${bench_args[@]}"); fi
    rm -rf "${criterion_dir:?}/channel"
    touch "$tmp/marker"
    sleep 0.01
    # A run that fails part-way still leaves the benchmarks it finished.
    if ! step criterion.json "$label" "${command[@]}"; then
        record criterion "$criterion_dir" channel "$label" "$tmp/marker" "$out/criterion.json" || true
    elif ! record criterion "$criterion_dir" channel "$label" "$tmp/marker" "$out/criterion.json"; then
        fail criterion.json "$label" "no results in $criterion_dir/channel" "${command[@]}"
    fi
}

criterion_shown=(${criterion_flags[@]+"${criterion_flags[@]}"} ${weft_filter[@]+"${weft_filter[@]:1}"})
shown_as="$(shell_words env WEFT_CHANNEL_PLACEMENTS="$out_shown/placements.json" cargo bench -p weft-benches \
    --bench channel ${criterion_shown[@]+-- "${criterion_shown[@]}"})"
export WEFT_CHANNEL_PLACEMENTS="$tmp/placements.json"
criterion_run default ${weft_filter[@]+"${weft_filter[@]}"}
unset WEFT_CHANNEL_PLACEMENTS
if [ -s "$tmp/placements.json" ]; then cp "$tmp/placements.json" "$out/placements.json"; fi
criterion_run fp-control --features fp-control -- '^channel/rendezvous/weft'

# ---------------------------------------------------------------------------
# callgrind.json
# ---------------------------------------------------------------------------

if [ "$quick" = 1 ]; then counts=(rendezvous:50000 select:20000); else counts=(rendezvous:200000 select:100000); fi
if ! command -v valgrind >/dev/null 2>&1; then
    skip callgrind.json default "valgrind is not installed" \
        env WEFT_CHANNEL_COUNT=rendezvous:N valgrind --tool=callgrind "target/release/deps/channel-<hash>"
else
    for build in no-fp-control fp-control; do
        features=(--no-default-features)
        if [ "$build" = fp-control ]; then features=(--features fp-control); fi
        bin="$(bench_exe "${features[@]}" || true)"
        if [ -z "$bin" ]; then
            fail callgrind.json "$build" "cannot build the channel bench" \
                cargo bench -p weft-benches --bench channel "${features[@]}" --no-run
            continue
        fi
        for spec in "${counts[@]}"; do
            what="${spec%%:*}"
            n="${spec#*:}"
            ok=1
            for count in "$n" "$((2 * n))"; do
                # Shown as it runs: valgrind on the bench binary (on `cargo
                # bench` it would profile cargo, not the bench).
                step callgrind.json "$build $what" env WEFT_CHANNEL_COUNT="$what:$count" valgrind \
                    --tool=callgrind "--callgrind-out-file=$tmp/cg.$build.$what.$count" "$bin" || ok=0
            done
            if [ "$ok" = 1 ]; then
                record callgrind-diff "$out/callgrind.json" "$tmp/cg.$build.$what.$n" "$n" \
                    "$tmp/cg.$build.$what.$((2 * n))" "$((2 * n))" channel "$what" "$build"
            fi
        done
    done
fi

# ---------------------------------------------------------------------------
# ab.json (--before DIR)
# ---------------------------------------------------------------------------

if [ -n "$before" ]; then
    if [ "$quick" = 1 ]; then rounds=3; ab_counts=(rendezvous:300000 select:100000); else
        rounds=15; ab_counts=(rendezvous:3000000 select:1000000); fi
    after_bin="$(bench_exe --no-default-features || true)"
    before_bin="$(cd "$before" && bench_exe --no-default-features || true)"
    before_commit="$(git -C "$before" rev-parse --short HEAD 2>/dev/null || echo '?')"
    if [ -z "$after_bin" ] || [ -z "$before_bin" ] || [ ! -x /usr/bin/time ]; then
        fail ab.json default "cannot build both channel benches, or no /usr/bin/time" \
            cargo bench -p weft-benches --bench channel --no-default-features --no-run
    else
        for round in $(seq "$rounds"); do
            log "ab.json: round $round of $rounds"
            for spec in "${ab_counts[@]}"; do
                for build in before after; do
                    bin="$after_bin"; shown_bin="$bin"; shown_prefix=""
                    if [ "$build" = before ]; then
                        bin="$before_bin"; shown_bin="${bin#"$before"/}"; shown_prefix="(at $before_commit) "
                    fi
                    # Shown as it runs, on the bench binary (the before
                    # checkout's relative to it): timing `cargo bench` would
                    # time cargo too. Its -o file is a temporary one.
                    shown_as="$shown_prefix$(shell_words /usr/bin/time -f "%e %U %S" env WEFT_CHANNEL_COUNT="$spec" \
                        "$shown_bin")"
                    if step ab.json "$build ${spec%%:*}" /usr/bin/time -f "%e %U %S" -o "$tmp/time" \
                        env WEFT_CHANNEL_COUNT="$spec" "$bin"; then
                        record channel-ab "$out/ab.json" "${spec%%:*}" "$build" "${spec#*:}" "$tmp/time"
                    fi
                done
            done
        done
    fi
fi

# ---------------------------------------------------------------------------
# go.json
# ---------------------------------------------------------------------------

go_quick=()
if [ "$quick" = 1 ]; then go_quick=(-quick); fi
if [ "$go" = 1 ]; then
    shown_as="$(shell_words env WEFT_GO_PROCS="1 2" bash benches/peers/go/run.sh ${go_quick[@]+"${go_quick[@]}"} \
        -json "$out_shown/go.json")"
    if step go.json default env WEFT_GO_PROCS="1 2" bash benches/peers/go/run.sh ${go_quick[@]+"${go_quick[@]}"} \
        -json "$tmp/go.json"; then
        if [ -s "$tmp/go.json" ]; then
            cp "$tmp/go.json" "$out/go.json"
        else
            fail go.json default "run.sh wrote no JSON file" bash benches/peers/go/run.sh -json "$out/go.json"
        fi
    fi
else
    skip go.json default "--no-go" bash benches/peers/go/run.sh -json "$out_shown/go.json"
fi

record machine-finish "$out/machine.json" "$steps"
rm -f "$steps"
log "done in $((SECONDS - started)) s: $out ($failures failed steps)"
if [ "$failures" -gt 0 ]; then
    exit 1
fi
