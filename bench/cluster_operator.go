package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
)

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
