#!/usr/bin/env bash
# Where a contended lock's coroutines run: versus_threads' lock rows on a
# 2-worker runtime with the default placement (an idle worker takes
# unstarted coroutines from a busy one) and with `--same-worker` (each
# coroutine spawned with `weft::Builder::same_worker`, all on the spawner's
# worker), side by side with the Go peer at GOMAXPROCS=2 and =1, in turns,
# REPS times. Writes benches/results/placement/ (then run
# `python3 benches/report/render.py`). Not part of CI; about 2 minutes on 2
# cores.
#
#   bash benches/report/placement.sh            # 5 turns
#   REPS=3 bash benches/report/placement.sh
#   bash benches/report/placement.sh --out /tmp/placement
#
# Each turn also times the Go peer's process (`/usr/bin/time`: CPU seconds
# over wall seconds), which says how many of its 2 Ps Go kept busy.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="benches/results/placement"
reps="${REPS:-5}"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "placement.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
keys="contended_mutex,pc_condvar,pc_semaphore,readers_writers"
go_keys="contended_mutex,pc_condvar,readers_writers"

command -v go >/dev/null || { echo "placement.sh: needs go (apt-get install golang-go)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "placement.sh: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }

# Whether the tree differs from the commit, read now, before anything is
# built or written (the collection's own directory does not count, nor does
# the report's prose: BENCHMARKS.md and its template are not measured).
commit="$(git rev-parse HEAD)"
mkdir -p "$out"
out_abs="$(realpath -m "$out")"
exclude=()
case "$out_abs/" in "$root"/*) exclude=(":(exclude)${out_abs#"$root"/}") ;; esac
changes="$(git status --porcelain --untracked-files=no -- . "${exclude[@]}" ":(exclude)BENCHMARKS.md" \
    ":(exclude)benches/report/BENCHMARKS.md.in")"
dirty=false
[ -z "$changes" ] || dirty=true

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Collected into $new and moved to $out at the end: an interrupted run
# leaves the last collection as it was.
new="$tmp/collection"
mkdir -p "$new"
steps=()
step() { steps+=("$*"); "$@"; }
# Each turn: weft default, weft --same-worker, Go at 2 Ps, Go at 1 P.

started="$(date -u '+%Y-%m-%d %H:%M UTC')"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
step cargo build --release -q --example versus_threads
(cd benches/peers/go && go build -o "$tmp/weftpeers" .)
steps+=("(cd benches/peers/go && go build -o weftpeers .)")

vt="target/release/examples/versus_threads --workers 2 --only $keys"
steps+=("$vt --json default.N.json"
        "$vt --same-worker --json same_worker.N.json")
for procs in 2 1; do
    steps+=("env GOMAXPROCS=$procs /usr/bin/time -f '%e %U %S' weftpeers -only $go_keys -json go$procs.N.json")
done
for rep in $(seq 1 "$reps"); do
    echo "turn $rep of $reps" >&2
    $vt --json "$new/default.$rep.json" >/dev/null
    $vt --same-worker --json "$new/same_worker.$rep.json" >/dev/null
    for procs in 2 1; do
        env GOMAXPROCS=$procs /usr/bin/time -o "$tmp/time" -f '%e %U %S' \
            "$tmp/weftpeers" -only "$go_keys" -json "$new/go$procs.$rep.json" >/dev/null 2>"$tmp/stderr" \
            || { cat "$tmp/stderr" >&2; exit 1; }
        read -r wall user sys <"$tmp/time"
        echo "{\"gomaxprocs\": $procs, \"wall_s\": $wall, \"user_s\": $user, \"sys_s\": $sys}" >"$new/go$procs.$rep.cpu.json"
    done
done

python3 - "$new" "$commit" "$dirty" "$started" "$load_before" "$reps" "${steps[@]}" <<'EOF'
import json, sys, time
out, commit, dirty, started, load_before, reps, *steps = sys.argv[1:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
import os, platform
json.dump({
    "cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(), "commit": commit, "dirty": dirty == "true",
    "started": started, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    "load_before": load_before, "load_after": " ".join(open("/proc/loadavg").read().split()[:3]),
    "repetitions": int(reps), "steps": steps,
}, open(os.path.join(out, "machine.json"), "w"), indent=1)
EOF
rm -f "$out"/*.json
mv "$new"/*.json "$out"/
echo "wrote $out/ (render with: python3 benches/report/render.py)" >&2
