#!/usr/bin/env bash
# Network benchmark (issue 12's figures): weft's http_hello and echo
# examples against the same minimal servers on tokio (current-thread, by
# hand with httparse, and through hyper), monoio (its io_uring driver),
# may (one worker), std threads (one per connection) and Go (raw net +
# bufio, and net/http, GOMAXPROCS=1), driven by a real load generator,
# wrk, on 127.0.0.1 only.
# Every server runs on CPU 0 (`taskset -c 0`, one worker or thread), the
# load generator on CPU 1, so each server gets the same single core.
# Besides requests per second and p99 latency it records the server
# process's CPU time over each run (utime + stime from /proc/PID/stat), so
# the figure that does not depend on the load generator keeping up is
# requests per server-CPU-second.
#
#   bash benches/report/net.sh                 # full: 10 s runs, 3 repetitions (about 12 minutes on 2 CPUs)
#   bash benches/report/net.sh --quick         # 1 s runs, 1 repetition, 1 000 idle connections (into target/net-quick)
#   bash benches/report/net.sh --out DIR       # another results directory (default benches/results/net)
#   bash benches/report/net.sh --only weft,tokio   # a subset of the servers (names below)
#
# Servers: weft, tokio, hyper, monoio, may, std-threads, go-raw, go-net-http (HTTP);
# weft, tokio, may, std-threads, go-raw (echo, driven by the Go echo client
# of benches/peers/go/net); weft, tokio, may, go-raw (idle connections: the
# server's VmRSS before and with N keep-alive connections, each having
# served one request). weft's servers are skipped, with a `note:`, when its
# examples do not build.
#
# Installs wrk (`apt-get install -y wrk`) and Go (`golang-go`) if missing;
# needs root for that. Never run by CI (it refuses when CI is set).
#
# Writes DIR/machine.json (machine, commit, date, load average before and
# after, every command run, the notes) and DIR/net.json (every run, and the
# medians per server and setting), which render.py reads for BENCHMARKS.md's
# "Network" section.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
quick=0
out=benches/results/net
only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --out) out="$2"; shift ;;
        --only) only="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "net.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ -n "${CI:-}" ]; then
    echo "net.sh: not for CI (it installs packages and takes the machine's CPUs); CI is set" >&2
    exit 2
fi
if [ "$quick" = 1 ] && [ "$out" = benches/results/net ]; then out=target/net-quick; fi
duration=10; reps=3; idle=10000
if [ "$quick" = 1 ]; then duration=1; reps=1; idle=1000; fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
runs="$out/runs.jsonl"
steps="$out/steps.txt"
notes="$out/notes.txt"
: > "$runs"; : > "$steps"; : > "$notes"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u '+%Y-%m-%d %H:%M UTC')

note() { echo "note: $*" >&2; echo "$*" >> "$notes"; }
# A build or setup step: recorded, shown, run.
step() { echo "$*" >> "$steps"; echo "+ $*" >&2; "$@"; }
wanted() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

install() { # install PACKAGE COMMAND
    command -v "$2" >/dev/null && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "net.sh: $2 is missing and only root can install it (apt-get install -y $1)" >&2
        exit 1
    fi
    step apt-get install -y "$1" >/dev/null 2>&1 || { step apt-get update -q >/dev/null && step apt-get install -y "$1" >/dev/null; }
}
install wrk wrk
install golang-go go

# Descriptors: wrk -c1000 and the idle client each need one per connection,
# and so does the server; raise the soft limit to the hard one.
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=1048576
ulimit -n "$hard"
if [ "$hard" -lt $((idle + 200)) ]; then
    idle=$((hard - 200))
    note "RLIMIT_NOFILE's hard limit is $hard, too low for the idle connections; holding $idle instead (raise it with ulimit -Hn as root)"
fi
[ "$hard" -lt 1200 ] && note "RLIMIT_NOFILE's hard limit is $hard: wrk -c1000 will fail to connect (raise it as root)"

