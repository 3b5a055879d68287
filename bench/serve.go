package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" //nolint:gosec // served only on BENCH_PPROF, a local port asked for
	"os"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// benchSalt keys the hashes of the synthetic tokens of the serve mode.
var benchSalt = []byte("bench-salt-0123456789abcdef0123456789abcdef0123456789abcdef01234")

// syntheticIndex returns an index of n read-only tokens and one of them.
func syntheticIndex(n int) (*authserver.Index, string) {
	h := token.NewHasher(benchSalt)
	ix := authserver.NewIndex(func() *token.Hasher { return h })
	future := metav1.NewTime(time.Now().Add(24 * time.Hour))
	var probe string
	for i := 0; i < n; i++ {
		t, err := token.Generate()
		if err != nil {
			panic(err)
		}
		if i == n/2 {
			probe = t
		}
		ix.Upsert(&tokensv1alpha1.ApiToken{
			ObjectMeta: metav1.ObjectMeta{Name: "t" + strconv.Itoa(i), Namespace: "bench"},
			Spec:       tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly},
			Status:     tokensv1alpha1.ApiTokenStatus{ExpiresAt: &future, Verification: &tokensv1alpha1.Verification{Hash: h.Hash(t).Encode()}},
		})
	}
	return ix, probe
}

// serve is the child process of the HTTP stages: "ours" serves the auth
// endpoint over an index of n tokens ("ours-audit" with an audit log to a
// temporary file); "bare" answers 200 and does nothing; "grpc-*" is
// serveGRPC.
// It prints the address and the probe token, then serves until killed.
func serve(mode string, n int) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	if strings.HasPrefix(mode, "grpc-") {
		_ = ln.Close()
		return serveGRPC(mode, n)
	}
	var h http.Handler
	probe := "-"
	switch mode {
	case "bare":
		h = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	case "ours", "ours-audit":
		var ix *authserver.Index
		ix, probe = syntheticIndex(n)
		handler := &authserver.Handler{Index: ix, Clock: clock.RealClock{}, Options: authserver.Options{PathPrefix: "/api", DefaultNamespaces: []string{"bench"}}}
		if mode == "ours-audit" {
			f, err := os.CreateTemp("", "apitoken-bench-audit-*.jsonl")
			if err != nil {
				return err
			}
			defer os.Remove(f.Name())
			handler.Audit = authserver.NewAuditLog(f)
			go func() { _ = handler.Audit.Start(context.Background()) }()
		}
		h = (&authserver.Server{Handler: handler}).Mux()
	default:
		return fmt.Errorf("unknown serve mode %q", mode)
	}
	if addr := os.Getenv("BENCH_PPROF"); addr != "" && os.Getenv("BENCH_PPROF_MODE") == mode {
		// Profile this server while a stage loads it (net/http/pprof).
		go func() { _ = http.ListenAndServe(addr, nil) }() //nolint:gosec // a local profiling port, on request
	}
	fmt.Fprintf(os.Stdout, "%s %s\n", ln.Addr(), probe)
	s := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10}
	return s.Serve(ln)
}
