#!/usr/bin/env bash
# fuzz.sh fuzzes every fuzz target of the repository, discovered from the
# test files (func FuzzXxx(f *testing.F)), each for FUZZTIME (default 20s),
# and prints each target's executions per second. A crasher is written under
# the package's testdata/fuzz/<target>/ by go test: commit it as a seed with
# the fix. Usage: hack/fuzz.sh [package-pattern] (default ./...).
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZTIME=${FUZZTIME:-20s}
pattern=${1:-./...}
summary=()
failed=0
while read -r dir; do
  pkg="./$dir"
  for target in $(grep -hoE '^func (Fuzz[A-Za-z0-9_]+)\(f \*testing\.F\)' "$dir"/*_test.go | sed -E 's/^func (Fuzz[A-Za-z0-9_]+).*/\1/' | sort -u); do
    echo "fuzz: $pkg $target for $FUZZTIME"
    out=$(mktemp)
    if go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" 2>&1 | tee "$out"; then
      total=$(grep -oE 'execs: [0-9]+' "$out" | tail -1 | grep -oE '[0-9]+' || echo 0)
      rate=$(grep -oE '\([0-9]+/sec\)' "$out" | grep -oE '[0-9]+' | sort -n | tail -1 || echo 0)
      summary+=("$pkg $target: ok, $total executions, peak ${rate:-0}/sec")
    else
      summary+=("$pkg $target: FAILED (crasher in $dir/testdata/fuzz/$target)")
      failed=1
    fi
    rm -f "$out"
  done
done < <(go list -f '{{.Dir}}' "$pattern" | sed "s|^$PWD/||" | while read -r d; do
  if grep -qE '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' "$d"/*_test.go 2>/dev/null; then echo "$d"; fi
done)
echo
echo "fuzz summary (FUZZTIME=$FUZZTIME):"
printf '  %s\n' "${summary[@]}"
exit "$failed"
