// Package e2e drives the built operator binary as a user would: kubectl
// against a real kube-apiserver (with the garbage collector), HTTP against
// the auth endpoint, two operator processes with leader election.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
	_ "github.com/apitoken-operator/apitoken-operator/internal/testredact" // no token in a failure message
)

var (
	env        *testenv.Env
	kubeconfig string
	kubectlBin string
	binary     string
	workDir    string
	// authnPort is where kube-apiserver's webhook token authentication
	// finds an operator's auth endpoint (HTTPS, authnCert and authnKey).
	authnPort           int
	authnCert, authnKey string
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	// Specs run in random order (the seed is printed as "Random Seed");
	// rerun one order with -ginkgo.seed=N.
	suiteConfig, reporterConfig := GinkgoConfiguration()
	suiteConfig.RandomizeAllSpecs = true
	RunSpecs(t, "End-to-end: the operator binary, kubectl and HTTP", suiteConfig, reporterConfig)
}

// operator is one running operator process.
type operator struct {
	name     string
	cmd      *exec.Cmd
	done     chan struct{} // closed when the process has exited
	log      string
	authURL  string
	probeURL string
	// audit is the --audit-log file; killed says it may miss the records
	// still buffered when the process was killed.
	audit  string
	killed bool
}

// decisions counts the decision requests the suite sent to each auth
// endpoint (host:port), to compare with the audit logs.
var decisions = struct {
	sync.Mutex
	sent map[string]int
}{sent: map[string]int{}}

// countDecision counts a request to a decision endpoint that was answered.
func countDecision(rawURL string, status int) {
	u, err := url.Parse(rawURL)
	if err != nil || status == 0 || !strings.HasPrefix(u.Path, "/v1/") || u.Path == "/v1/usage" || u.Path == "/v1/tokenreview" {
		return
	}
	decisions.Lock()
	decisions.sent[u.Host]++
	decisions.Unlock()
}

// alive reports whether the process still runs (a leader that loses its
// lease exits, as controller-runtime managers do).
func (o *operator) alive() bool {
	select {
	case <-o.done:
		return false
	default:
		return true
	}
}

func (o *operator) kill() {
	if o.alive() {
		o.killed = true
		_ = o.cmd.Process.Signal(syscall.SIGKILL)
		<-o.done
	}
}

func (o *operator) stop() {
	if o.alive() {
		_ = o.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-o.done:
		case <-time.After(10 * time.Second):
			o.kill()
		}
	}
}

var _ = BeforeSuite(func() {
	root := testenv.RepoRoot()
	var err error
	workDir, err = os.MkdirTemp("", "apitoken-e2e-")
	Expect(err).NotTo(HaveOccurred())

	By("building the operator binary")
	binary = filepath.Join(workDir, "manager")
	build := exec.Command("go", "build", "-o", binary, "./cmd")
	build.Dir = root
	out, err := build.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))

	By("finding kubectl (or building it from Go modules)")
	kubectlBin, err = exec.LookPath("kubectl")
	if err != nil {
		cmd := exec.Command(filepath.Join(root, "hack", "envtest-binaries.sh"), "kubectl")
		cmd.Stderr = GinkgoWriter
		out, err := cmd.Output()
		Expect(err).NotTo(HaveOccurred())
		kubectlBin = filepath.Join(strings.TrimSpace(string(out)), "kubectl")
	}

	By("writing kube-apiserver's webhook token authentication config (an HTTPS auth endpoint, a 1s cache)")
	authnPort = freePort()
	authnCert, authnKey = filepath.Join(workDir, "auth-tls.crt"), filepath.Join(workDir, "auth-tls.key")
	Expect(testenv.WriteSelfSignedCert(authnCert, authnKey, 1)).To(Succeed())
	webhookConfig := filepath.Join(workDir, "authn-webhook.yaml")
	Expect(os.WriteFile(webhookConfig, []byte(fmt.Sprintf(`# docs/auth-endpoint.md: the API server's webhook token authentication
apiVersion: v1
kind: Config
clusters:
- name: apitoken
  cluster: {server: "https://127.0.0.1:%d/v1/tokenreview", certificate-authority: %q}
users:
- name: kube-apiserver
contexts:
- context: {cluster: apitoken, user: kube-apiserver}
  name: apitoken
current-context: apitoken
`, authnPort, authnCert)), 0o600)).To(Succeed())

	By("starting kube-apiserver, etcd and the garbage collector")
	env, err = testenv.StartWith(testenv.Options{
		GarbageCollector: true,
		Restartable:      true,
		Webhooks:         envtest.WebhookInstallOptions{Paths: []string{filepath.Join(root, "config", "webhook")}},
	}, func(args map[string]string) {
		args["authentication-token-webhook-config-file"] = webhookConfig
		args["authentication-token-webhook-version"] = "v1"
		args["authentication-token-webhook-cache-ttl"] = "1s"
		// The API server's audiences as k3s sets them: the issuer's
		// default and "k3s" (RKE2 adds "rke2" the same way).
		args["api-audiences"] = strings.Join(k3sAudiences, ",")
	})
	Expect(err).NotTo(HaveOccurred())
	kubeconfig = filepath.Join(workDir, "kubeconfig")
	Expect(env.WriteKubeconfig(kubeconfig, "e2e-admin")).To(Succeed())
	kubectl("create", "namespace", "apitoken-system")
})

var _ = AfterSuite(func() {
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
	if workDir != "" {
		_ = os.RemoveAll(workDir)
	}
})

