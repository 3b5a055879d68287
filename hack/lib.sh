# lib.sh: helpers shared by the hack/ scripts (sourced, not run).

# run STEP CMD...: runs CMD with its output kept in a log; on failure prints
# the step, the command and the last lines of its output, and exits 1, so
# that a refused module or a broken build is reported where it happens.
run() {
  local step=$1
  shift
  local out
  out=$(mktemp)
  if ! "$@" >"$out" 2>&1; then
    echo "${LOG_PREFIX:-hack}: FAILED: $step" >&2
    echo "${LOG_PREFIX:-hack}: command: $*" >&2
    tail -n 30 "$out" | sed 's/^/  | /' >&2
    rm -f "$out"
    exit 1
  fi
  rm -f "$out"
}
