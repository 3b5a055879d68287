package cluster

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// checkPluginVerify builds the kubectl plugin as make build does and runs
// `kubectl apitoken verify` with the workload's token on stdin, twice:
// through the port-forward the plugin opens itself to a ready pod of the
// auth Service (API server, kubelet, containerd's stream server), trusting
// the CA of Secret apitoken-operator-auth-cert; and through a real
// `kubectl port-forward svc/apitoken-operator-auth` with --url on its
// local end (the certificate hack/cluster.sh made carries 127.0.0.1).
// Each must print the token's identity; a token that is not one must be
// refused before anything is sent.
func checkPluginVerify(t *testing.T, tenant string) {
	start := time.Now()
	plugin := filepath.Join(repo, "bin", "kubectl-apitoken")
	if out, err := script(10*time.Minute, "go", "build", "-o", plugin, "./cmd/kubectl-apitoken"); err != nil {
		t.Fatalf("go build ./cmd/kubectl-apitoken: %v\n%s", err, out)
	}
	record("go build ./cmd/kubectl-apitoken", time.Since(start))
	tok := secretToken(t, tenant, "reader-credentials")
	want := "apitoken:" + tenant + ":reader"

	out, err := runPlugin(plugin, tok, "-n", tenant, "verify")
	if err != nil {
		t.Fatalf("kubectl apitoken verify (its own port-forward): %v", err)
	}
	if !strings.Contains(out, "Authenticated: true") || !regexp.MustCompile(`(?m)^User:\s+`+regexp.QuoteMeta(want)+`$`).MatchString(out) {
		t.Errorf("kubectl apitoken verify (its own port-forward) printed:\n%s\nwant Authenticated: true and User: %s", out, want)
	}
	t.Logf("kubectl apitoken verify -n %s < token (its own port-forward):\n%s", tenant, out)

	pf, port, err := portForward("-n", namespace, "port-forward", "svc/apitoken-operator-auth", ":8082")
	if err != nil {
		t.Fatalf("kubectl port-forward svc/apitoken-operator-auth: %v", err)
	}
	defer pf()
	url := fmt.Sprintf("https://127.0.0.1:%s", port)
	out, err = runPlugin(plugin, tok, "-n", tenant, "verify", "--url", url, "--certificate-authority", filepath.Join(clusterEnv["AUTH_TLS_DIR"], "ca.crt"))
	if err != nil {
		t.Fatalf("kubectl apitoken verify --url %s (kubectl port-forward): %v", url, err)
	}
	if !strings.Contains(out, "Authenticated: true") || !strings.Contains(out, want) {
		t.Errorf("kubectl apitoken verify --url %s printed:\n%s\nwant Authenticated: true and %s", url, out, want)
	}
	t.Logf("kubectl port-forward svc/apitoken-operator-auth :8082, then kubectl apitoken verify --url %s < token:\n%s", url, out)
	note(fmt.Sprintf("kubectl apitoken verify: %s through its own port-forward and through kubectl port-forward (%s)", want, url))

	if out, err := runPlugin(plugin, "atk_not_a_token", "-n", tenant, "verify", "--url", url, "--certificate-authority", filepath.Join(clusterEnv["AUTH_TLS_DIR"], "ca.crt")); err == nil {
		t.Errorf("kubectl apitoken verify of a malformed token succeeded:\n%s", out)
	}
}

// runPlugin runs the plugin with the admin kubeconfig and tok on stdin;
// the token never appears in what it returns.
func runPlugin(plugin, tok string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, plugin, append([]string{"--kubeconfig", clusterEnv["KUBECONFIG"]}, args...)...)
	cmd.Stdin = strings.NewReader(tok + "\n")
	out, err := cmd.CombinedOutput()
	s := strings.TrimSpace(strings.ReplaceAll(string(out), tok, "[token]"))
	if err != nil {
		return s, fmt.Errorf("%w: %s", err, s)
	}
	return s, nil
}

// portForward starts kubectl port-forward and returns a stop function and
// the local port it printed.
func portForward(args ...string) (func(), string, error) {
	cmd := exec.Command(clusterEnv["KUBECTL"], append([]string{"--kubeconfig", clusterEnv["KUBECONFIG"], "--address", "127.0.0.1"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	ports := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`^Forwarding from 127\.0\.0\.1:(\d+) ->`)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case ports <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case p := <-ports:
		return stop, p, nil
	case <-time.After(30 * time.Second):
		stop()
		return nil, "", fmt.Errorf("printed no local port in 30 s")
	}
}
