package cluster

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
	"github.com/apitoken-operator/apitoken-operator/internal/proxytest"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

const (
	// shopNamespace holds the in-cluster proxy (Caddy) and its backend.
	shopNamespace = "shop"
	// caddyAuthPort serves the snippet of docs/auth-endpoint.md,
	// caddyBarePort the same site without forward_auth.
	caddyAuthPort = 8080
	caddyBarePort = 8081
	// expiredAfter is the duration of the table's expired token.
	expiredAfter = 10 * time.Second
)

// caddyReader is what the loops under load send through Caddy: the
// address of its forward_auth site and a token the route accepts. Empty
// until checkCaddy has run.
var caddyReader struct{ addr, token string }

// caddyGlobal are the global options of the in-cluster Caddy: no admin
// endpoint, no ACME (no CA is reachable from here), nothing written to
// disk.
const caddyGlobal = `{
	admin off
	auto_https off
	persist_config off
}
`

// caddyfile is the Caddy snippet of docs/auth-endpoint.md as the pod runs
// it: read from the page, with its auth address, its transport block (the
// endpoint's CA at /etc/caddy/apitoken-ca.crt) and its upstream
// (backend:8080, the Service of the echo pod in the same namespace) as
// written. Only the site address differs: http://:8080, any Host, plain
// HTTP (the page's shop.example would ask an ACME CA for a certificate).
// A second site, http://:8081, is the same block without forward_auth,
// for the latency the hop adds.
func caddyfile(t *testing.T) string {
	t.Helper()
	page, err := os.ReadFile(filepath.Join(repo, "docs", "auth-endpoint.md"))
	if err != nil {
		t.Fatal(err)
	}
	snippet, err := proxytest.CaddySnippet(page)
	if err != nil {
		t.Fatalf("docs/auth-endpoint.md: %v", err)
	}
	withAuth := proxytest.CaddySite(snippet, fmt.Sprintf("http://:%d", caddyAuthPort), "", "")
	bare := proxytest.CaddySite(proxytest.WithoutBlock(snippet, "forward_auth"), fmt.Sprintf("http://:%d", caddyBarePort), "", "")
	if strings.Contains(bare, "forward_auth") || !strings.Contains(withAuth, "forward_auth "+proxytest.CaddyAuthAddress) {
		t.Fatalf("the sites are not the snippet with and without forward_auth:\n%s\n%s", withAuth, bare)
	}
	return caddyGlobal + withAuth + bare
}

