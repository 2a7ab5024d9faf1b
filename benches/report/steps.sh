# Shared by collect.sh and scaling.sh (sourced, not run): recording the
# steps of a collection. The sourcing script sets
#
#   here        benches/report
#   root        the repository root
#   target_dir  cargo's target directory (absolute)
#   tmp         a scratch directory, removed when the script exits
#   steps       the steps.jsonl file that record.py machine-finish folds in
#   failures    0; each failed step adds one
#   log_name    the prefix of progress lines ("collect", "scaling")

record() { python3 "$here/record.py" "$@"; }
log() { echo "$log_name: $*" >&2; }

# A command as one would type it: arguments quoted only where the shell needs
# it, the target directory shown as target/, `env ` dropped.
shell_words() {
    local word words=() prefix
    for word in "$@"; do
        word="${word//"$target_dir"/target}"
        word="${word//"$tmp"\//}"
        word="${word//"$root"\//}"
        prefix=""
        # VAR=value stays an assignment: quote the value only.
        if [[ "$word" =~ ^[A-Z_][A-Z0-9_]*= ]]; then
            prefix="${word%%=*}="
            word="${word#*=}"
        fi
        if [[ "$word" =~ ^[A-Za-z0-9_./=:,+@%-]*$ ]]; then
            words+=("$prefix$word")
        else
            words+=("$prefix'${word//\'/\'\\\'\'}'")
        fi
    done
    local line="${words[*]}"
    printf '%s' "${line#env }"
}

# step SOURCE LABEL COMMAND...: runs COMMAND with its stdout copied to stderr
# and to $tmp/step.out, and records it in steps.jsonl (as $shown_as if set,
# for a command that writes to a temporary file first). Returns COMMAND's
# success.
shown_as=""
step() {
    local source="$1" label="$2"
    shift 2
    local shown started status=ok rc
    shown="${shown_as:-$(shell_words "$@")}"
    shown_as=""
    log "$source [$label]: $shown"
    started=$SECONDS
    set +e
    "$@" | tee "$tmp/step.out" >&2
    rc="${PIPESTATUS[0]}"
    set -e
    if [ "$rc" != 0 ]; then
        status="failed: exit status $rc"
        log "$source [$label]: $status"
        failures=$((failures + 1))
    fi
    record step "$steps" "$source" "$label" "$status" "$((SECONDS - started))" "$shown"
    [ "$status" = ok ]
}

# skip SOURCE LABEL WHY COMMAND...: records a step that could not run.
skip() {
    local source="$1" label="$2" why="$3"
    shift 3
    log "$source [$label]: skipped: $why"
    record step "$steps" "$source" "$label" "skipped: $why" 0 "$(shell_words "$@")"
}

# fail SOURCE LABEL WHY COMMAND...: records a step that ran but gave nothing usable.
fail() {
    local source="$1" label="$2" why="$3"
    shift 3
    log "$source [$label]: failed: $why"
    failures=$((failures + 1))
    record step "$steps" "$source" "$label" "failed: $why" 0 "$(shell_words "$@")"
}
