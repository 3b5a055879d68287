// Command localrun is `make run`. By default it starts a local control
// plane (etcd, kube-apiserver and kube-controller-manager, built from Go
// modules by hack/envtest-binaries.sh), installs the CRD and the webhook
// configurations (self-signed certificate), runs the operator binary
// against it with its webhooks and auth endpoint, applies the two default
// tokens and prints what to try next; Ctrl-C stops everything. It never
// touches the cluster of the user's kubeconfig, and says so when one is
// reachable.
//
// With -cluster=current (make run CLUSTER=current) it uses the current
// context of the kubeconfig instead: it prints what it will create, creates
// it, runs the operator with its webhooks off, and on exit removes what it
// created that was not there before (see cluster.go).
//
// Arguments after -- go to the operator.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// What make run creates, in both modes.
const (
	operatorNamespace = "apitoken-system"
	saltSecretName    = "apitoken-operator-salt"
	samplesNamespace  = "default"
	crdName           = "apitokens.tokens.apitoken.dev"
)

// samples are the default tokens (config/samples), applied in samplesNamespace.
var samples = []struct{ file, name string }{
	{"tokens_v1alpha1_apitoken_full_access.yaml", "full-access"},
	{"tokens_v1alpha1_apitoken_read_only.yaml", "read-only"},
}

// Ports of the operator that make run opens on -listen-address, the
// operator's defaults (docs/development.md).
const (
	authPort    = "8082"
	grpcPort    = "9002"
	metricsPort = "8080"
	probePort   = "8081"
)

// options are localrun's flags.
type options struct {
	state, operator string
	// listen is the host every port of the operator listens on:
	// 127.0.0.1 unless widened (0.0.0.0 or :: for every interface).
	listen string
	// authAddr is the auth endpoint's address (default listen:8082).
	authAddr string
	// operatorArgs are the arguments after --, appended to the operator's.
	operatorArgs []string
}

// parseFlags parses localrun's arguments into options and the -cluster value.
func parseFlags(args []string) (options, string, error) {
	var o options
	fs := flag.NewFlagSet("localrun", flag.ContinueOnError)
	fs.StringVar(&o.state, "state", ".local", "Folder for the kubeconfig and the operator's log (git-ignored).")
	fs.StringVar(&o.operator, "operator", "bin/manager", "The operator binary.")
	fs.StringVar(&o.listen, "listen-address", "127.0.0.1", "Host every port of the operator listens on (auth "+authPort+", gRPC "+grpcPort+", metrics "+metricsPort+
		", probes "+probePort+", webhooks): loopback only by default; 0.0.0.0 or :: for every interface (anyone who reaches this machine can then call them).")
	fs.StringVar(&o.authAddr, "auth-bind-address", "", "Address of the operator's auth endpoint (default: the -listen-address host, port "+authPort+").")
	cluster := fs.String("cluster", "", `"current": use the current context of the kubeconfig (KUBECONFIG or ~/.kube/config) instead of a local control plane.`)
	if err := fs.Parse(args); err != nil {
		return options{}, "", err
	}
	o.operatorArgs = fs.Args()
	if o.authAddr == "" {
		o.authAddr = net.JoinHostPort(o.listen, authPort)
	}
	return o, *cluster, nil
}

func main() {
	o, cluster, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		os.Exit(2)
	}
	switch cluster {
	case "":
		err = runLocal(o)
	case "current":
		err = runCurrent(o)
	default:
		err = fmt.Errorf("CLUSTER=%s: the only value is current (make run CLUSTER=current uses your kubeconfig's current context)", cluster)
	}
	if err != nil && !errors.Is(err, errInterrupted) {
		fmt.Fprintln(os.Stderr, "make run:", err)
		os.Exit(1)
	}
}

// signalContext is cancelled by the first Ctrl-C or SIGTERM; after that,
// the signals' default action is restored, so that a second one stops the
// process at once.
func signalContext() context.Context {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	return ctx
}

