#!/usr/bin/env bash
# Network benchmark (issue 12's figures): weft's http_hello and echo
# examples against the same minimal servers on tokio (current-thread),
# may (one worker), std threads (one per connection) and Go (raw net +
# bufio, and net/http, GOMAXPROCS=1), driven by a real load generator, wrk,
# on 127.0.0.1 only. Every server runs on CPU 0 (`taskset -c 0`, one worker
# or thread), the load generator on CPU 1, so each server gets the same
# single core. Besides requests per second and p99 latency it records the
# server process's CPU time over each run (utime + stime from /proc), so
# the figure that does not depend on the load generator keeping up is
# requests per server-CPU-second.
#
#   bash benches/report/net.sh                 # full: 10 s runs, 3 repetitions (about 15 minutes)
#   bash benches/report/net.sh --quick         # 2 s runs, 1 repetition, 1 000 idle connections
#   bash benches/report/net.sh --out DIR       # another results directory (default benches/results/net)
#   bash benches/report/net.sh --only weft,tokio
#
# Installs wrk (`apt-get install -y wrk`) and Go (`golang-go`) if missing;
# needs root for that. Never run by CI.
#
# Writes DIR/machine.json (machine, commit, date, load average before and
# after, every command run) and DIR/net.json (every run, and medians).
set -euo pipefail
cd "$(dirname "$0")/../.."

quick=0
out=benches/results/net
only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --out) out="$2"; shift ;;
        --only) only="$2"; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$quick" = 1 ] && [ "$out" = benches/results/net ]; then out=target/net-quick; fi
duration=10; reps=3; idle=10000
if [ "$quick" = 1 ]; then duration=2; reps=1; idle=1000; fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
runs="$out/runs.jsonl"
steps="$out/steps.txt"
: > "$runs"; : > "$steps"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
command -v go >/dev/null || apt-get install -y golang-go >/dev/null
ulimit -n "$(ulimit -Hn)"

step() { echo "$*" >> "$steps"; echo "+ $*" >&2; "$@"; }
step cargo build --release -q -p weft-benches --bins
step cargo build --release -q --example http_hello --example echo
gobin=$(mktemp -d)/weftnetpeers
(cd benches/peers/go/net && step go build -o "$gobin" .)
target=target/release

# name -> command line (ADDR is replaced by the address)
declare -A http=(
    [weft]="$target/examples/http_hello --addr ADDR --workers 1"
    [tokio]="$target/tokio_http --addr ADDR"
    [may]="$target/may_http --addr ADDR"
    [std-threads]="$target/std_http --addr ADDR"
    [go-raw]="env GOMAXPROCS=1 $gobin -mode http-raw -addr ADDR"
    [go-net-http]="env GOMAXPROCS=1 $gobin -mode http -addr ADDR"
)
declare -A echo_servers=(
    [weft]="$target/examples/echo --addr ADDR --workers 1"
    [tokio]="$target/tokio_echo --addr ADDR"
    [go-raw]="env GOMAXPROCS=1 $gobin -mode echo -addr ADDR"
)
wanted() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

port=18500
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT

# Starts "$1" (a command line with ADDR) on CPU 0; sets server_pid and addr.
start_server() {
    port=$((port + 1))
    addr="127.0.0.1:$port"
    local cmd=${1//ADDR/$addr}
    echo "taskset -c 0 $cmd" >> "$steps"
    taskset -c 0 $cmd > "$out/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        grep -q "listening on" "$out/server.log" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "server did not start: $cmd" >&2; cat "$out/server.log" >&2; return 1
}
stop_server() { kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; server_pid=""; }
# CPU seconds (utime + stime) of the server process, children included
# (`env` and `taskset` exec, so the pid is the server's).
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }

for rep in $(seq "$reps"); do
    for conns in 100 1000; do
        for name in weft tokio may std-threads go-raw go-net-http; do
            wanted "$name" || continue
            start_server "${http[$name]}"
            sleep 0.3
            cpu0=$(cpu_of "$server_pid")
            cmd="taskset -c 1 wrk -t1 -c$conns -d${duration}s --latency --timeout 5s http://$addr/"
            echo "$cmd" >> "$steps"
            report=$(timeout $((duration + 30)) $cmd)
            cpu1=$(cpu_of "$server_pid")
            stop_server
            python3 - "$name" "$conns" "$rep" "$cpu0" "$cpu1" "$duration" >> "$runs" <<PY
import json, re, sys
name, conns, rep, cpu0, cpu1, duration = sys.argv[1:]
text = """$report"""
def num(pattern, unit_scale=None):
    m = re.search(pattern, text)
    return m.group(1) if m else None
