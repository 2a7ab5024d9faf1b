#!/usr/bin/env bash
# Runs the scaling rows of examples/versus_threads (skynet, producer-consumer
# with Condvars, contended Mutex) once per worker count, and with --go the Go
# peer at the same GOMAXPROCS settings, into a results directory of their own
# (benches/results/scaling/ by default) with its own machine.json: the many
# CPUs these runs need are usually on another machine than the one the rest
# of benches/results/ was collected on. render.py reads it from there.
#
#   bash benches/report/scaling.sh "1 2 4 8 16"                  # build and run here
#   bash benches/report/scaling.sh --go "1 2 4 8 16"             # ... with the Go peer
#   bash benches/report/scaling.sh --build-only DIR [--go]       # build the programs into DIR
#   bash benches/report/scaling.sh --prebuilt DIR [--go] "1 2 4 8 16"   # run DIR's programs
#   --quick: small sizes (a check of the pipeline); --out DIR: another results directory
#
# The last two serve a many-core machine that has neither cargo nor Go:
# build on a machine that has them, copy DIR over (two programs, a Rust one
# linked against glibc and a static Go one, and DIR/build.json, which names
# the commit and the compilers), and run there from a checkout of the same
# commit. What it writes (each file's command is in machine.json's "steps"):
#
#   machine.json     the machine these runs had, the build (from build.json),
#                    the load average before and after, the steps
#   versus-N.json    versus_threads --workers N --only skynet,pc_condvar,contended_mutex --json
#   go.json          (--go) benches/peers/go/run.sh -json with WEFT_GO_PROCS="N..."
#
# Exits 1 if a step failed (the other steps still run), 2 on a bad argument.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

quick=0
go=0
build_only=""
prebuilt=""
out=""
counts=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; shift ;;
        --go) go=1; shift ;;
        --build-only) build_only="${2:?--build-only needs a directory}"; shift 2 ;;
        --prebuilt) prebuilt="${2:?--prebuilt needs the directory that --build-only wrote}"; shift 2 ;;
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        -h|--help) usage ;;
        -*) echo "scaling.sh: unknown option '$1'" >&2; usage ;;
        *)
            if [ -n "$counts" ]; then echo "scaling.sh: give the worker counts as one argument, e.g. \"1 2 4\"" >&2; usage; fi
            counts="$1"; shift ;;
    esac
done
if [ -n "$build_only" ] && [ -n "$prebuilt" ]; then
    echo "scaling.sh: --build-only and --prebuilt exclude each other (build here, run there)" >&2
    exit 2
fi
if [ -z "$build_only" ]; then
    if [ -z "$counts" ]; then echo "scaling.sh: which worker counts? e.g. \"1 2 4 8 16\"" >&2; usage; fi
    for n in $counts; do
        case "$n" in
            *[!0-9]* | 0*) echo "scaling.sh: worker counts are positive integers, got '$n'" >&2; exit 2 ;;
        esac
    done
fi

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
log_name=scaling
failures=0
# record, log, shell_words, step, skip, fail
source "$here/steps.sh"

# build DIR: versus_threads (release) and, with --go, the Go peer into DIR,
# and DIR/build.json: the commit and the compilers.
build() {
    local dir="$1"
    mkdir -p "$dir"
    cargo build --release --example versus_threads >&2
    cp "$target_dir/release/examples/versus_threads" "$dir/versus_threads"
    if [ "$go" = 1 ]; then
        bash benches/peers/go/run.sh -build "$dir/weftpeers"
    fi
    record build-info "$dir/build.json" "$go"
    log "built into $dir: $(cd "$dir" && echo *)"
}

if [ -n "$build_only" ]; then
    build "$build_only"
    exit 0
fi

if [ -n "$prebuilt" ]; then
    bin_dir="$(cd "$prebuilt" && pwd)"
    for need in versus_threads build.json; do
        if [ ! -e "$bin_dir/$need" ]; then
            echo "scaling.sh: $prebuilt has no $need: make it with --build-only $prebuilt" >&2
            exit 2
        fi
    done
    if [ "$go" = 1 ] && [ ! -x "$bin_dir/weftpeers" ]; then
        echo "scaling.sh: $prebuilt has no Go peer: make it with --build-only $prebuilt --go" >&2
        exit 2
    fi
else
    bin_dir="$tmp/bin"
    build "$bin_dir"
fi

out="${out:-benches/results/scaling}"
mkdir -p "$out"
rm -f "$out"/versus-*.json "$out"/{machine,go}.json "$out/steps.jsonl"
steps="$out/steps.jsonl"
mode=full
quick_flag=()
go_quick=()
if [ "$quick" = 1 ]; then mode=quick; quick_flag=(--quick); go_quick=(-quick); fi
record machine-start "$out/machine.json" "$mode" "$bin_dir/build.json"
started=$SECONDS

for n in $counts; do
    # Shown as the command that makes the same program on any machine.
    shown_as="$(shell_words cargo run --release --example versus_threads -- ${quick_flag[@]+"${quick_flag[@]}"} \
        --workers "$n" --only skynet,pc_condvar,contended_mutex --json "$out/versus-$n.json")"
    step "scaling/versus-$n.json" "workers=$n" "$bin_dir/versus_threads" ${quick_flag[@]+"${quick_flag[@]}"} \
        --workers "$n" --only skynet,pc_condvar,contended_mutex --json "$out/versus-$n.json" || true
done

if [ "$go" = 1 ]; then
    shown_as="$(shell_words env WEFT_GO_PROCS="$counts" bash benches/peers/go/run.sh \
        ${go_quick[@]+"${go_quick[@]}"} -json "$out/go.json")"
    step scaling/go.json default env WEFT_GO_BIN="$bin_dir/weftpeers" WEFT_GO_PROCS="$counts" \
        bash benches/peers/go/run.sh ${go_quick[@]+"${go_quick[@]}"} -json "$out/go.json" || true
fi

record machine-finish "$out/machine.json" "$steps"
rm -f "$steps"
log "done in $((SECONDS - started)) s: $out ($failures failed steps)"
if [ "$failures" -gt 0 ]; then
    exit 1
fi