// runLocal runs the operator against a local control plane, after saying
// why the kubeconfig's cluster, if one answers, is not used.
func runLocal(o options) error {
	ctx := signalContext()
	if name, server, ok := reachableContext(); ok {
		say(fmt.Sprintf("your kubeconfig reaches context %q (%s); not using it: make run CLUSTER=current to use it", name, server))
	}
	if err := os.MkdirAll(o.state, 0o700); err != nil {
		return err
	}
	root := testenv.RepoRoot()
	say("starting a local control plane: etcd, kube-apiserver and kube-controller-manager (built once by hack/envtest-binaries.sh)...")
	env, err := testenv.Start(testenv.Options{
		GarbageCollector: true,
		Webhooks:         envtest.WebhookInstallOptions{Paths: []string{filepath.Join(root, "config", "webhook")}},
	})
	if err != nil {
		return err
	}
	defer func() {
		say("stopping the control plane")
		_ = env.Stop()
	}()

	kubeconfig, _ := filepath.Abs(filepath.Join(o.state, "kubeconfig"))
	if err := env.WriteKubeconfig(kubeconfig, "admin"); err != nil {
		return err
	}
	c, err := client.New(env.Config, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		return err
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}}); err != nil {
		return err
	}

	wio := env.WebhookInstallOptions
	op, err := startOperator(o, kubeconfig, o.webhookArgs(wio.LocalServingPort, wio.LocalServingCertDir))
	if err != nil {
		return err
	}
	defer op.stop()
	if err := waitReady(ctx, o.authAddr, op); err != nil {
		return err
	}
	for _, s := range samples {
		if err := createSample(ctx, c, root, s.file); err != nil {
			return err
		}
	}
	if err := waitSampleToken(ctx, c, op); err != nil {
		return err
	}

	shown := kubeconfig
	if rel, err := filepath.Rel(root, kubeconfig); err == nil && !strings.HasPrefix(rel, "..") {
		shown = "$PWD/" + rel
	}
	fmt.Printf(`
apitoken-operator is running against a local control plane.

  kubeconfig     %[1]s
  operator log   %[2]s
  auth endpoint  http://%[3]s (/v1/authorize, /v1/auth-request, /v1/forward-auth, /v1/ext-authz, /v1/tokenreview)
  listening on   %[5]s

Try:

  export KUBECONFIG=%[1]s
%[4]s
Press Ctrl-C to stop everything.
`, shown, op.logPath, shownAddr(o.authAddr), tryLines(o.authAddr), listening(o.listen))

	return op.wait(ctx)
}

// tryLines are the commands printed for the user to try.
func tryLines(authAddr string) string {
	return fmt.Sprintf(`  kubectl get apitokens -n default
  TOKEN=$(kubectl get secret read-only-token -n default -o jsonpath='{.data.token}' | base64 -d)
  curl -i -H "Authorization: Bearer $TOKEN" "http://%[1]s/v1/authorize?scope=articles:read"    # 200
  curl -i -H "Authorization: Bearer $TOKEN" "http://%[1]s/v1/authorize?scope=articles:create"  # 403
  # as nginx auth_request asks, for DELETE /api/articles/1 (docs/auth-endpoint.md):
  curl -i -H "Authorization: Bearer $TOKEN" -H "X-Original-Method: DELETE" -H "X-Original-URL: /api/articles/1" \
    "http://%[1]s/v1/auth-request/namespace=default"                                     # 403
  kubectl annotate apitoken read-only -n default tokens.apitoken.dev/regenerate="$(date +%%s)" --overwrite
`, shownAddr(authAddr))
}

// listening says where the operator's ports are open, and how to widen.
func listening(host string) string {
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
		return host + " only (make run LISTEN=0.0.0.0, or -listen-address, for every interface)"
	}
	return host + " (-listen-address; the default is 127.0.0.1)"
}

// args are the operator's flags: those both modes share, extra, then the
// user's arguments after --. Every port the operator opens is on the
// -listen-address host (the operator's own defaults listen on every
// interface, as a pod must).
func (o options) args(extra []string) []string {
	args := append([]string{
		"--namespace=" + operatorNamespace,
		"--auth-bind-address=" + o.authAddr,
		"--grpc-auth-bind-address=" + net.JoinHostPort(o.listen, grpcPort),
		"--metrics-bind-address=" + net.JoinHostPort(o.listen, metricsPort),
		"--health-probe-bind-address=" + net.JoinHostPort(o.listen, probePort),
		// The demo's tokens live in default; a route that names no
		// namespace accepts them (a deployment names its own).
		"--auth-default-namespaces=" + samplesNamespace,
		"--auth-path-prefix=/api",
	}, extra...)
	return append(args, o.operatorArgs...)
}

// webhookArgs are the operator's webhook flags of the local control
// plane's mode: it serves them on port with the certificate in certDir.
func (o options) webhookArgs(port int, certDir string) []string {
	return []string{fmt.Sprintf("--webhook-port=%d", port), "--webhook-cert-dir=" + certDir, "--webhook-host=" + o.listen}
}

