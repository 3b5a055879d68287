#!/usr/bin/env bash
# bench-endpoints.sh compares the auth endpoint's handlers with those of an
# earlier commit, in one run, interleaved: BASE's /v1/authorize through its
# routes against each endpoint of this tree (BenchmarkEndpoints), on the
# same machine. Usage: hack/bench-endpoints.sh BASE [ROUNDS]
# (BASE: 003ec67, the last commit before the split into one endpoint per
# proxy protocol). Prints a Markdown table of medians.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_PREFIX=bench-endpoints
# shellcheck source=hack/lib.sh
source hack/lib.sh

base=${1:?usage: hack/bench-endpoints.sh BASE [ROUNDS]}
rounds=${2:-5}
work=$(mktemp -d)
trap 'git worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
run "git worktree add $base" git worktree add --detach "$work/base" "$base"
# The same measurement as BenchmarkEndpoints, on BASE's routes.
cat >"$work/base/internal/authserver/zz_base_bench_test.go" <<'GO'
package authserver

import (
	"net/http/httptest"
	"testing"
)

func BenchmarkBaseAuthorize(b *testing.B) {
	f := newFixture()
	mux := (&Server{Handler: f.h}).Mux()
	r := httptest.NewRequest("GET", "/v1/authorize?scope=articles:read", nil)
	r.Header["Authorization"] = []string{"Bearer " + f.tokens["reader"]}
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}
GO
run "build $base" sh -c "cd '$work/base' && go test -c -o '$work/base.test' ./internal/authserver"
run "build this tree" go test -c -o "$work/new.test" ./internal/authserver
for _ in $(seq "$rounds"); do
  "$work/base.test" -test.run '^$' -test.bench 'BenchmarkBaseAuthorize$' -test.benchmem -test.count=3 | grep '^Benchmark' >>"$work/out"
  "$work/new.test" -test.run '^$' -test.bench 'BenchmarkEndpoints' -test.benchmem -test.count=3 | grep '^Benchmark' >>"$work/out"
done
awk -v base="$base" '
  { name=$1; sub(/-[0-9]+$/, "", name); v[name]=v[name] " " $3; b[name]=$5; a[name]=$7 }
  function median(s,   n, arr, i, j, t) {
    n = split(s, arr, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (arr[j] + 0 < arr[i] + 0) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
    return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
  }
  END {
    ref = median(v["BenchmarkBaseAuthorize"])
    printf "| handler | median ns/op | vs %s /v1/authorize | B/op | allocs/op |\n| --- | --- | --- | --- | --- |\n", base
    printf "| %s `/v1/authorize?scope=` | %.0f | 1.00x | %s | %s |\n", base, ref, b["BenchmarkBaseAuthorize"], a["BenchmarkBaseAuthorize"]
    n = split("explicit auth-request forward-auth ext-authz", names, " ")
    for (i = 1; i <= n; i++) { k = "BenchmarkEndpoints/" names[i]; m = median(v[k]); printf "| %s | %.0f | %.2fx | %s | %s |\n", names[i], m, m / ref, b[k], a[k] }
  }' "$work/out"
