package main

import (
	"bufio"
	"context"
	"fmt"
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
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

type clusterBench struct {
	env        *testenv.Env
	c          client.Client
	kubeconfig string
	binary     string
	dir        string
	op         *exec.Cmd
	authURL    string
	probeURL   string
}

// stageCluster runs the operator binary against a real kube-apiserver and
// measures reconcile throughput against the API server floor, API writes
// per token and while idle, revoke-to-refusal propagation, resident memory
// and restart-to-ready time.
func stageCluster(cfg *config, r *report) error {
	ctx := context.Background()
	cb := &clusterBench{}
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
	if cb.c, err = client.New(cb.env.Config, client.Options{Scheme: testenv.Scheme()}); err != nil {
		return err
	}
	cb.kubeconfig = filepath.Join(cb.dir, "kubeconfig")
	if err := cb.env.WriteKubeconfig(cb.kubeconfig, "bench"); err != nil {
		return err
	}
	if err := cb.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apitoken-system"}}); err != nil {
		return err
	}

	var md, sum strings.Builder
	// Memory with no token.
	if _, err := cb.startOperator(); err != nil {
		return err
	}
	time.Sleep(3 * time.Second)
	rss0 := cb.rss()
	cb.stopOperator()

	md.WriteString("## 4. Reconcile throughput\n\nApiTokens created by 16 concurrent clients until all are `Active`, next to the API server floor: the same client creating, for each token, the ApiToken, a plain Secret and one status write (the three writes the operator's path costs, done directly). The operator is the real binary; writes are counted from kube-apiserver's `apiserver_request_total` (Secrets and ApiTokens, Events excluded). One round per size (the 10k runs are long).\n\n| tokens | floor | operator: applied → all Active | ratio | operator writes per token | writes in 10 s idle |\n| --- | --- | --- | --- | --- | --- |\n")
	var memRows []string
	var last int
	for _, n := range cfg.tokens {
		floor, err := cb.floor(ctx, n)
		if err != nil {
			return err
		}
		if _, err := cb.startOperator(); err != nil {
			return err
		}
		before, err := cb.writes(ctx)
		if err != nil {
			return err
		}
		ns := fmt.Sprintf("ours-%d", n)
		start := time.Now()
		if err := cb.createTokens(ctx, ns, n); err != nil {
			return err
		}
		if err := cb.waitActive(ctx, ns, n, 10*time.Minute); err != nil {
			return err
		}
		took := time.Since(start)
		after, _ := cb.writes(ctx)
		perToken := float64(after-before-int64(n)) / float64(n)
		time.Sleep(2 * time.Second)
		idle0, _ := cb.writes(ctx)
		time.Sleep(10 * time.Second)
		idle1, _ := cb.writes(ctx)
		rss := cb.rss()
		fmt.Fprintf(&md, "| %d | %v | %v | %.1fx | %.2f | %d |\n", n, floor.Round(time.Millisecond), took.Round(time.Millisecond), float64(took)/float64(floor), perToken, idle1-idle0)
		fmt.Fprintf(&sum, "reconcile %-6d floor %v ours %v (%.1fx), %.2f writes/token, %d idle writes\n", n, floor.Round(time.Millisecond), took.Round(time.Millisecond), float64(took)/float64(floor), perToken, idle1-idle0)
		memRows = append(memRows, fmt.Sprintf("| %d | %.1f MiB | %.2f KiB |", n, float64(rss)/(1<<20), float64(rss-rss0)/float64(n)/1024))
		last = n
		if n != cfg.tokens[len(cfg.tokens)-1] {
			cb.stopOperator()
			if err := cb.c.DeleteAllOf(ctx, &tokensv1alpha1.ApiToken{}, client.InNamespace(ns)); err != nil {
				return err
			}
		}
	}
	md.WriteString("\nTarget: 10k ApiTokens Ready in ≤ 60 s, at most 2 API writes per new token, no writes while idle.\n\n")

	// Propagation: revoke -> first refusal, on the running operator.
	prop, err := cb.propagation(ctx, fmt.Sprintf("ours-%d", last), 100)
	if err != nil {
		return err
	}
	fmt.Fprintf(&md, "## 5. Propagation\n\nFrom the revoke (`spec.revoked: true`, a patch) returning to the first 401 from the operator's auth endpoint (polled every millisecond), %d tries, with %d ApiTokens in the cluster.\n\n| p50 | p99 | max |\n| --- | --- | --- |\n| %v | %v | %v |\n\nTarget: < 1 s at p99 (kube-apiserver's own webhook-token cache holds answers for 2 minutes by default).\n\n",
		len(prop), last, pctDur(prop, 0.5), pctDur(prop, 0.99), pctDur(prop, 1))
	fmt.Fprintf(&sum, "propagation p50 %v p99 %v\n", pctDur(prop, 0.5), pctDur(prop, 0.99))

	// Restart to ready with the last size loaded.
	cb.stopOperator()
	ready, err := cb.startOperator()
	if err != nil {
		return err
	}
	cb.stopOperator()

	md.WriteString("## 6. Memory and restart\n\nResident memory (VmRSS) of the operator process after all tokens are Active; per token is the growth over the empty operator. The operator caches only its own Secrets, without managed fields.\n\n| tokens | RSS | per token |\n| --- | --- | --- |\n")
	fmt.Fprintf(&md, "| 0 | %.1f MiB | |\n", float64(rss0)/(1<<20))
	for _, row := range memRows {
		md.WriteString(row + "\n")
	}
	fmt.Fprintf(&md, "\nRestart with %d ApiTokens: process start → auth endpoint `/readyz` 200 (cache synced, index built) in %v.\n\nTargets: ≤ 4 KiB per token for the operator; ready within 5 s of a restart with 10k tokens. 100k tokens are not measured by default (creating them takes most of an hour here); run `go run ./bench -skip verify,http,tokenreview -reconcile-tokens 100000` for it.\n", last, ready.Round(time.Millisecond))
	fmt.Fprintf(&sum, "memory empty %.1f MiB; %s; restart->ready %v\n", float64(rss0)/(1<<20), strings.Join(memRows, " "), ready.Round(time.Millisecond))
	r.add(md.String(), sum.String())
	return nil
}