// checkCaddy runs Caddy in a pod with the snippet of docs/auth-endpoint.md
// in front of the echo backend pod, the auth endpoint being the deployed
// auth Service (HTTPS, by its DNS name, trusting the documented CA), and
// sends every row of the proxies' attack table (internal/proxytest)
// through it from this machine, by the Caddy Service's ClusterIP: outside
// the pod network, as a client of an ingress would. The rows are asserted
// as internal/authserver's TestCaddyForwardAuth asserts them on loopback:
// a refused row reaches no backend (the echo pod's own count says so) and,
// here also, is a 4xx (Caddy answers 502 when it cannot reach the
// endpoint: that must fail, not pass as a refusal); an allowed row reaches
// the backend once, with the method judged and exactly the token's
// identity headers. Before the table, it measures what the forward_auth
// hop adds.
func checkCaddy(t *testing.T) {
	tokens := createTableTokens(t)
	ca := mustKubectl(t, "", "-n", namespace, "get", "secret", "apitoken-operator-auth-cert", "-o", `jsonpath={.data.ca\.crt}`)
	caPEM, err := base64.StdEncoding.DecodeString(ca)
	if err != nil || !strings.Contains(string(caPEM), "BEGIN CERTIFICATE") {
		t.Fatalf("Secret apitoken-operator-auth-cert has no PEM ca.crt (%v)", err)
	}
	dir := filepath.Join(scratch, "caddy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := caddyfile(t)
	for name, data := range map[string][]byte{"Caddyfile": []byte(conf), "apitoken-ca.crt": caPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mustKubectl(t, "", "-n", shopNamespace, "create", "configmap", "caddy",
		"--from-file=Caddyfile="+filepath.Join(dir, "Caddyfile"), "--from-file=apitoken-ca.crt="+filepath.Join(dir, "apitoken-ca.crt"))
	mustKubectl(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: backend, namespace: %[1]s, labels: {app: backend}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: echo
    image: %[2]s
    imagePullPolicy: Never
    securityContext: {runAsUser: 65532, runAsNonRoot: true, allowPrivilegeEscalation: false}
    readinessProbe: {httpGet: {path: /count, port: 9090}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: %[1]s}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 8080}, {name: count, port: 9090}]
---
apiVersion: v1
kind: Pod
metadata: {name: caddy, namespace: %[1]s, labels: {app: caddy}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: caddy
    image: %[3]s
    imagePullPolicy: Never
    args: [run, --config, /etc/caddy/Caddyfile, --adapter, caddyfile]
    env:
    - {name: HOME, value: /tmp}
    - {name: XDG_DATA_HOME, value: /tmp/data}
    - {name: XDG_CONFIG_HOME, value: /tmp/config}
    securityContext: {runAsUser: 65532, runAsNonRoot: true, allowPrivilegeEscalation: false}
    readinessProbe: {tcpSocket: {port: %[4]d}, periodSeconds: 1}
    volumeMounts:
    - {name: config, mountPath: /etc/caddy, readOnly: true}
  volumes:
  - {name: config, configMap: {name: caddy}}
---
apiVersion: v1
kind: Service
metadata: {name: caddy, namespace: %[1]s}
spec:
  selector: {app: caddy}
  ports: [{name: forward-auth, port: %[4]d}, {name: bare, port: %[5]d}]
`, shopNamespace, clusterEnv["ECHO_IMAGE"], clusterEnv["CADDY_IMAGE"], caddyAuthPort, caddyBarePort), "apply", "-f", "-")
	if _, err := kubectl("", "-n", shopNamespace, "wait", "--for=condition=Ready", "pod/backend", "pod/caddy", "--timeout=90s"); err != nil {
		t.Fatalf("%v\ncaddy's log:\n%s", err, caddyLog())
	}
	caddyIP := mustKubectl(t, "", "-n", shopNamespace, "get", "service", "caddy", "-o", "jsonpath={.spec.clusterIP}")
	backendIP := mustKubectl(t, "", "-n", shopNamespace, "get", "service", "backend", "-o", "jsonpath={.spec.clusterIP}")
	addr := fmt.Sprintf("%s:%d", caddyIP, caddyAuthPort)
	backendCount := func() (int, error) {
		c := http.Client{Timeout: 3 * time.Second}
		resp, err := c.Get(fmt.Sprintf("http://%s:9090/count", backendIP))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strconv.Atoi(strings.TrimSpace(string(b)))
	}
	// kube-proxy programs the Services a moment after their endpoints; the
	// endpoint answers Caddy once the auth replicas hold the new tokens.
	if err := eventually(30*time.Second, 500*time.Millisecond, func() error {
		if _, err := backendCount(); err != nil {
			return err
		}
		resp, _, err := proxytest.RawDo(addr, "GET", "/api/articles/1", proxytest.Attacks[0].RequestHeaders(tokens))
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 {
			return fmt.Errorf("a valid request through Caddy: %d", resp.StatusCode)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\ncaddy's log:\n%s", err, caddyLog())
	}
	t.Logf("Caddy (%s) at http://%s with the snippet of docs/auth-endpoint.md, in front of backend:8080 (%s)", clusterEnv["CADDY_IMAGE"], addr, backendIP)
	// Measured while the expired token runs out.
	measureAuthHop(t, caddyIP, tokens["reader"])
	waitTableTokens(t)

	var refused, allowed, unseen, skipped []string
	for _, a := range proxytest.Attacks {
		t.Run(a.Name, func(t *testing.T) {
			if why, ok := a.NotOn["caddy"]; ok {
				skipped = append(skipped, a.Name)
				t.Skipf("not on caddy (documented caveat): %s", why)
			}
			before, err := backendCount()
			if err != nil {
				t.Fatal(err)
			}
			resp, body, err := proxytest.RawDo(addr, a.Method, a.Target, a.RequestHeaders(tokens))
			if err != nil {
				t.Fatal(err)
			}
			after, err := backendCount()
			if err != nil {
				t.Fatal(err)
			}
			var seen struct {
				Method string              `json:"method"`
				Header map[string][]string `json:"header"`
			}
			if resp.StatusCode == 200 {
				if err := json.Unmarshal(body, &seen); err != nil {
					t.Fatalf("%s %s: 200 that is not the backend's echo: %v", a.Method, a.Target, err)
				}
			}
			if !a.Allow {
				// Caddy drops a header spelt with '_' (TestCaddyForwardAuth
				// sees it reach neither the endpoint nor the upstream). Here
				// the backend's echo shows it did not reach the backend, and
				// the endpoint's 200 that it did not reach the endpoint,
				// which refuses it in every spelling.
				if a.Unseen != "" && resp.StatusCode == 200 && after == before+1 && !proxytest.HasHeader(http.Header(seen.Header), a.Unseen) {
					unseen = append(unseen, a.Name)
					t.Logf("%s %s -> 200: caddy dropped %s before the endpoint and the backend", a.Method, a.Target, a.Unseen)
					return
				}
				if after != before || resp.StatusCode < 400 || resp.StatusCode >= 500 {
					t.Fatalf("%s %s: %d, backend reached %d times: must be refused with a 4xx", a.Method, a.Target, resp.StatusCode, after-before)
				}
				refused = append(refused, fmt.Sprintf("%d", resp.StatusCode))
				t.Logf("%s %s -> %d %s", a.Method, a.Target, resp.StatusCode, resp.Header.Get("Www-Authenticate"))
				return
			}
			if resp.StatusCode != 200 || after != before+1 {
				t.Fatalf("%s %s: %d (backend reached %d times), want 200 once", a.Method, a.Target, resp.StatusCode, after-before)
			}
			want := identity(t, a.Token)
			for _, h := range authserver.IdentityHeaders {
				if got := http.Header(seen.Header).Values(h); len(got) != 1 || got[0] != want[h] {
					t.Fatalf("the backend saw %s = %q, want only %q", h, got, want[h])
				}
			}
			if seen.Method != a.Method {
				t.Fatalf("the backend saw %s, judged %s", seen.Method, a.Method)
			}
			allowed = append(allowed, a.Name)
		})
	}
	slices.Sort(refused)
	note(fmt.Sprintf("attack table through the in-cluster Caddy (from the node, ClusterIP): %d allowed, %d refused (codes %s), %d with the header dropped by Caddy, %d not on caddy",
		len(allowed), len(refused), strings.Join(slices.Compact(refused), ","), len(unseen), len(skipped)))
	caddyReader.addr, caddyReader.token = addr, tokens["reader"]
}

// tokenPattern matches what looks like a token (the prefix of
// internal/token), for logs printed on failure.
var tokenPattern = regexp.MustCompile(regexp.QuoteMeta(token.Prefix) + `[A-Za-z0-9_-]+`)

// caddyLog returns the end of the Caddy pod's log, anything that looks
// like a token replaced (Caddy redacts Authorization in its logs, not
// X-API-Key).
func caddyLog() string {
	out, err := kubectl("", "-n", shopNamespace, "logs", "caddy", "--tail", "30")
	if err != nil {
		out += err.Error()
	}
	return tokenPattern.ReplaceAllString(out, token.Prefix+"(redacted)")
}

// identity returns the identity headers the endpoint answers for a token
// of the table, from its spec, with token.Granted, which the index asks.
func identity(t *testing.T, name string) map[string]string {
	t.Helper()
	for _, pt := range proxytest.Tokens {
		if pt.Name != name {
			continue
		}
		scopes, err := token.Granted(string(pt.Spec.Type), pt.Spec.Scopes)
		if err != nil {
			t.Fatal(err)
		}
		return map[string]string{
			"X-Auth-Request-User": "apitoken:" + pt.Namespace + ":" + pt.Name, "X-ApiToken-Name": pt.Name,
			"X-ApiToken-Namespace": pt.Namespace, "X-ApiToken-Type": string(pt.Spec.Type), "X-ApiToken-Scopes": strings.Join(scopes.Strings(), ","),
		}
	}
	t.Fatalf("no token %q in proxytest.Tokens", name)
	return nil
}

// createTableTokens creates the namespaces the table's tokens live in and
// the shop namespace of the proxy (all labelled as auth clients for the
// chart's NetworkPolicy), the ApiTokens of proxytest.Tokens, and returns
// each plaintext token, read from its Secret while it was Active: the
// expired one has a duration of expiredAfter, the revoked one is revoked
// once read. waitTableTokens waits for both to be so.
func createTableTokens(t *testing.T) map[string]string {
	t.Helper()
	for _, ns := range []string{"team-a", "team-b", "team-c", shopNamespace} {
		if _, err := kubectl("", "create", "namespace", ns); err != nil && !strings.Contains(err.Error(), "AlreadyExists") {
			t.Fatal(err)
		}
		mustKubectl(t, "", "label", "--overwrite", "namespace", ns, "tokens.apitoken.dev/auth-client=true")
	}
	var manifests strings.Builder
	for _, pt := range proxytest.Tokens {
		duration := "1h"
		if pt.Expired {
			duration = expiredAfter.String()
		}
		scopes := ""
		if len(pt.Spec.Scopes) > 0 {
			b, _ := json.Marshal(pt.Spec.Scopes)
			scopes = ", scopes: " + string(b)
		}
		fmt.Fprintf(&manifests, "---\napiVersion: tokens.apitoken.dev/v1alpha1\nkind: ApiToken\nmetadata: {name: %s, namespace: %s}\nspec: {type: %s%s, duration: %s}\n",
			pt.Name, pt.Namespace, pt.Spec.Type, scopes, duration)
	}
	mustKubectl(t, manifests.String(), "apply", "-f", "-")
	tokens := map[string]string{}
	for _, pt := range proxytest.Tokens {
		if err := eventually(time.Minute, 200*time.Millisecond, func() error {
			phase, err := kubectl("", "-n", pt.Namespace, "get", "apitoken", pt.Name, "-o", "jsonpath={.status.phase}")
			// The expired one may have run out already: its Secret keeps it.
			if err == nil && phase != "Active" && (!pt.Expired || phase != "Expired") {
				err = fmt.Errorf("ApiToken %s/%s is %q, want Active", pt.Namespace, pt.Name, phase)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		tokens[pt.Name] = secretToken(t, pt.Namespace, pt.Name+"-token")
		if pt.Revoked {
			mustKubectl(t, "", "-n", pt.Namespace, "patch", "apitoken", pt.Name, "--type=merge", "-p", `{"spec":{"revoked":true}}`)
		}
	}
	return tokens
}

// waitTableTokens waits for the expired and the revoked token of the table
// to be so.
func waitTableTokens(t *testing.T) {
	t.Helper()
	for _, pt := range proxytest.Tokens {
		want := "Active"
		switch {
		case pt.Expired:
			want = "Expired"
		case pt.Revoked:
			want = "Revoked"
		}
		if err := eventually(expiredAfter+time.Minute, 200*time.Millisecond, func() error {
			phase, err := kubectl("", "-n", pt.Namespace, "get", "apitoken", pt.Name, "-o", "jsonpath={.status.phase}")
			if err == nil && phase != want {
				err = fmt.Errorf("ApiToken %s/%s is %q, want %s", pt.Namespace, pt.Name, phase, want)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// hopSamples is how many requests measureAuthHop sends to each site.
const hopSamples = 1000

// measureAuthHop sends the same valid request to Caddy's two sites in
// turn, each over its own kept-alive connection, from this machine by the
// ClusterIP: one site with the snippet's forward_auth, the same site
// without it. Both must answer 200 every time; the percentiles of each
// and their difference are figures, printed, never asserted.
func measureAuthHop(t *testing.T, caddyIP, tok string) {
	t.Helper()
	type site struct {
		name   string
		client *http.Client
		url    string
		took   []time.Duration
	}
	sites := []*site{
		{name: "with forward_auth", url: fmt.Sprintf("http://%s:%d/api/articles/1", caddyIP, caddyAuthPort)},
		{name: "without", url: fmt.Sprintf("http://%s:%d/api/articles/1", caddyIP, caddyBarePort)},
	}
	for _, s := range sites {
		tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1, DisableCompression: true}
		defer tr.CloseIdleConnections()
		s.client = &http.Client{Transport: tr, Timeout: 5 * time.Second}
	}
	get := func(s *site) (time.Duration, error) {
		req, err := http.NewRequest(http.MethodGet, s.url, nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		start := time.Now()
		resp, err := s.client.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		took := time.Since(start)
		if resp.StatusCode != 200 {
			return 0, fmt.Errorf("%s: %d", s.name, resp.StatusCode)
		}
		return took, nil
	}
	start := time.Now()
	for i := range hopSamples + 50 {
		for _, s := range sites {
			d, err := get(s)
			if err != nil {
				t.Fatalf("request %d %s: %v", i, s.name, err)
			}
			if i >= 50 { // the first 50 warm both up
				s.took = append(s.took, d)
			}
		}
	}
	pct := func(d []time.Duration, p int) time.Duration { return d[len(d)*p/100] }
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
	for _, s := range sites {
		slices.Sort(s.took)
	}
	with, without := sites[0].took, sites[1].took
	msg := fmt.Sprintf("the auth hop through the in-cluster Caddy (%d requests to each site, kept-alive, from the node by ClusterIP): p50 %s with forward_auth, %s without (+%s); p99 %s with, %s without (+%s)",
		hopSamples, ms(pct(with, 50)), ms(pct(without, 50)), ms(pct(with, 50)-pct(without, 50)),
		ms(pct(with, 99)), ms(pct(without, 99)), ms(pct(with, 99)-pct(without, 99)))
	t.Log(msg)
	note(msg)
	record(t.Name()+" (the auth hop's latency, both sites)", time.Since(start))
}