// k3sAudiences are the e2e kube-apiserver's --api-audiences, as k3s runs
// it: a token of audience "k3s" must never authenticate there.
var k3sAudiences = []string{"https://kubernetes.default.svc.cluster.local", "k3s"}

// startOperator runs the binary with leader election; webhooks only when asked.
func startOperator(name string, webhooks bool) *operator {
	return startOperatorWith(name, kubeconfig, "--leader-elect", fmt.Sprintf("--enable-webhooks=%t", webhooks),
		"--usage-reporters=system:serviceaccount:apitoken-system:apitoken-auth")
}

// startOperatorWith runs the binary with the given kubeconfig and flags,
// and waits until its auth endpoint is ready.
func startOperatorWith(name, kubeconfigPath string, extra ...string) *operator {
	o := launchOperator(name, kubeconfigPath, extra...)
	Eventually(func() int { return get(o.authURL+"/readyz", "") }, "60s", "100ms").Should(Equal(200), func() string {
		return fmt.Sprintf("operator %s not ready; the end of %s:\n%s", name, o.log, logTail(o.log, 30))
	})
	return o
}

// logTail is the last n lines of the file at path (a replica's log, which
// holds no token), for a failure message that outlives the run's files.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// launchOperator runs the binary with the given kubeconfig and flags, and
// returns at once.
func launchOperator(name, kubeconfigPath string, extra ...string) *operator {
	authPort, probePort := freePort(), freePort()
	o := &operator{
		name: name, log: filepath.Join(workDir, name+".log"), audit: filepath.Join(workDir, name+".audit.jsonl"),
		authURL:  fmt.Sprintf("http://127.0.0.1:%d", authPort),
		probeURL: fmt.Sprintf("http://127.0.0.1:%d", probePort),
	}
	wio := env.WebhookInstallOptions
	args := []string{
		"--leader-election-namespace=apitoken-system", "--namespace=apitoken-system",
		"--metrics-bind-address=0",
		fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", probePort),
		fmt.Sprintf("--auth-bind-address=127.0.0.1:%d", authPort),
		"--last-used-interval=2s",
		"--auth-default-namespaces=e2e",
		"--grpc-auth-bind-address=0",
		"--audit-log=" + o.audit,
		fmt.Sprintf("--webhook-port=%d", wio.LocalServingPort),
		"--webhook-cert-dir=" + wio.LocalServingCertDir,
	}
	args = append(args, extra...)
	logFile, err := os.Create(o.log)
	Expect(err).NotTo(HaveOccurred())
	o.cmd = exec.Command(binary, args...)
	o.cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfigPath)
	o.cmd.Stdout, o.cmd.Stderr = logFile, logFile
	Expect(o.cmd.Start()).To(Succeed())
	o.done = make(chan struct{})
	go func() { _ = o.cmd.Wait(); close(o.done) }()
	for _, a := range extra {
		// An auth endpoint moved by the caller, with TLS: probe it there.
		if addr, ok := strings.CutPrefix(a, "--auth-bind-address="); ok {
			o.authURL = "http://" + addr
		}
	}
	for _, a := range extra {
		if strings.HasPrefix(a, "--auth-tls-cert-file=") {
			o.authURL = "https://" + strings.TrimPrefix(o.authURL, "http://")
		}
	}
	return o
}

func freePort() int {
	// Below the kernel's ephemeral range: a port the kernel picked and
	// this released could be taken at once as the source port of one of
	// the thousands of connections the load loops open, and the replica
	// given it would never bind (a new replica "not ready" for good).
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	for range 200 {
		if low <= 11000 {
			break
		}
		p := 10000 + rand.IntN(low-10000)
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			_ = ln.Close()
			return p
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// kubectl runs kubectl against the test API server and returns stdout; it
// fails the test on a non-zero exit.
func kubectl(args ...string) string {
	out, err := kubectlErr(args...)
	ExpectWithOffset(1, err).NotTo(HaveOccurred(), out)
	return out
}

func kubectlErr(args ...string) (string, error) {
	return kubectlIn("", args...)
}

func kubectlIn(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kubectlBin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// get sends a GET with tok as bearer and returns the status code (0 when
// the endpoint does not answer).
func get(url, tok string) int {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	c := &http.Client{Timeout: 2 * time.Second}
	if strings.HasPrefix(url, "https://") {
		c.Transport = &http.Transport{TLSClientConfig: authnTLS()}
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	countDecision(url, resp.StatusCode)
	return resp.StatusCode
}

// send sends a request with the given headers and returns the status code
// (0 when the endpoint does not answer).
func send(method, url string, headers map[string]string) int {
	req, _ := http.NewRequest(method, url, nil)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	countDecision(url, resp.StatusCode)
	return resp.StatusCode
}

// tokenKubeconfig writes a kubeconfig for the test API server that
// authenticates with a bearer token (a ServiceAccount's).
func tokenKubeconfig(tok string) string {
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	Expect(err).NotTo(HaveOccurred())
	for _, ai := range cfg.AuthInfos {
		ai.ClientCertificateData, ai.ClientKeyData, ai.Token = nil, nil, tok
	}
	path := filepath.Join(workDir, fmt.Sprintf("kubeconfig-%d", time.Now().UnixNano()))
	Expect(clientcmd.WriteToFile(*cfg, path)).To(Succeed())
	return path
}

// authnTLS trusts the auth endpoint's self-signed certificate.
func authnTLS() *tls.Config {
	pool := x509.NewCertPool()
	if b, err := os.ReadFile(authnCert); err == nil {
		pool.AppendCertsFromPEM(b)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}
