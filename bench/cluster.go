package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

type clusterBench struct {
	env        *testenv.Env
	c          client.WithWatch
	kubeconfig string
	binary     string
	dir        string
	op         *exec.Cmd
	authURL    string
	probeURL   string
	metricsURL string
	pprofURL   string
	// profile, when set, is the folder where the largest wave's CPU
	// profiles (operator and kube-apiserver) and the operator's heap
	// profile are written.
	profile string
	// events is --generated-events.
	events bool
}

// stageCluster runs the operator binary against a real kube-apiserver and
// measures reconcile throughput against the API server floor, API writes
// per token and while idle, revoke-to-refusal propagation, resident memory
// and restart-to-ready time.
func stageCluster(cfg *config, r *report) error {
	ctx := context.Background()
	cb := &clusterBench{profile: cfg.profile, events: cfg.events}
	var err error
	if cb.dir, err = os.MkdirTemp("", "bench-cluster-"); err != nil {
		return err
	}
	defer os.RemoveAll(cb.dir)
	cb.binary = filepath.Join(cb.dir, "manager")
	if out, err := exec.Command("go", "build", "-o", cb.binary, "./cmd").CombinedOutput(); err != nil { //nolint:gosec // builds this repository
		return fmt.Errorf("building the operator: %w: %s", err, out)
	}
	if cb.env, err = testenv.Start(testenv.Options{GarbageCollector: true}); err != nil {
		return err
	}
	defer func() { _ = cb.env.Stop() }()
	cb.env.Config.QPS, cb.env.Config.Burst = 2000, 4000
	if cb.c, err = client.NewWithWatch(cb.env.Config, client.Options{Scheme: testenv.Scheme()}); err != nil {
		return err
	}
	cb.kubeconfig = filepath.Join(cb.dir, "kubeconfig")
	if err := cb.env.WriteKubeconfig(cb.kubeconfig, "bench"); err != nil {
		return err
	}
	if err := cb.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apitoken-system"}}); err != nil {
		return err
	}

	// Memory with no token.
	if _, err := cb.startOperator(); err != nil {
		return err
	}
	time.Sleep(3 * time.Second)
	rss0, heap0 := cb.rss(), cb.liveHeap(ctx, "0")
	cb.stopOperator()
	if _, err := cb.startOperator("--enable-controller=false"); err != nil {
		return err
	}
	time.Sleep(3 * time.Second)
	base := baseline{rss: rss0, heap: heap0, authRSS: cb.rss(), authHeap: cb.liveHeap(ctx, "auth-0")}
	cb.stopOperator()

	var points []point
	var failed string
	for i, n := range cfg.tokens {
		fmt.Fprintf(os.Stderr, "bench: cluster: %d tokens...\n", n)
		p, err := cb.measure(ctx, n, n <= 10_000, i == len(cfg.tokens)-1)
		if err != nil {
			if len(points) == 0 {
				return err
			}
			// Report the sizes measured, and why the next one is missing.
			fmt.Fprintf(os.Stderr, "bench: cluster: %d tokens failed: %v\n", n, err)
			failed = fmt.Sprintf("\n%d tokens: the run failed (%v); the sizes above were measured.\n", n, err)
			break
		}
		points = append(points, p)
		fmt.Fprintf(os.Stderr, "bench: cluster: %+v\n", p)
	}
	md, sum := clusterReport(points, base)
	if err := plotScale(points, base, cfg.plot); err != nil {
		return err
	}
	r.add(md+failed, sum)
	return nil
}

// baseline is the memory of the operator and of an auth-only replica with
// no ApiToken.
type baseline struct{ rss, heap, authRSS, authHeap int64 }

// point is one size of the scale curve.
type point struct {
	n     int
	floor time.Duration
	waveResult
	// other is the same wave with --generated-events the other way.
	other                     *waveResult
	idleWrites                int64
	rss, apiRSS, etcRSS, heap int64
	// An auth-only replica: start to ready, resident memory, live heap.
	authReady         time.Duration
	authRSS, authHeap int64
	revoke            []time.Duration
	ready             time.Duration
	verifyNs          float64
}