tmp=$(mktemp -d)
server_pid=""
idle_pid=""
cleanup() {
    [ -n "$idle_pid" ] && kill "$idle_pid" 2>/dev/null
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
    rm -rf "$tmp"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step cargo build --release -q -p weft-benches --bins
weft_http=1; weft_echo=1
step cargo build --release -q --example http_hello || { weft_http=0; note "examples/http_hello does not build: weft's HTTP server skipped"; }
step cargo build --release -q --example echo || { weft_echo=0; note "examples/echo does not build: weft's echo server skipped"; }
gobin="$tmp/weftnetpeers"
have_go=1
(cd benches/peers/go/net && step go build -o "$gobin" .) || { have_go=0; note "benches/peers/go/net does not build: Go servers, echo and idle runs skipped"; }
target=target/release

# name -> command line (ADDR is replaced by the address)
declare -A http=(
    [weft]="$target/examples/http_hello --addr ADDR --workers 1"
    [tokio]="$target/tokio_http --addr ADDR"
    [hyper]="$target/hyper_http --addr ADDR"
    [monoio]="$target/monoio_http --addr ADDR"
    [may]="$target/may_http --addr ADDR"
    [std-threads]="$target/std_http --addr ADDR"
    [go-raw]="env GOMAXPROCS=1 $gobin -mode http-raw -addr ADDR"
    [go-net-http]="env GOMAXPROCS=1 $gobin -mode http -addr ADDR"
)
declare -A echo_servers=(
    [weft]="$target/examples/echo --addr ADDR --workers 1"
    [tokio]="$target/tokio_echo --addr ADDR"
    [may]="$target/may_echo --addr ADDR"
    [std-threads]="$target/std_echo --addr ADDR"
    [go-raw]="env GOMAXPROCS=1 $gobin -mode echo -addr ADDR"
)
http_order="weft tokio hyper monoio may std-threads go-raw go-net-http"
echo_order="weft tokio may std-threads go-raw"
idle_order="weft tokio may go-raw"
# Whether server NAME of KIND (http, echo) can run here.
runnable() {
    wanted "$2" || return 1
    case "$1:$2" in
        http:weft) [ "$weft_http" = 1 ] ;;
        echo:weft) [ "$weft_echo" = 1 ] ;;
        *:go-*) [ "$have_go" = 1 ] ;;
        *) return 0 ;;
    esac
}

port=$((18500 + RANDOM % 1000 * 10))
# Starts "$1" (a command line with ADDR) on CPU 0; sets server_pid and addr.
# `taskset` and `env` exec, so the pid is the server's own.
start_server() {
    port=$((port + 1))
    addr="127.0.0.1:$port"
    local cmd=${1//ADDR/$addr}
    echo "taskset -c 0 $cmd" >> "$steps"
    taskset -c 0 $cmd > "$tmp/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 200); do
        grep -q "listening on" "$tmp/server.log" 2>/dev/null && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "net.sh: server did not start: $cmd" >&2; cat "$tmp/server.log" >&2
    stop_server
    return 1
}
stop_server() {
    [ -n "$server_pid" ] || return 0
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}
# CPU seconds (utime + stime, all threads) of the server process.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# Two pipelined requests in one write must get two answers, each ending in
# the 13-byte body: the server is the one we mean, and pipelining-safe.
check_http() {
    timeout 10 python3 - "$addr" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=5)
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
data = b""
while data.count(b"Hello, World!") < 2:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
ok = data.startswith(b"HTTP/1.1 200") and data.count(b"Hello, World!") == 2 and data.endswith(b"Hello, World!")
print(f"check: {'ok' if ok else 'FAILED'}: two pipelined requests, {len(data)} bytes back", file=sys.stderr)
sys.exit(0 if ok else 1)
PY
}

# One JSON line for a run that did not finish.
failed_run() { # kind server conns rep why
    python3 -c 'import json, sys; k, s, c, r, why = sys.argv[1:]; print(json.dumps({"kind": k, "server": s, "conns": int(c) if c else None, "rep": int(r), "failed": why}))' "$@" >> "$runs"
    tail -1 "$runs" >&2
}

