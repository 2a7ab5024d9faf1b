#!/usr/bin/env bash
# Builds and runs the Go peer of weft's versus_threads workloads with
# GOMAXPROCS=1, =2 and (if the machine has more CPUs) =$(nproc).
# Not part of CI. Extra arguments go to the program (-quick, -json PATH).
#
#   bash benches/peers/go/run.sh            # full sizes, ~1-2 min per GOMAXPROCS on 2 cores
#   bash benches/peers/go/run.sh -quick
#   bash benches/peers/go/run.sh -json /tmp/go.json   # writes /tmp/go.GOMAXPROCS=N.json per setting
#
# If `go` is not on PATH, this installs Debian's golang-go package
# (apt-get update && apt-get install -y golang-go), which needs root.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! command -v go >/dev/null 2>&1; then
    echo "run.sh: 'go' not found; installing Debian's golang-go (apt-get update && apt-get install -y golang-go)" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "run.sh: installing golang-go needs root; install Go 1.19 or newer yourself and re-run" >&2
        exit 1
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y golang-go
fi

# Split a "-json PATH" (or --json PATH / -json=PATH) into one file per
# GOMAXPROCS setting; pass every other argument through unchanged.
json=""
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        -json|--json) json="${2:?-json needs a path}"; shift 2 ;;
        -json=*|--json=*) json="${1#*=}"; shift ;;
        *) args+=("$1"); shift ;;
    esac
done

bin="$(mktemp -d)/weftpeers"
trap 'rm -rf "$(dirname "$bin")"' EXIT
echo "run.sh: $(go version); building $bin" >&2
(cd "$here" && go build -o "$bin" .)

echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); host: $(uname -srm); nproc: $(nproc)"
echo "uptime:$(uptime)"

settings=(1 2)
if [ "$(nproc)" -gt 2 ]; then
    settings+=("$(nproc)")
fi
for procs in "${settings[@]}"; do
    echo
    echo "=== GOMAXPROCS=$procs ==="
    extra=()
    if [ -n "$json" ]; then
        extra=(-json "${json%.json}.GOMAXPROCS=$procs.json")
    fi
    GOMAXPROCS="$procs" "$bin" ${args[@]+"${args[@]}"} ${extra[@]+"${extra[@]}"}
done
echo
echo "uptime:$(uptime)"
