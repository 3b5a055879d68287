package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// kubeAPIAudience is the cluster's service-account issuer, which
// kube-apiserver sends as its audience in TokenReviews (and the operator's
// --kube-api-audiences default).
const kubeAPIAudience = "https://kubernetes.default.svc.cluster.local"

// secretToken reads the token of a Secret; it is never logged.
func secretToken(t *testing.T, ns, secret string) string {
	t.Helper()
	out := mustKubectl(t, "", "-n", ns, "get", "secret", secret, "-o", "jsonpath={.data.token}")
	b, err := base64.StdEncoding.DecodeString(out)
	if err != nil || len(b) == 0 {
		t.Fatalf("Secret %s/%s holds no token (%v)", ns, secret, err)
	}
	return string(b)
}

// authEndpoint calls the auth Service from this machine by its ClusterIP
// (routed to the bridge, DNAT by kube-proxy, as kube-apiserver calls it),
// trusting the CA hack/cluster.sh up made for it.
type authEndpoint struct {
	base   string
	client *http.Client
}

// newAuthEndpoint returns a client; newConnections: one connection per
// request, so kube-proxy picks a replica for each.
func newAuthEndpoint(t *testing.T, newConnections bool) *authEndpoint {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(clusterEnv["AUTH_TLS_DIR"], "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("the auth CA holds no PEM certificate")
	}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: authService, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: newConnections, Proxy: nil,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &authEndpoint{base: "https://" + clusterEnv["AUTH_CLUSTER_IP"] + ":8082", client: &http.Client{Transport: tr, Timeout: 3 * time.Second}}
}

// authorize asks /v1/authorize and returns the status code.
func (e *authEndpoint) authorize(tok, query string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, e.base+"/v1/authorize?"+query, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := e.client.Do(req)
	if err != nil {
		return 0, err
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// review posts a TokenReview for tok and the audiences, and returns
// whether it was authenticated, and the user or the error it names.
func (e *authEndpoint) review(tok string, audiences ...string) (bool, string, error) {
	body, _ := json.Marshal(map[string]any{
		"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
		"spec": map[string]any{"token": tok, "audiences": audiences},
	})
	resp, err := e.client.Post(e.base+"/v1/tokenreview", "application/json", bytes.NewReader(body))
	if err != nil {
		return false, "", err
	}
	defer resp.Body.Close()
	var r struct {
		Status struct {
			Authenticated bool   `json:"authenticated"`
			Error         string `json:"error"`
			User          struct {
				Username string `json:"username"`
			} `json:"user"`
		} `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return false, "", fmt.Errorf("TokenReview answer (%s): %w", resp.Status, err)
	}
	if r.Status.Authenticated {
		return true, r.Status.User.Username, nil
	}
	return false, r.Status.Error, nil
}

// checkWhoami creates an ApiToken of audience kubernetes and runs
// `kubectl --token=<it> auth whoami` against kube-apiserver, which was
// started with --authentication-token-webhook-config-file pointing at the
// auth Service's ClusterIP (hack/cluster.sh): the API server must call the
// deployed auth replicas and print the token's identity. A content-api
// token must be refused.
func checkWhoami(t *testing.T, tenant string) {
	mustKubectl(t, fmt.Sprintf(`apiVersion: tokens.apitoken.dev/v1alpha1
kind: ApiToken
metadata: {name: kube-reader, namespace: %s}
spec: {type: read-only, duration: 1h, audience: kubernetes}
`, tenant), "apply", "-f", "-")
	if err := eventually(time.Minute, 500*time.Millisecond, func() error {
		phase, err := kubectl("", "-n", tenant, "get", "apitoken", "kube-reader", "-o", "jsonpath={.status.phase}")
		if err == nil && phase != "Active" {
			err = fmt.Errorf("phase %q, want Active", phase)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	tok := secretToken(t, tenant, "kube-reader-token")
	// Both auth replicas must know the token before the API server asks:
	// it caches a refusal for 30 s (--authentication-token-webhook-cache-unauthorized-ttl).
	ep := newAuthEndpoint(t, true)
	if err := eventually(30*time.Second, 200*time.Millisecond, func() error {
		for range 6 {
			ok, msg, err := ep.review(tok, kubeAPIAudience)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("TokenReview refused: %s", msg)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(scratch, "no-credentials.kubeconfig")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: apitoken
  cluster: {server: "https://%s:6443", certificate-authority: %q}
contexts:
- name: apitoken
  context: {cluster: apitoken, user: nobody}
users:
- name: nobody
current-context: apitoken
`, clusterEnv["NODE_IP"], filepath.Join(clusterEnv["CLUSTER_DIR"], "pki", "ca.crt")), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := whoami(cfg, tok)
	if err != nil {
		t.Fatalf("kubectl --token=<kube-reader> auth whoami: %v", err)
	}
	t.Logf("kubectl --token=<kube-reader> auth whoami: %s", out)
	note("kubectl --token=<kube-reader> auth whoami: " + out)
	user, groups, _ := strings.Cut(out, " ")
	if want := "apitoken:" + tenant + ":kube-reader"; user != want {
		t.Errorf("whoami printed user %q, want %q", user, want)
	}
	for _, g := range []string{"apitoken:" + tenant + ":authenticated", "apitoken:" + tenant + ":type:read-only", "system:authenticated"} {
		if !strings.Contains(groups, `"`+g+`"`) {
			t.Errorf("whoami printed groups %s, want %s among them", groups, g)
		}
	}
	// The workload's token is of audience content-api: refused.
	if out, err := whoami(cfg, secretToken(t, tenant, "reader-credentials")); err == nil || !strings.Contains(out, "Unauthorized") {
		t.Errorf("a content-api token at kube-apiserver: %v %s, want Unauthorized", err, out)
	}
}

// whoami runs kubectl --token auth whoami; its errors never carry the
// command line (the token is on it).
func whoami(kubeconfig, tok string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, clusterEnv["KUBECTL"], "--kubeconfig", kubeconfig, "--token="+tok,
		"auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}")
	out, err := cmd.CombinedOutput()
	s := strings.TrimSpace(strings.ReplaceAll(string(out), tok, "[token]"))
	if err != nil {
		return s, fmt.Errorf("%w: %s", err, s)
	}
	return s, nil
}