http_run() { # name conns rep
    local name=$1 conns=$2 rep=$3 cpu0 cpu1 report cmd
    start_server "${http[$name]}" || { failed_run http "$name" "$conns" "$rep" "did not start"; return; }
    if ! check_http; then
        stop_server; failed_run http "$name" "$conns" "$rep" "wrong answer to two pipelined requests"; return
    fi
    sleep 0.2
    cpu0=$(cpu_of "$server_pid")
    cmd="taskset -c 1 wrk -t1 -c$conns -d${duration}s --latency --timeout 5s http://$addr/"
    echo "$cmd" >> "$steps"
    if ! report=$(timeout $((duration + 30)) $cmd 2>&1); then
        stop_server; failed_run http "$name" "$conns" "$rep" "wrk failed: ${report//$'\n'/ }"; return
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        server_pid=""; failed_run http "$name" "$conns" "$rep" "the server died during the run"; return
    fi
    cpu1=$(cpu_of "$server_pid")
    stop_server
    python3 - "$name" "$conns" "$rep" "$cpu0" "$cpu1" "$report" >> "$runs" <<'PY' ||
import json, re, sys
name, conns, rep, cpu0, cpu1, text = sys.argv[1:]
def num(pattern):
    m = re.search(pattern, text, re.M)
    return m.group(1) if m else None
def ms(value):  # wrk's "1.23ms", "456.78us", "1.02s", "2.00m"
    m = re.match(r"([\d.]+)(us|ms|s|m)$", value)
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]
rps = float(num(r"Requests/sec:\s+([\d.]+)"))
total = int(num(r"(\d+) requests in"))
if total == 0:
    sys.exit(1)  # a failed run, with wrk's report
errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
errs = dict(zip(["connect", "read", "write", "timeout"], map(int, errors.groups()))) if errors else {}
cpu = float(cpu1) - float(cpu0)
print(json.dumps({"kind": "http", "server": name, "conns": int(conns), "rep": int(rep), "requests": total,
    "rps": rps, "p50_ms": ms(num(r"^\s+50%\s+(\S+)")), "p99_ms": ms(num(r"^\s+99%\s+(\S+)")), "server_cpu_s": cpu,
    "per_cpu_s": total / cpu if cpu > 0 else None, "errors": errs,
    "non_2xx": int(num(r"Non-2xx or 3xx responses: (\d+)") or 0)}))
PY
        { failed_run http "$name" "$conns" "$rep" "no requests in wrk's report, or it did not parse: ${report//$'\n'/ }"; return; }
    tail -1 "$runs" >&2
}