// operator is the running operator process.
type operator struct {
	cmd     *exec.Cmd
	exited  chan error
	logPath string
	log     *os.File
}

// startOperator runs the operator binary against kubeconfig with the flags
// both modes share, extra, and the user's arguments after --.
func startOperator(o options, kubeconfig string, extra []string) (*operator, error) {
	if err := os.MkdirAll(o.state, 0o700); err != nil {
		return nil, err
	}
	logPath, _ := filepath.Abs(filepath.Join(o.state, "operator.log"))
	logFile, err := os.Create(logPath) //nolint:gosec // the state folder make run owns
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(o.operator, o.args(extra)...) //nolint:gosec // the operator binary make run just built
	cmd.Env = os.Environ()
	if kubeconfig != "" {
		cmd.Env = append(cmd.Env, "KUBECONFIG="+kubeconfig)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group: a terminal's Ctrl-C reaches localrun only,
	// which stops the operator with one SIGTERM before it cleans up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("starting the operator: %w", err)
	}
	op := &operator{cmd: cmd, exited: make(chan error, 1), logPath: logPath, log: logFile}
	go func() { op.exited <- cmd.Wait() }()
	return op, nil
}

// wait returns when ctx is done (nil) or the operator exits (an error).
func (op *operator) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-op.exited:
		op.exited <- err
		return op.exitError(err)
	}
}

// exitError reports the operator's exit (err from its Wait), naming its log.
func (op *operator) exitError(err error) error {
	if err == nil {
		return fmt.Errorf("the operator exited (see %s)", op.logPath)
	}
	return fmt.Errorf("the operator exited: %w (see %s)", err, op.logPath)
}

// stop stops the operator (SIGTERM, then SIGKILL after 10 s) and waits for it.
func (op *operator) stop() {
	defer op.log.Close()
	select {
	case err := <-op.exited:
		op.exited <- err
		return
	default:
	}
	say("stopping the operator")
	_ = op.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-time.After(10 * time.Second):
		_ = op.cmd.Process.Kill()
		waitErr := <-op.exited
		say(fmt.Sprintf("the operator did not stop in 10s and was killed (%v)", waitErr))
	case waitErr := <-op.exited:
		if waitErr != nil {
			say(fmt.Sprintf("the operator stopped: %v", waitErr))
		}
	}
}

// errInterrupted is returned by a wait cut short by Ctrl-C or SIGTERM: the
// run then ends normally.
var errInterrupted = errors.New("interrupted")

// waitReady waits until the operator's auth endpoint answers /readyz.
func waitReady(ctx context.Context, authAddr string, op *operator) error {
	url := "http://" + dialAddr(authAddr) + "/readyz"
	deadline := time.After(2 * time.Minute)
	for {
		if resp, err := http.Get(url); err == nil { //nolint:gosec,noctx // local readiness probe
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errInterrupted
		case err := <-op.exited:
			op.exited <- err
			return op.exitError(err)
		case <-deadline:
			return fmt.Errorf("the operator's auth endpoint %s did not become ready (see %s)", url, op.logPath)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// createSample creates the ApiToken of a config/samples file in samplesNamespace.
func createSample(ctx context.Context, c client.Client, root, file string) error {
	data, err := os.ReadFile(filepath.Join(root, "config", "samples", file)) //nolint:gosec // the repository's samples
	if err != nil {
		return err
	}
	var at tokensv1alpha1.ApiToken
	if err := yaml.UnmarshalStrict(data, &at); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	at.Namespace = samplesNamespace
	if err := c.Create(ctx, &at, client.FieldOwner("make-run")); err != nil {
		return fmt.Errorf("applying %s: %w", file, err)
	}
	return nil
}

// waitSampleToken waits until the read-only sample's Secret holds a token.
func waitSampleToken(ctx context.Context, c client.Client, op *operator) error {
	var secret corev1.Secret
	for {
		err := c.Get(ctx, types.NamespacedName{Namespace: samplesNamespace, Name: "read-only-token"}, &secret)
		if err == nil && len(secret.Data[tokensv1alpha1.SecretTokenKey]) > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return errInterrupted
		case err := <-op.exited:
			op.exited <- err
			return op.exitError(err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// dialAddr is where this machine reaches a listen address: its host, or
// loopback for every interface.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// shownAddr is a listen address as a user types it: localhost for
// loopback and every interface, else its host.
func shownAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && (ip.IsUnspecified() || ip.IsLoopback()) {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

func say(msg string) { fmt.Fprintln(os.Stderr, "make run:", msg) }
