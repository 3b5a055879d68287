package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
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

// deleteAll deletes every object of o's kind in ns. One delete-collection
// of 100k objects outlasts kube-apiserver's request timeout; each call
// deletes what it can in time, so it is called again until one completes.
func (cb *clusterBench) deleteAll(ctx context.Context, o client.Object, ns string) error {
	var err error
	for try := 0; try < 30; try++ {
		if err = cb.c.DeleteAllOf(ctx, o, client.InNamespace(ns)); err == nil {
			return nil
		}
		time.Sleep(time.Second)
	}
	return fmt.Errorf("deleting every %T in %s: %w", o, ns, err)
}

// drain deletes the ApiTokens of ns and their Secrets (itself: the
// garbage collector of envtest's kube-controller-manager deletes about 15
// per second, at its default client QPS) and waits until they are gone, so
// that the next measurement does not pay for it.
func (cb *clusterBench) drain(ctx context.Context, ns string) error {
	for _, o := range []client.Object{&tokensv1alpha1.ApiToken{}, &corev1.Secret{}} {
		if err := cb.deleteAll(ctx, o, ns); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(20 * time.Minute)
	for time.Now().Before(deadline) {
		var list metav1.PartialObjectMetadataList
		list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
		if err := cb.c.List(ctx, &list, client.InNamespace(ns), client.Limit(1)); err != nil {
			return err
		}
		if len(list.Items) == 0 {
			return nil
		}
		time.Sleep(2 * time.Second)
	}
	return fmt.Errorf("the Secrets of %s were not deleted in 20 minutes", ns)
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

// liveHeap forces a garbage collection in the operator (through its heap
// profile, written to cb.profile when set) and returns its live heap.
func (cb *clusterBench) liveHeap(ctx context.Context, tag string) int64 {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cb.pprofURL+"/heap?gc=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	if cb.profile != "" {
		if f, err := os.Create(filepath.Join(cb.profile, "operator-heap-"+tag+".pprof")); err == nil { //nolint:gosec // the -profile folder
			_, _ = io.Copy(f, resp.Body)
			_ = f.Close()
		}
	}
	_ = resp.Body.Close()
	v, _ := promSum(ctx, http.DefaultClient, cb.metricsURL, "go_memstats_heap_alloc_bytes")
	return int64(v)
}

// childRSS is the resident memory of this process's child named comm
// (envtest's kube-apiserver and etcd), or 0.
func childRSS(comm string) int64 {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	self := strconv.Itoa(os.Getpid())
	for _, d := range dirs {
		stat, err := os.ReadFile(filepath.Join(d, "stat")) //nolint:gosec // /proc/<pid>/stat
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open || s[open+1:closing] != comm {
			continue
		}
		if f := strings.Fields(s[closing+1:]); len(f) < 2 || f[1] != self {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		return rssOf(pid)
	}
	return 0
}

// startOperator starts the operator binary with the bench's flags and
// extra, and returns the time from start to its auth endpoint's /readyz.
func (cb *clusterBench) startOperator(extra ...string) (time.Duration, error) {
	port := func() int {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}
	auth, probe, metrics, pprof := port(), port(), port(), port()
	cb.authURL = fmt.Sprintf("http://127.0.0.1:%d", auth)
	cb.probeURL = fmt.Sprintf("http://127.0.0.1:%d", probe)
	cb.metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", metrics)
	cb.pprofURL = fmt.Sprintf("http://127.0.0.1:%d/debug/pprof", pprof)
	log, err := os.OpenFile(filepath.Join(cb.dir, "operator.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	cb.op = exec.Command(cb.binary, "--namespace=apitoken-system", "--enable-webhooks=false", //nolint:gosec // the binary just built
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", metrics), fmt.Sprintf("--pprof-bind-address=127.0.0.1:%d", pprof),
		fmt.Sprintf("--auth-bind-address=127.0.0.1:%d", auth), fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", probe),
		"--grpc-auth-bind-address=0", "--max-concurrent-reconciles=16", "--generated-events="+strconv.FormatBool(cb.events), "--auth-default-namespaces=*")
	cb.op.Args = append(cb.op.Args, extra...)
	cb.op.Env = append(os.Environ(), "KUBECONFIG="+cb.kubeconfig)
	cb.op.Stdout, cb.op.Stderr = log, log
	start := time.Now()
	if err := cb.op.Start(); err != nil {
		return 0, err
	}
	for time.Since(start) < 2*time.Minute {
		if resp, err := http.Get(cb.authURL + "/readyz"); err == nil { //nolint:noctx // local probe
			_ = resp.Body.Close()
			if resp.StatusCode == 200 {
				return time.Since(start), nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, fmt.Errorf("the operator did not become ready")
}

func (cb *clusterBench) stopOperator() {
	if cb.op != nil && cb.op.Process != nil {
		_ = cb.op.Process.Signal(syscall.SIGTERM)
		_ = cb.op.Wait()
		cb.op = nil
	}
}

// rss returns the operator's resident memory in bytes.
func (cb *clusterBench) rss() int64 {
	return rssOf(cb.op.Process.Pid)
}

// rssOf returns a process's resident memory (VmRSS) in bytes, or 0.
func rssOf(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func parallel(n, workers int, f func(i int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

func (cb *clusterBench) ensureNS(ctx context.Context, ns string) error {
	err := cb.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		return err
	}
	return nil
}

func (cb *clusterBench) createTokens(ctx context.Context, ns string, n int) error {
	if err := cb.ensureNS(ctx, ns); err != nil {
		return err
	}
	return parallel(n, 16, func(i int) error {
		return cb.c.Create(ctx, &tokensv1alpha1.ApiToken{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("t%d", i), Namespace: ns},
			Spec:       tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"},
		})
	})
}

// floor times the writes the operator's path needs, done by a plain
// client with the same objects: create the ApiToken, create its Secret
// (same labels, annotations, owner and data size), write its status once
// (same fields the operator records).
func (cb *clusterBench) floor(ctx context.Context, n int) (time.Duration, error) {
	ns := fmt.Sprintf("floor-%d", n)
	if err := cb.ensureNS(ctx, ns); err != nil {
		return 0, err
	}
	random := func(n int) string {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		return base64.StdEncoding.EncodeToString(b)
	}
	start := time.Now()
	err := parallel(n, 16, func(i int) error {
		name := fmt.Sprintf("t%d", i)
		at := &tokensv1alpha1.ApiToken{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:       tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"},
		}
		if err := cb.c.Create(ctx, at); err != nil {
			return err
		}
		now := metav1.NewTime(time.Now().Truncate(time.Second))
		expires := metav1.NewTime(now.Add(30 * 24 * time.Hour))
		issued := now.UTC().Format(time.RFC3339)
		tok, _ := token.Generate()
		if err := cb.c.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name + "-token", Namespace: ns,
				Labels: map[string]string{tokensv1alpha1.ManagedByLabel: tokensv1alpha1.ManagedByValue, tokensv1alpha1.ApiTokenLabel: name},
				Annotations: map[string]string{tokensv1alpha1.IssuedAtAnnotation: issued, tokensv1alpha1.SealAnnotation: random(64),
					tokensv1alpha1.SaltIDAnnotation: "0123456789abcdef"},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: tokensv1alpha1.GroupVersion.String(), Kind: "ApiToken", Name: name, UID: at.UID,
					Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{tokensv1alpha1.SecretTokenKey: []byte(tok)}}); err != nil {
			return err
		}
		patch := client.MergeFromWithOptions(at.DeepCopy(), client.MergeFromWithOptimisticLock{})
		at.Status = tokensv1alpha1.ApiTokenStatus{
			Phase: tokensv1alpha1.PhaseActive, ObservedGeneration: at.Generation,
			SecretRef: &tokensv1alpha1.SecretReference{Name: name + "-token"},
			IssuedAt:  &now, ExpiresAt: &expires,
			Verification: &tokensv1alpha1.Verification{Hash: random(64), SaltID: "0123456789abcdef"},
			Granted:      &tokensv1alpha1.Granted{Type: tokensv1alpha1.ReadOnly, Audience: tokensv1alpha1.ContentAPI},
			Conditions: []metav1.Condition{
				{Type: tokensv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: tokensv1alpha1.ReasonActive, ObservedGeneration: at.Generation,
					LastTransitionTime: now, Message: "Secret " + name + "-token holds a valid token"},
				{Type: tokensv1alpha1.ConditionExpiringSoon, Status: metav1.ConditionFalse, Reason: tokensv1alpha1.ReasonNotExpiringSoon, ObservedGeneration: at.Generation,
					LastTransitionTime: now, Message: "The token expires at " + expires.UTC().Format(time.RFC3339)},
			},
		}
		return cb.c.Status().Patch(ctx, at, patch)
	})
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	// Leave nothing for the operator to reconcile.
	return took, cb.drain(ctx, ns)
}

func (cb *clusterBench) watchActive(ctx context.Context, ns string) (func(n int, timeout time.Duration) error, error) {
	w, err := cb.c.Watch(ctx, &tokensv1alpha1.ApiTokenList{}, client.InNamespace(ns))
	if err != nil {
		return nil, err
	}
	return func(n int, timeout time.Duration) error {
		defer func() { w.Stop() }()
		active, count := map[string]bool{}, 0
		set := func(name string, is bool) {
			switch was := active[name]; {
			case is && !was:
				count++
			case was && !is:
				count--
			}
			active[name] = is
		}
		deadline := time.After(timeout)
		for count < n {
			select {
			case ev, ok := <-w.ResultChan():
				if at, isToken := ev.Object.(*tokensv1alpha1.ApiToken); ok && isToken {
					set(at.Name, at.Status.Phase == tokensv1alpha1.PhaseActive && ev.Type != watch.Deleted)
					continue
				}
				// Ended, or an error: recount, and watch on from there.
				fmt.Fprintf(os.Stderr, "bench: the watch of %s ended (%v); resuming\n", ns, ev.Object)
				w.Stop()
				var list tokensv1alpha1.ApiTokenList
				if err := cb.c.List(ctx, &list, client.InNamespace(ns)); err != nil {
					return err
				}
				active, count = map[string]bool{}, 0
				for i := range list.Items {
					set(list.Items[i].Name, list.Items[i].Status.Phase == tokensv1alpha1.PhaseActive)
				}
				if w, err = cb.c.Watch(ctx, &tokensv1alpha1.ApiTokenList{}, client.InNamespace(ns), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}}); err != nil {
					return err
				}
			case <-deadline:
				return fmt.Errorf("not all %d ApiTokens in %s became Active in %v", n, ns, timeout)
			}
		}
		return nil
	}, nil
}

// writes returns kube-apiserver's count of write requests on Secrets and
// ApiTokens (status included).
func (cb *clusterBench) writes(ctx context.Context) (int64, error) {
	hc, err := rest.HTTPClientFor(cb.env.Config)
	if err != nil {
		return 0, err
	}
	v, err := promSumWhere(ctx, hc, strings.TrimSuffix(cb.env.Config.Host, "/")+"/metrics", "apiserver_request_total", func(line string) bool {
		if !strings.Contains(line, `resource="secrets"`) && !strings.Contains(line, `resource="apitokens"`) {
			return false
		}
		for _, verb := range []string{`verb="POST"`, `verb="PUT"`, `verb="PATCH"`, `verb="APPLY"`, `verb="DELETE"`} {
			if strings.Contains(line, verb) {
				return true
			}
		}
		return false
	})
	return int64(v), err
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

func pctDur(xs []time.Duration, p float64) time.Duration {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[int(p*float64(len(s)-1))].Round(100 * time.Microsecond)
}

// promSum sums, in the Prometheus text at url (fetched with hc), the
// samples of metric whose labels contain every one of match.
func promSum(ctx context.Context, hc *http.Client, url, metric string, match ...string) (float64, error) {
	return promSumWhere(ctx, hc, url, metric, func(line string) bool {
		for _, m := range match {
			if !strings.Contains(line, m) {
				return false
			}
		}
		return true
	})
}

// promSumWhere sums the samples of metric whose line keep accepts.
func promSumWhere(ctx context.Context, hc *http.Client, url, metric string, keep func(line string) bool) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var total float64
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		if (!strings.HasPrefix(line, metric+"{") && !strings.HasPrefix(line, metric+" ")) || !keep(line) {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		total += v
	}
	return total, s.Err()
}

// wave is what one reconcile wave cost, from the operator's and
// kube-apiserver's own metrics.
type wave struct {
	reconciles, reconcileSeconds float64
	queueWaitSeconds             float64
	events, gets                 float64
}

// waveCounters reads the cumulative counters a wave is the difference of.
func (cb *clusterBench) waveCounters(ctx context.Context) (wave, error) {
	var w wave
	hc := &http.Client{Timeout: 10 * time.Second}
	api, err := rest.HTTPClientFor(cb.env.Config)
	if err != nil {
		return w, err
	}
	apiURL := strings.TrimSuffix(cb.env.Config.Host, "/") + "/metrics"
	for _, q := range []struct {
		into   *float64
		hc     *http.Client
		url    string
		metric string
		match  []string
	}{
		{&w.reconciles, hc, cb.metricsURL, "controller_runtime_reconcile_total", []string{`controller="apitoken"`}},
		{&w.reconcileSeconds, hc, cb.metricsURL, "controller_runtime_reconcile_time_seconds_sum", []string{`controller="apitoken"`}},
		{&w.queueWaitSeconds, hc, cb.metricsURL, "workqueue_queue_duration_seconds_sum", []string{`name="apitoken"`}},
		{&w.events, api, apiURL, "apiserver_request_total", []string{`resource="events"`, `verb="POST"`}},
		{&w.gets, api, apiURL, "apiserver_request_total", []string{`verb="GET"`, `scope="resource"`}},
	} {
		v, err := promSum(ctx, q.hc, q.url, q.metric, q.match...)
		if err != nil {
			return w, err
		}
		*q.into = v
	}
	return w, nil
}

func (w wave) minus(o wave) wave {
	return wave{reconciles: w.reconciles - o.reconciles, reconcileSeconds: w.reconcileSeconds - o.reconcileSeconds,
		queueWaitSeconds: w.queueWaitSeconds - o.queueWaitSeconds, events: w.events - o.events, gets: w.gets - o.gets}
}

// watchQueue samples the operator's work queue depth until stop is
// closed, and returns the deepest it saw.
func (cb *clusterBench) watchQueue(ctx context.Context, stop <-chan struct{}) <-chan float64 {
	out := make(chan float64, 1)
	go func() {
		hc := &http.Client{Timeout: 2 * time.Second}
		var deepest float64
		for {
			if d, err := promSum(ctx, hc, cb.metricsURL, "workqueue_depth", `name="apitoken"`); err == nil && d > deepest {
				deepest = d
			}
			select {
			case <-stop:
				out <- deepest
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	return out
}

// profileWave writes CPU profiles of the operator and kube-apiserver,
// taken over the first seconds of a wave, into cb.profile.
func (cb *clusterBench) profileWave(ctx context.Context, seconds int, tag string) {
	if cb.profile == "" {
		return
	}
	api, err := rest.HTTPClientFor(cb.env.Config)
	if err != nil {
		return
	}
	get := func(hc *http.Client, url, file string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: profile %s: %v\n", file, err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(filepath.Join(cb.profile, file)) //nolint:gosec // the -profile folder
		if err != nil {
			return
		}
		defer f.Close()
		_, _ = io.Copy(f, resp.Body)
	}
	go get(&http.Client{Timeout: time.Duration(seconds+30) * time.Second}, fmt.Sprintf("%s/profile?seconds=%d", cb.pprofURL, seconds), "operator-cpu-"+tag+".pprof")
	go get(api, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimSuffix(cb.env.Config.Host, "/"), seconds), "apiserver-cpu-"+tag+".pprof")
}
