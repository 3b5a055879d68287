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
// created that was not there before (cluster.go; what it finds and plans
// in cluster_plan.go, its clean-up in cluster_cleanup.go).
//
// Arguments after -- go to the operator.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// What make run creates, in both modes.
const (
	operatorNamespace = "apitoken-system"
	saltSecretName    = "apitoken-operator-salt"
	samplesNamespace  = "default"
	crdName           = "apitokens.tokens.apitoken.dev"
)

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
