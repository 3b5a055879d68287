// Package cluster is the end-to-end suite on a real node: hack/cluster.sh
// brings up a single-node cluster on this machine (kubelet, containerd,
// kube-proxy, the pod network on a bridge), the suite installs what users
// install (the Helm chart, then config/default), and checks pods, probes,
// the webhooks reached by kube-apiserver through their Service, a workload
// calling the auth Service by ClusterIP with its mounted token, the cluster
// DNS and status.lastUsedAt, kube-apiserver's webhook token authentication
// (kubectl auth whoami), kubectl apitoken verify through a port-forward,
// the proxies' attack table through Caddy in a pod (the snippet of
// docs/auth-endpoint.md) and the latency its auth hop adds, and rollouts,
// a helm upgrade, a node restart and a revoke under load.
//
// It needs root. It never skips silently: without root or a prerequisite
// it fails saying what is missing; APITOKEN_SKIP_CLUSTER=1 skips it (the
// only opt-out, which .ci/run never sets). APITOKEN_CLUSTER_KEEP=1 leaves
// the cluster running after the suite (hack/cluster.sh down removes it).
package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

const optOut = "APITOKEN_SKIP_CLUSTER"

var (
	// repo is the repository's root.
	repo string
	// skipReason is set when the suite was opted out of.
	skipReason string
	// setupErr says why the cluster could not be brought up.
	setupErr error
	// clusterEnv holds hack/cluster.sh env's assignments (KUBECONFIG, KUBECTL, ...).
	clusterEnv map[string]string
	// scratch keeps helm's cache and config, and the suite's files.
	scratch string
)

func TestMain(m *testing.M) {
	var err error
	if repo, err = filepath.Abs("../.."); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = os.Remove(filepath.Join(repo, "bin", "cluster-suite-timings.txt"))
	if os.Getenv(optOut) == "1" {
		skipReason = optOut + "=1: the real-node suite (test/cluster) is not run"
		fmt.Fprintln(os.Stderr, "cluster:", skipReason)
		os.Exit(m.Run())
	}
	if missing := prerequisites(); len(missing) > 0 {
		setupErr = fmt.Errorf("the real-node suite cannot run here: %s. It brings up a kubelet, containerd and a bridge on this machine (hack/cluster.sh); "+
			"set %s=1 to run every other test without it", strings.Join(missing, "; "), optOut)
		os.Exit(m.Run())
	}
	if scratch, err = os.MkdirTemp("", "apitoken-cluster-suite-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	start := time.Now()
	out, err := script(20*time.Minute, "hack/cluster.sh", "up")
	up := time.Since(start)
	if err != nil {
		setupErr = fmt.Errorf("hack/cluster.sh up failed (%w) after %s:\n%s", err, up.Round(time.Millisecond), tail(out, 60))
	} else if clusterEnv, err = readEnv(); err != nil {
		setupErr = err
	}
	record("cluster up (hack/cluster.sh up)", up)
	code := m.Run()
	if os.Getenv("APITOKEN_CLUSTER_KEEP") == "1" {
		fmt.Fprintf(os.Stderr, "cluster: left running (APITOKEN_CLUSTER_KEEP=1): KUBECONFIG=%s; hack/cluster.sh down removes it\n", clusterEnv["KUBECONFIG"])
	} else {
		start = time.Now()
		if out, err := script(3*time.Minute, "hack/cluster.sh", "down"); err != nil {
			fmt.Fprintf(os.Stderr, "cluster: hack/cluster.sh down failed: %v\n%s\n", err, tail(out, 40))
			code = 1
		}
		record("cluster down (hack/cluster.sh down)", time.Since(start))
	}
	printTimings()
	_ = os.RemoveAll(scratch)
	os.Exit(code)
}

// prerequisites returns what this machine lacks to run a node; the packages
// hack/cluster.sh installs itself with apt-get are not listed.
func prerequisites() []string {
	var missing []string
	if runtime.GOOS != "linux" {
		missing = append(missing, "a Linux host (this is "+runtime.GOOS+")")
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root (run `make test` as root)")
	}
	if _, err := os.Stat("/sys/fs/cgroup"); err != nil {
		missing = append(missing, "cgroups mounted under /sys/fs/cgroup")
	}
	for _, c := range []string{"go", "ip", "openssl", "flock", "setsid"} {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c+" in PATH")
		}
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		for _, c := range []string{"containerd", "runc", "iptables", "conntrack"} {
			if _, err := exec.LookPath(c); err != nil {
				missing = append(missing, c+" (Debian: apt-get install containerd runc containernetworking-plugins iptables conntrack)")
			}
		}
	}
	return missing
}

