#!/usr/bin/env bash
# Builds and runs the Go peer of weft's versus_threads workloads with
# GOMAXPROCS=1, =2 and (if the machine has more CPUs) =$(nproc), or with
# the settings listed in WEFT_GO_PROCS. Not part of CI. Extra arguments go
# to the program (-quick), except -json PATH, which run.sh takes itself.
#
#   bash benches/peers/go/run.sh            # full sizes, ~10 s per GOMAXPROCS on 2 cores
#   bash benches/peers/go/run.sh -quick
#   bash benches/peers/go/run.sh -json /tmp/go.json   # one JSON file, every setting in it
#   WEFT_GO_PROCS="1 2 4 8 16" bash benches/peers/go/run.sh -json /tmp/go.json
#   bash benches/peers/go/run.sh -build DIR/weftpeers        # only build the program
#   WEFT_GO_BIN=DIR/weftpeers bash benches/peers/go/run.sh   # run a program built so
#
# The last two serve a machine without Go (benches/report/scaling.sh
# --build-only and --prebuilt): build here, carry the one static binary.
#
# -json PATH writes one object,
#   {"tool": "weft-go-peer", "go_version": "go1.19.8", "settings": [...]},
# with one element of "settings" per GOMAXPROCS, each the object that the
# program's own -json writes (see README.md). It is written only if every
# setting ran and passed its checks. Settings above nproc still run; they
# oversubscribe the CPUs, and the output says so.
#
# If `go` is not on PATH, this installs Debian's golang-go package
# (apt-get update && apt-get install -y golang-go), which needs root.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Take "-json PATH" (or --json PATH / -json=PATH) for the combined file;
# pass every other argument through unchanged.
json=""
build_only=""
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        -json|--json) json="${2:?-json needs a path}"; shift 2 ;;
        -json=*|--json=*) json="${1#*=}"; shift ;;
        -build|--build) build_only="${2:?-build needs a path}"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done

# The GOMAXPROCS settings: WEFT_GO_PROCS if set, else 1, 2 and nproc (> 2).
settings=(1 2)
if [ "$(nproc)" -gt 2 ]; then
    settings+=("$(nproc)")
fi
if [ -n "${WEFT_GO_PROCS:-}" ]; then
    read -r -a settings <<<"$WEFT_GO_PROCS"
fi
if [ "${#settings[@]}" -eq 0 ]; then
    echo "run.sh: WEFT_GO_PROCS lists no setting" >&2
    exit 1
fi
for procs in "${settings[@]}"; do
    case "$procs" in
        *[!0-9]* | 0*)
            echo "run.sh: WEFT_GO_PROCS must list positive integers, got '$procs'" >&2
            exit 1
            ;;
    esac
done
if [ -n "$json" ] && ! command -v python3 >/dev/null 2>&1; then
    echo "run.sh: -json needs python3 (it combines the settings' files)" >&2
    exit 1
fi

if [ -n "${WEFT_GO_BIN:-}" ] && [ -z "$build_only" ]; then
    if [ ! -x "$WEFT_GO_BIN" ]; then
        echo "run.sh: WEFT_GO_BIN=$WEFT_GO_BIN is not an executable file (build one with -build PATH)" >&2
        exit 1
    fi
elif ! command -v go >/dev/null 2>&1; then
    echo "run.sh: 'go' not found; installing Debian's golang-go (apt-get update && apt-get install -y golang-go)" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "run.sh: installing golang-go needs root; install Go 1.19 or newer yourself and re-run" >&2
        exit 1
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y golang-go
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [ -n "$build_only" ]; then
    case "$build_only" in /*) ;; *) build_only="$PWD/$build_only" ;; esac
    echo "run.sh: $(go version); building $build_only" >&2
    (cd "$here" && go build -o "$build_only" .)
    exit 0
fi
if [ -n "${WEFT_GO_BIN:-}" ]; then
    bin="$WEFT_GO_BIN"
    echo "run.sh: running the prebuilt $bin" >&2
else
    bin="$tmp/weftpeers"
    echo "run.sh: $(go version); building $bin" >&2
    (cd "$here" && go build -o "$bin" .)
fi

echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); host: $(uname -srm); nproc: $(nproc)"
echo "uptime:$(uptime)"
echo "GOMAXPROCS settings: ${settings[*]}${WEFT_GO_PROCS:+ (from WEFT_GO_PROCS)}"

parts=()
for procs in "${settings[@]}"; do
    echo
    echo "=== GOMAXPROCS=$procs ==="
    if [ "$procs" -gt "$(nproc)" ]; then
        echo "note: GOMAXPROCS=$procs > nproc $(nproc): oversubscribed, so Ps share cores"
    fi
    extra=()
    if [ -n "$json" ]; then
        parts+=("$tmp/GOMAXPROCS=$procs.json")
        extra=(-json "$tmp/GOMAXPROCS=$procs.json")
    fi
    GOMAXPROCS="$procs" "$bin" ${args[@]+"${args[@]}"} ${extra[@]+"${extra[@]}"}
done
echo
echo "uptime:$(uptime)"

# Combine the settings' objects, in the order they ran, into one file.
if [ -n "$json" ]; then
    python3 -c '
import json, sys
out, parts = sys.argv[1], sys.argv[2:]
settings = []
for part in parts:
    with open(part, encoding="utf-8") as f:
        settings.append(json.load(f))
combined = {"tool": "weft-go-peer", "go_version": settings[0]["go_version"], "settings": settings}
with open(out, "w", encoding="utf-8") as f:
    json.dump(combined, f, indent=2, ensure_ascii=False)
    f.write("\n")
' "$json" "${parts[@]}"
    echo "run.sh: wrote $json (${#parts[@]} GOMAXPROCS settings)" >&2
fi