echo_run() { # name rep
    local name=$1 rep=$2 cpu0 cpu1 report cmd
    start_server "${echo_servers[$name]}" || { failed_run echo "$name" 100 "$rep" "did not start"; return; }
    sleep 0.2
    cpu0=$(cpu_of "$server_pid")
    cmd="taskset -c 1 $gobin -mode echo-client -addr $addr -conns 100 -size 64 -duration ${duration}s -json"
    echo "GOMAXPROCS=1 $cmd" >> "$steps"
    if ! report=$(GOMAXPROCS=1 timeout $((duration + 30)) $cmd 2>&1); then
        stop_server; failed_run echo "$name" 100 "$rep" "echo client failed: ${report//$'\n'/ }"; return
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        server_pid=""; failed_run echo "$name" 100 "$rep" "the server died during the run"; return
    fi
    cpu1=$(cpu_of "$server_pid")
    stop_server
    python3 - "$name" "$rep" "$cpu0" "$cpu1" "$report" >> "$runs" <<'PY' ||
import json, sys
name, rep, cpu0, cpu1, report = sys.argv[1:]
r = json.loads(report)
cpu = float(cpu1) - float(cpu0)
print(json.dumps({"kind": "echo", "server": name, "conns": r["conns"], "size": r["size"], "rep": int(rep),
    "round_trips": r["round_trips"], "rps": r["per_second"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
    "server_cpu_s": cpu, "per_cpu_s": r["round_trips"] / cpu if cpu > 0 else None}))
PY
        { failed_run echo "$name" 100 "$rep" "the echo client's report did not parse: ${report//$'\n'/ }"; return; }
    tail -1 "$runs" >&2
}

# Idle keep-alive connections: the server's RSS before and with them. The
# client reads stdin from a FIFO and holds its connections until it ends.
idle_run() { # name
    local name=$1 before with fifo
    start_server "${http[$name]}" || { failed_run idle "$name" "$idle" 1 "did not start"; return; }
    sleep 0.3
    before=$(rss_kib "$server_pid")
    fifo="$tmp/idle.fifo"; rm -f "$fifo"; mkfifo "$fifo"
    echo "taskset -c 1 $gobin -mode idle-client -addr $addr -conns $idle" >> "$steps"
    taskset -c 1 "$gobin" -mode idle-client -addr "$addr" -conns "$idle" < "$fifo" > "$tmp/idle.log" 2>&1 &
    idle_pid=$!
    exec 9> "$fifo"
    for _ in $(seq 1200); do
        grep -q ready "$tmp/idle.log" 2>/dev/null && break
        kill -0 "$idle_pid" 2>/dev/null || break
        sleep 0.05
    done
    if grep -q ready "$tmp/idle.log"; then
        sleep 0.5
        with=$(rss_kib "$server_pid")
    fi
    exec 9>&-
    wait "$idle_pid" 2>/dev/null || true
    idle_pid=""
    stop_server
    if [ -z "${with:-}" ]; then
        failed_run idle "$name" "$idle" 1 "idle client: $(tr '\n' ' ' < "$tmp/idle.log")"; return
    fi
    python3 -c 'import json, sys; s, n, b, w = sys.argv[1:]; n, b, w = int(n), int(b), int(w); print(json.dumps({"kind": "idle", "server": s, "conns": n, "rep": 1, "rss_before_kib": b, "rss_with_kib": w, "kib_per_conn": (w - b) / n}))' "$name" "$idle" "$before" "$with" >> "$runs"
    tail -1 "$runs" >&2
}

# Repetitions outermost and servers interleaved, so that a slow minute of a
# shared machine lands on every server alike.
for rep in $(seq "$reps"); do
    for conns in 100 1000; do
        for name in $http_order; do
            if runnable http "$name"; then http_run "$name" "$conns" "$rep"; fi
        done
    done
    if [ "$have_go" = 1 ]; then
        for name in $echo_order; do
            if runnable echo "$name"; then echo_run "$name" "$rep"; fi
        done
    fi
done
if [ "$have_go" = 1 ]; then
    for name in $idle_order; do
        if runnable http "$name"; then idle_run "$name"; fi
    done
fi

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
wrk_version=$(wrk -v 2>&1 | head -1 || true)
go_version=$(go version 2>/dev/null || true)
python3 - "$out" "$load_before" "$load_after" "$duration" "$reps" "$idle" "$started" "$(ulimit -n)" \
    "$wrk_version" "$go_version" "$(rustc --version)" <<'PY'
import json, os, platform, statistics, subprocess, sys, datetime
out, load_before, load_after, duration, reps, idle, started, nofile, wrk, go, rustc = sys.argv[1:]
runs = [json.loads(l) for l in open(os.path.join(out, "runs.jsonl"))]
groups = {}
for r in runs:
    groups.setdefault((r["kind"], r["server"], r.get("conns")), []).append(r)
medians = []
for (kind, server, conns), rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
    done = [r for r in rs if "failed" not in r]
    m = {"kind": kind, "server": server, "conns": conns, "runs": len(done), "failed": len(rs) - len(done)}
    for field in ["rps", "p50_ms", "p99_ms", "per_cpu_s", "kib_per_conn", "server_cpu_s"]:
        vals = [r[field] for r in done if r.get(field) is not None]
        if vals:
            m[field] = statistics.median(vals)
    medians.append(m)
json.dump({"runs": runs, "medians": medians}, open(os.path.join(out, "net.json"), "w"), indent=1)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()
machine = {"cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(), "commit": git("rev-parse", "HEAD"),
    "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benches/results",
                      ":!BENCHMARKS.md", ":!benches/report/BENCHMARKS.md.in")),
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "started": started,
    "load_before": load_before, "load_after": load_after, "duration_s": int(duration), "repetitions": int(reps),
    "idle_connections": int(idle), "nofile": nofile, "wrk": wrk, "go": go, "rustc": rustc,
    "notes": [l.rstrip("\n") for l in open(os.path.join(out, "notes.txt"))],
    "steps": [l.rstrip("\n") for l in open(os.path.join(out, "steps.txt"))]}
json.dump(machine, open(os.path.join(out, "machine.json"), "w"), indent=1)
print(f"{'kind':5} {'server':12} {'conns':>5} {'runs':>4} {'per s':>10} {'p99 ms':>8} {'per CPU-s':>10} {'KiB/conn':>8}")
for m in medians:
    f = lambda k, fmt: format(m[k], fmt) if m.get(k) is not None else "-"
    print(f"{m['kind']:5} {m['server']:12} {str(m['conns']):>5} {m['runs']:>4} {f('rps', '10.0f')} "
          f"{f('p99_ms', '8.2f')} {f('per_cpu_s', '10.0f')} {f('kib_per_conn', '8.1f')}"
          + (f"  ({m['failed']} failed)" if m["failed"] else ""))
print(f"wrote {out}/net.json and machine.json")
PY
rm -f "$runs" "$steps" "$notes"