// script runs a repository script (or make) from the repository's root and
// returns its combined output.
func script(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = repo
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	return out.String(), err
}

func readEnv() (map[string]string, error) {
	out, err := script(time.Minute, "hack/cluster.sh", "env")
	if err != nil {
		return nil, fmt.Errorf("hack/cluster.sh env: %w\n%s", err, out)
	}
	env := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	for _, k := range []string{"KUBECONFIG", "KUBECTL", "CTR_ADDRESS", "CLIENT_IMAGE", "ECHO_IMAGE", "CADDY_IMAGE", "NODE_NAME", "NODE_IP", "CLUSTER_DIR", "DNS_IP", "AUTH_CLUSTER_IP", "AUTH_TLS_DIR"} {
		if env[k] == "" {
			return nil, fmt.Errorf("hack/cluster.sh env printed no %s:\n%s", k, out)
		}
	}
	return env, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var (
	timingsMu sync.Mutex
	timings   []string
	notes     []string
)

// note keeps a finding for the summary printed at the end.
func note(s string) {
	timingsMu.Lock()
	defer timingsMu.Unlock()
	notes = append(notes, s)
}

// record keeps a step's duration for the summary printed at the end (and
// written to bin/cluster-suite-timings.txt, since go test hides a passing
// package's output).
func record(step string, d time.Duration) {
	timingsMu.Lock()
	defer timingsMu.Unlock()
	timings = append(timings, fmt.Sprintf("%7.1fs  %s", d.Seconds(), step))
}

func printTimings() {
	timingsMu.Lock()
	defer timingsMu.Unlock()
	s := "cluster suite timings:\n  " + strings.Join(timings, "\n  ") + "\n"
	if len(notes) > 0 {
		s += "cluster suite findings:\n  " + strings.Join(notes, "\n  ") + "\n"
	}
	fmt.Fprint(os.Stderr, s)
	_ = os.MkdirAll(filepath.Join(repo, "bin"), 0o755)
	_ = os.WriteFile(filepath.Join(repo, "bin", "cluster-suite-timings.txt"), []byte(s), 0o644)
}

// kubectl runs the cluster's kubectl with its admin kubeconfig.
func kubectl(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, clusterEnv["KUBECTL"], append([]string{"--kubeconfig", clusterEnv["KUBECONFIG"]}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func mustKubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := kubectl(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// helm runs the helm of hack/tools.sh with the cluster's kubeconfig and
// its cache and configuration in the suite's scratch directory.
func helm(args ...string) (string, error) {
	bin, err := script(10*time.Minute, "hack/tools.sh", "helm")
	if err != nil {
		return "", fmt.Errorf("hack/tools.sh helm: %w\n%s", err, bin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, lastLine(bin), args...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "KUBECONFIG="+clusterEnv["KUBECONFIG"],
		"HELM_CACHE_HOME="+filepath.Join(scratch, "helm", "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(scratch, "helm", "config"),
		"HELM_DATA_HOME="+filepath.Join(scratch, "helm", "data"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// eventually calls f every interval until it returns nil or timeout has
// passed, and returns f's last error then.
func eventually(timeout, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still after %s: %w", timeout, err)
		}
		time.Sleep(interval)
	}
}

// step runs a subtest and records how long it took.
func step(t *testing.T, name string, f func(t *testing.T)) bool {
	t.Helper()
	start := time.Now()
	ok := t.Run(name, f)
	record(t.Name()+"/"+name, time.Since(start))
	return ok
}

// background runs kubectl args until stopped, and returns its output.
type background struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan error
}

func startKubectl(args ...string) (*background, error) {
	b := &background{done: make(chan error, 1)}
	b.cmd = exec.Command(clusterEnv["KUBECTL"], append([]string{"--kubeconfig", clusterEnv["KUBECONFIG"]}, args...)...)
	b.cmd.Stdout = &b.out
	b.cmd.Stderr = io.Discard
	if err := b.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { b.done <- b.cmd.Wait() }()
	return b, nil
}

// wait waits up to timeout for the command to end, kills it after that.
func (b *background) wait(timeout time.Duration) (string, error) {
	select {
	case err := <-b.done:
		return b.out.String(), err
	case <-time.After(timeout):
		_ = b.cmd.Process.Kill()
		<-b.done
		return b.out.String(), fmt.Errorf("killed after %s", timeout)
	}
}