// measure creates n ApiTokens next to the floor, and measures the wave,
// memory, revoke propagation, restart and verification at that size. The
// operator is left running with the n tokens.
func (cb *clusterBench) measure(ctx context.Context, n int, compareEvents, last bool) (point, error) {
	p := point{n: n}
	var err error
	if p.floor, err = cb.floor(ctx, n); err != nil {
		return p, err
	}
	ns := fmt.Sprintf("ours-%d", n)
	if p.waveResult, err = cb.wave(ctx, ns, n, cb.events, fmt.Sprint(n)); err != nil {
		return p, err
	}
	time.Sleep(2 * time.Second)
	idle0, _ := cb.writes(ctx)
	time.Sleep(10 * time.Second)
	idle1, _ := cb.writes(ctx)
	p.idleWrites = idle1 - idle0
	p.rss = cb.rss()
	p.apiRSS, p.etcRSS = childRSS("kube-apiserver"), childRSS("etcd")
	p.heap = cb.liveHeap(ctx, fmt.Sprint(n))
	if p.revoke, err = cb.propagation(ctx, ns, 100); err != nil {
		return p, err
	}
	cb.stopOperator()
	if p.ready, err = cb.startOperator(); err != nil {
		return p, err
	}
	cb.stopOperator()
	// An auth-only replica (config/auth): the auth endpoint alone, its
	// ApiTokens cached as what its index decides on.
	if p.authReady, err = cb.startOperator("--enable-controller=false"); err != nil {
		return p, err
	}
	time.Sleep(2 * time.Second)
	p.authRSS, p.authHeap = cb.rss(), cb.liveHeap(ctx, "auth-"+fmt.Sprint(n))
	cb.stopOperator()
	p.verifyNs = verifyAt(n)
	if !compareEvents && last {
		return p, nil // nothing is measured after the last size
	}
	if err := cb.drain(ctx, ns); err != nil {
		return p, err
	}
	if compareEvents {
		// The same wave with --generated-events the other way, after the
		// measured one and in a namespace of its own.
		ns := fmt.Sprintf("events-%d", n)
		w, err := cb.wave(ctx, ns, n, !cb.events, "")
		if err != nil {
			return p, err
		}
		p.other = &w
		cb.stopOperator()
		if err := cb.drain(ctx, ns); err != nil {
			return p, err
		}
	}
	return p, nil
}

// waveResult is one wave of n new ApiTokens.
type waveResult struct {
	events         bool
	took           time.Duration
	writesPerToken float64
	wave           wave
	maxQueueDepth  float64
}

// wave starts the operator (with or without Generated Events), creates n
// ApiTokens in ns and waits until all are Active; profiled under tag
// unless it is empty. The operator is left running.
func (cb *clusterBench) wave(ctx context.Context, ns string, n int, events bool, tag string) (waveResult, error) {
	r := waveResult{events: events}
	saved := cb.events
	cb.events = events
	_, err := cb.startOperator()
	cb.events = saved
	if err != nil {
		return r, err
	}
	before, err := cb.writes(ctx)
	if err != nil {
		return r, err
	}
	w0, err := cb.waveCounters(ctx)
	if err != nil {
		return r, err
	}
	if err := cb.ensureNS(ctx, ns); err != nil {
		return r, err
	}
	waitActive, err := cb.watchActive(ctx, ns)
	if err != nil {
		return r, err
	}
	stop := make(chan struct{})
	depth := cb.watchQueue(ctx, stop)
	if tag != "" {
		cb.profileWave(ctx, min(30, max(5, n/400)), tag)
	}
	start := time.Now()
	if err := cb.createTokens(ctx, ns, n); err != nil {
		return r, err
	}
	if err := waitActive(n, time.Duration(n/50+600)*time.Second); err != nil {
		return r, err
	}
	r.took = time.Since(start)
	close(stop)
	r.maxQueueDepth = <-depth
	after, _ := cb.writes(ctx)
	r.writesPerToken = float64(after-before-int64(n)) / float64(n)
	w1, err := cb.waveCounters(ctx)
	if err != nil {
		return r, err
	}
	r.wave = w1.minus(w0)
	return r, nil
}

// propagation revokes tries tokens one by one and measures the time from
// the patch's return to the endpoint's first 401.
func (cb *clusterBench) propagation(ctx context.Context, ns string, tries int) ([]time.Duration, error) {
	var out []time.Duration
	hc := &http.Client{Timeout: 2 * time.Second}
	for i := 0; i < tries; i++ {
		name := fmt.Sprintf("t%d", i)
		var s corev1.Secret
		if err := cb.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name + "-token"}, &s); err != nil {
			return nil, err
		}
		tok := string(s.Data["token"])
		code := func() int {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cb.authURL+"/v1/authorize?scope=articles:read", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := hc.Do(req)
			if err != nil {
				return 0
			}
			_ = resp.Body.Close()
			return resp.StatusCode
		}
		if c := code(); c != 200 {
			return nil, fmt.Errorf("token %s answered %d before the revoke", name, c)
		}
		at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
		if err := cb.c.Patch(ctx, at, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"revoked":true}}`))); err != nil {
			return nil, err
		}
		start := time.Now()
		for code() != 401 {
			if time.Since(start) > 10*time.Second {
				return nil, fmt.Errorf("token %s still accepted 10s after the revoke", name)
			}
			time.Sleep(time.Millisecond)
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}