rps = float(num(r"Requests/sec:\s+([\d.]+)"))
total = int(num(r"(\d+) requests in"))
p99 = num(r"99%\s+([\d.]+\w+)")
scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
m = re.match(r"([\d.]+)(us|ms|s)", p99)
p99_ms = float(m.group(1)) * scale[m.group(2)]
errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
errs = dict(zip(["connect", "read", "write", "timeout"], map(int, errors.groups()))) if errors else {}
non2xx = int(num(r"Non-2xx or 3xx responses: (\d+)") or 0)
cpu = float(cpu1) - float(cpu0)
print(json.dumps({"kind": "http", "server": name, "conns": int(conns), "rep": int(rep), "requests": total,
    "rps": rps, "p99_ms": p99_ms, "server_cpu_s": cpu, "per_cpu_s": total / cpu if cpu > 0 else None,
    "errors": errs, "non_2xx": non2xx}))
PY
            tail -1 "$runs" >&2
        done
    done
    for name in weft tokio go-raw; do
        wanted "$name" || continue
        start_server "${echo_servers[$name]}"
        sleep 0.3
        cpu0=$(cpu_of "$server_pid")
        cmd="taskset -c 1 $gobin -mode echo-client -addr $addr -conns 100 -size 64 -duration ${duration}s"
        echo "env GOMAXPROCS=1 $cmd" >> "$steps"
        report=$(GOMAXPROCS=1 timeout $((duration + 30)) $cmd)
        cpu1=$(cpu_of "$server_pid")
        stop_server
        python3 - "$name" "$rep" "$cpu0" "$cpu1" "$report" >> "$runs" <<'PY'
import json, sys
name, rep, cpu0, cpu1, report = sys.argv[1:]
r = json.loads(report)
cpu = float(cpu1) - float(cpu0)
print(json.dumps({"kind": "echo", "server": name, "rep": int(rep), "round_trips": r["round_trips"],
    "rps": r["per_second"], "p99_ms": r["p99_ms"], "p50_ms": r["p50_ms"], "server_cpu_s": cpu,
    "per_cpu_s": r["round_trips"] / cpu if cpu > 0 else None}))
PY
        tail -1 "$runs" >&2
    done
done

# Idle keep-alive connections: the server's RSS before and with them.
for name in weft tokio go-raw; do
    wanted "$name" || continue
    start_server "${http[$name]}"
    sleep 0.3
    before=$(rss_kib "$server_pid")
    fifo=$(mktemp -u); mkfifo "$fifo"
    echo "taskset -c 1 $gobin -mode idle-client -addr $addr -conns $idle" >> "$steps"
    (taskset -c 1 "$gobin" -mode idle-client -addr "$addr" -conns "$idle" < "$fifo" > "$out/idle.log" 2>&1 &)
    exec 9> "$fifo"
    for _ in $(seq 600); do grep -q ready "$out/idle.log" 2>/dev/null && break; sleep 0.1; done
    sleep 0.5
    with=$(rss_kib "$server_pid")
    exec 9>&-
    rm -f "$fifo"
    stop_server
    grep -q ready "$out/idle.log" || { echo "idle client for $name did not get ready" >&2; cat "$out/idle.log" >&2; continue; }
    echo "{\"kind\": \"idle\", \"server\": \"$name\", \"conns\": $idle, \"rss_before_kib\": $before, \"rss_with_kib\": $with, \"kib_per_conn\": $(python3 -c "print(($with - $before) / $idle)")}" >> "$runs"
    tail -1 "$runs" >&2
done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$out" "$load_before" "$load_after" "$duration" "$reps" <<'PY'
import json, os, platform, statistics, subprocess, sys, datetime
out, load_before, load_after, duration, reps = sys.argv[1:]
runs = [json.loads(l) for l in open(os.path.join(out, "runs.jsonl"))]
groups = {}
for r in runs:
    key = (r["kind"], r["server"], r.get("conns"))
    groups.setdefault(key, []).append(r)
medians = []
for (kind, server, conns), rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
    m = {"kind": kind, "server": server, "conns": conns, "runs": len(rs)}
    for field in ["rps", "p99_ms", "per_cpu_s", "kib_per_conn", "server_cpu_s"]:
        vals = [r[field] for r in rs if r.get(field) is not None]
        if vals:
            m[field] = statistics.median(vals)
    medians.append(m)
json.dump({"runs": runs, "medians": medians}, open(os.path.join(out, "net.json"), "w"), indent=1)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip())
machine = {"cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(), "commit": commit, "dirty": dirty,
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "load_before": load_before, "load_after": load_after, "duration_s": int(duration), "repetitions": int(reps),
    "steps": [l.rstrip("\n") for l in open(os.path.join(out, "steps.txt"))]}
json.dump(machine, open(os.path.join(out, "machine.json"), "w"), indent=1)
for m in medians:
    print(m)
PY
rm -f "$runs" "$steps" "$out/server.log" "$out/idle.log"
