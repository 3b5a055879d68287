// Command bench measures apitoken-operator against the alternatives, both
// sides in the same run on the same machine, interleaved, several rounds,
// and writes docs/benchmarks.md. Run it with `make bench`.
//
// Stages: in-process verification; forward auth over loopback HTTP against
// a bare net/http handler; TokenReview against kube-apiserver's own with a
// static token file; revoke-to-refusal propagation; reconcile throughput
// against the API server floor; memory of the operator process; gRPC
// ext_authz against a bare gRPC server; the audit log's cost.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/go-logr/logr"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

type config struct {
	out      string
	rounds   int
	duration time.Duration
	tokens   []int
	skip     map[string]bool
	plot     string
	profile  string
	events   bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		fs := flag.NewFlagSet("serve", flag.ExitOnError)
		mode := fs.String("mode", "ours", "ours or bare")
		n := fs.Int("tokens", 100000, "tokens in the index")
		_ = fs.Parse(os.Args[2:])
		if err := serve(*mode, *n); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	var cfg config
	var skip, tokens string
	flag.StringVar(&cfg.out, "out", "docs/benchmarks.md", "Report to write.")
	flag.IntVar(&cfg.rounds, "rounds", 3, "Interleaved rounds per comparison (medians are reported).")
	flag.DurationVar(&cfg.duration, "duration", 2*time.Second, "Length of each HTTP load run.")
	flag.StringVar(&tokens, "scale", "1k,10k", "ApiToken counts of the scale curve (cluster stage), e.g. 1k,10k,100k (100k takes most of an hour here).")
	flag.BoolVar(&cfg.events, "generated-events", false, "The operator's --generated-events in the cluster stage's measured waves (up to 10k, the other setting is measured too).")
	flag.StringVar(&cfg.plot, "plot", "docs/benchmarks-scale.png", "PNG of the scale curve to write (empty: none).")
	flag.StringVar(&cfg.profile, "profile", "", "Folder for CPU profiles of the operator and kube-apiserver during each wave, and the operator's heap after it (empty: none).")
	flag.StringVar(&skip, "skip", "", "Comma-separated stages to skip: verify,http,tokenreview,grpc,audit,cluster.")
	flag.Parse()
	cfg.skip = map[string]bool{}
	for _, s := range strings.Split(skip, ",") {
		if s != "" {
			cfg.skip[s] = true
		}
	}
	var err error
	if cfg.tokens, err = parseSizes(tokens); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	logf.SetLogger(logr.Discard()) // envtest's own chatter
	r := &report{started: time.Now()}
	steps := []struct {
		name string
		run  func(*config, *report) error
	}{
		{"verify", stageVerify},
		{"http", stageHTTP},
		{"tokenreview", stageTokenReview},
		{"cluster", stageCluster},
		{"grpc", stageGRPC},
		{"audit", stageAudit},
	}
	for _, s := range steps {
		if cfg.skip[s.name] {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: %s...\n", s.name)
		start := time.Now()
		if err := s.run(&cfg, r); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %s failed: %v\n", s.name, err)
			r.add("## "+s.name+"\n\nFailed: "+err.Error()+"\n", "")
		}
		fmt.Fprintf(os.Stderr, "bench: %s done in %v\n", s.name, time.Since(start).Round(time.Second))
	}
	if err := r.write(cfg.out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Print(r.summary.String())
	fmt.Fprintf(os.Stderr, "bench: wrote %s (GOMAXPROCS %d)\n", cfg.out, runtime.GOMAXPROCS(0))
}
