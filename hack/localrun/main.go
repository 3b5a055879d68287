// Command localrun is `make run` on a machine without a cluster: it starts
// a local control plane (etcd, kube-apiserver and kube-controller-manager,
// built from Go modules by hack/envtest-binaries.sh), installs the CRD and
// the webhook configurations (self-signed certificate), runs the operator
// binary against it with its webhooks and auth endpoint, applies the two
// default tokens and prints what to try next. Ctrl-C stops everything.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
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

func main() {
	state := flag.String("state", ".local", "Folder for the kubeconfig and the operator's log (git-ignored).")
	operator := flag.String("operator", "bin/manager", "The operator binary.")
	authAddr := flag.String("auth-bind-address", ":8082", "Address of the operator's auth endpoint.")
	flag.Parse()
	if err := run(*state, *operator, *authAddr); err != nil {
		fmt.Fprintln(os.Stderr, "make run:", err)
		os.Exit(1)
	}
}

func run(state, operator, authAddr string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := os.MkdirAll(state, 0o700); err != nil {
		return err
	}
	root := testenv.RepoRoot()
	say("starting etcd, kube-apiserver and kube-controller-manager (built once by hack/envtest-binaries.sh)...")
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

	kubeconfig, _ := filepath.Abs(filepath.Join(state, "kubeconfig"))
	if err := env.WriteKubeconfig(kubeconfig, "admin"); err != nil {
		return err
	}
	c, err := client.New(env.Config, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		return err
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apitoken-system"}}); err != nil {
		return err
	}

	logPath, _ := filepath.Abs(filepath.Join(state, "operator.log"))
	logFile, err := os.Create(logPath) //nolint:gosec // the state folder make run owns
	if err != nil {
		return err
	}
	defer logFile.Close()
	wio := env.WebhookInstallOptions
	cmd := exec.Command(operator, //nolint:gosec // the operator binary make run just built
		"--namespace=apitoken-system",
		fmt.Sprintf("--webhook-port=%d", wio.LocalServingPort),
		"--webhook-cert-dir="+wio.LocalServingCertDir,
		"--auth-bind-address="+authAddr,
		// The demo's tokens live in default; a route that names no
		// namespace accepts them (a deployment names its own).
		"--auth-default-namespaces=default",
		"--auth-path-prefix=/api",
	)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the operator: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		say("stopping the operator")
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			waitErr := <-exited
			say(fmt.Sprintf("the operator did not stop in 10s and was killed (%v)", waitErr))
		case waitErr := <-exited:
			if waitErr != nil {
				say(fmt.Sprintf("the operator stopped: %v", waitErr))
			}
		}
	}()

	if err := waitReady(ctx, "http://127.0.0.1"+portOf(authAddr)+"/readyz", exited); err != nil {
		return fmt.Errorf("%w (see %s)", err, logPath)
	}
	for _, f := range []string{"tokens_v1alpha1_apitoken_full_access.yaml", "tokens_v1alpha1_apitoken_read_only.yaml"} {
		data, err := os.ReadFile(filepath.Join(root, "config", "samples", f)) //nolint:gosec // the repository's samples
		if err != nil {
			return err
		}
		var at tokensv1alpha1.ApiToken
		if err := yaml.UnmarshalStrict(data, &at); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		at.Namespace = "default"
		if err := c.Create(ctx, &at); err != nil {
			return fmt.Errorf("applying %s: %w", f, err)
		}
	}
	var secret corev1.Secret
	for {
		err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "read-only-token"}, &secret)
		if err == nil && len(secret.Data["token"]) > 0 {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-exited:
			return fmt.Errorf("the operator exited: %w (see %s)", err, logPath)
		case <-time.After(100 * time.Millisecond):
		}
	}

	rel, _ := filepath.Rel(root, kubeconfig)
	fmt.Printf(`
apitoken-operator is running against a local control plane.

  kubeconfig     %[1]s
  operator log   %[2]s
  auth endpoint  http://localhost%[3]s (/v1/authorize, /v1/auth-request, /v1/forward-auth, /v1/ext-authz, /v1/tokenreview)

Try:

  export KUBECONFIG=$PWD/%[1]s
  kubectl get apitokens -n default
  TOKEN=$(kubectl get secret read-only-token -n default -o jsonpath='{.data.token}' | base64 -d)
  curl -i -H "Authorization: Bearer $TOKEN" "http://localhost%[3]s/v1/authorize?scope=articles:read"    # 200
  curl -i -H "Authorization: Bearer $TOKEN" "http://localhost%[3]s/v1/authorize?scope=articles:create"  # 403
  # as nginx auth_request asks, for DELETE /api/articles/1 (docs/auth-endpoint.md):
  curl -i -H "Authorization: Bearer $TOKEN" -H "X-Original-Method: DELETE" -H "X-Original-URL: /api/articles/1" \
    "http://localhost%[3]s/v1/auth-request/namespace=default"                                     # 403
  kubectl annotate apitoken read-only -n default tokens.apitoken.dev/regenerate="$(date +%%s)" --overwrite

Press Ctrl-C to stop everything.
`, rel, logPath, portOf(authAddr))

	select {
	case <-ctx.Done():
		return nil
	case err := <-exited:
		return fmt.Errorf("the operator exited: %w (see %s)", err, logPath)
	}
}

func waitReady(ctx context.Context, url string, exited <-chan error) error {
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
			return ctx.Err()
		case err := <-exited:
			return fmt.Errorf("the operator exited: %w", err)
		case <-deadline:
			return fmt.Errorf("the operator's auth endpoint %s did not become ready", url)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// portOf returns ":port" of a listen address.
func portOf(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[i:]
		}
	}
	return addr
}

func say(msg string) { fmt.Fprintln(os.Stderr, "make run:", msg) }