func (cb *clusterBench) startOperator() (time.Duration, error) {
	port := func() int {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}
	auth, probe := port(), port()
	cb.authURL = fmt.Sprintf("http://127.0.0.1:%d", auth)
	cb.probeURL = fmt.Sprintf("http://127.0.0.1:%d", probe)
	log, err := os.OpenFile(filepath.Join(cb.dir, "operator.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	cb.op = exec.Command(cb.binary, "--namespace=apitoken-system", "--enable-webhooks=false", "--metrics-bind-address=0", //nolint:gosec // the binary just built
		fmt.Sprintf("--auth-bind-address=127.0.0.1:%d", auth), fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", probe),
		"--max-concurrent-reconciles=8", "--auth-default-namespaces=*")
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
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", cb.op.Process.Pid))
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

// floor times the writes the operator's path needs, done by a plain client:
// create the ApiToken, create a Secret, write its status once.
func (cb *clusterBench) floor(ctx context.Context, n int) (time.Duration, error) {
	ns := fmt.Sprintf("floor-%d", n)
	if err := cb.ensureNS(ctx, ns); err != nil {
		return 0, err
	}
	start := time.Now()
	err := parallel(n, 16, func(i int) error {
		at := &tokensv1alpha1.ApiToken{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("t%d", i), Namespace: ns},
			Spec:       tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"},
		}
		if err := cb.c.Create(ctx, at); err != nil {
			return err
		}
		if err := cb.c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("t%d-token", i), Namespace: ns},
			Data: map[string][]byte{"token": []byte("x")}}); err != nil {
			return err
		}
		patch := client.MergeFrom(at.DeepCopy())
		at.Status.Phase = tokensv1alpha1.PhaseActive
		return cb.c.Status().Patch(ctx, at, patch)
	})
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	// Leave nothing for the operator to reconcile.
	if err := cb.c.DeleteAllOf(ctx, &tokensv1alpha1.ApiToken{}, client.InNamespace(ns)); err != nil {
		return 0, err
	}
	return took, cb.c.DeleteAllOf(ctx, &corev1.Secret{}, client.InNamespace(ns))
}

func (cb *clusterBench) waitActive(ctx context.Context, ns string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var list tokensv1alpha1.ApiTokenList
		if err := cb.c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		active := 0
		for _, at := range list.Items {
			if at.Status.Phase == tokensv1alpha1.PhaseActive {
				active++
			}
		}
		if active == n {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("not all %d ApiTokens in %s became Active in %v", n, ns, timeout)
}

// writes returns kube-apiserver's count of write requests on Secrets and
// ApiTokens (status included).
func (cb *clusterBench) writes(ctx context.Context) (int64, error) {
	hc, err := rest.HTTPClientFor(cb.env.Config)
	if err != nil {
		return 0, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(cb.env.Config.Host, "/")+"/metrics", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var total int64
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		if !strings.Contains(line, `resource="secrets"`) && !strings.Contains(line, `resource="apitokens"`) {
			continue
		}
		isWrite := false
		for _, v := range []string{`verb="POST"`, `verb="PUT"`, `verb="PATCH"`, `verb="APPLY"`, `verb="DELETE"`} {
			if strings.Contains(line, v) {
				isWrite = true
			}
		}
		if !isWrite {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		total += int64(v)
	}
	return total, s.Err()
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
