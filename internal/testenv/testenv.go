// Package testenv starts a real kube-apiserver and etcd (envtest) for the
// test suites, with the project's CRDs, optionally its webhooks, and
// optionally a kube-controller-manager running only the garbage collector,
// so that owned Secrets are deleted as in a real cluster.
//
// The binaries come from KUBEBUILDER_ASSETS; when it is unset, they are
// built (once, cached per user) by hack/envtest-binaries.sh. A suite that
// cannot start the control plane fails; it is never skipped.
package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// Options selects what Start runs beside the API server.
type Options struct {
	// GarbageCollector also starts kube-controller-manager with only the
	// garbage collector.
	GarbageCollector bool
	// Namespaces also runs kube-controller-manager's namespace controller
	// (with GarbageCollector), so that a deleted namespace goes away as in
	// a real cluster instead of staying Terminating.
	Namespaces bool
	// Webhooks are the webhook install options (manifests to install and
	// serve locally); empty: none.
	Webhooks envtest.WebhookInstallOptions
	// Restartable keeps kube-apiserver's certificates in a folder of ours,
	// so that RestartAPIServer brings it back on the same address with the
	// same certificates and existing clients reconnect.
	Restartable bool
	// WithoutCRDs installs no CRD: the test installs it itself, as the
	// Helm chart does (test/helm).
	WithoutCRDs bool
}

// Env is a running control plane.
type Env struct {
	*envtest.Environment
	Config *rest.Config
	kcm    *exec.Cmd
	// kcmExited is closed when kube-controller-manager has exited.
	kcmExited chan struct{}
	dir       string
}

// RepoRoot returns the directory holding go.mod, walking up from the
// working directory.
func RepoRoot() string {
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			panic("testenv: go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Assets returns the directory of the control-plane binaries, building
// them if KUBEBUILDER_ASSETS is unset.
func Assets() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	script := filepath.Join(RepoRoot(), "hack", "envtest-binaries.sh")
	cmd := exec.Command(script, "etcd", "kube-apiserver", "kube-controller-manager") //nolint:gosec // the repository's own script
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building envtest binaries: %w", err)
	}
	dir := strings.TrimSpace(out.String())
	return dir, os.Setenv("KUBEBUILDER_ASSETS", dir)
}

// Start starts etcd and kube-apiserver with the project's CRDs installed
// (none with Options.WithoutCRDs).
func Start(opts Options) (*Env, error) { return StartWith(opts, nil) }

// StartWith is Start with extra kube-apiserver flags set by apiserverArgs
// (flag name without dashes to value).
func StartWith(opts Options, apiserverArgs func(map[string]string)) (*Env, error) {
	assets, err := Assets()
	if err != nil {
		return nil, err
	}
	e := &Env{Environment: &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
		WebhookInstallOptions: opts.Webhooks,
	}}
	if opts.WithoutCRDs {
		e.CRDDirectoryPaths, e.ErrorIfCRDPathMissing = nil, false
	}
	if opts.Restartable {
		if e.dir, err = os.MkdirTemp("", "testenv-"); err != nil {
			return nil, err
		}
		certDir := filepath.Join(e.dir, "apiserver")
		if err := os.MkdirAll(certDir, 0o700); err != nil {
			return nil, err
		}
		e.ControlPlane.APIServer = &envtest.APIServer{CertDir: certDir}
	}
	if apiserverArgs != nil {
		extra := map[string]string{}
		apiserverArgs(extra)
		args := e.ControlPlane.GetAPIServer().Configure()
		for k, v := range extra {
			args.Set(k, v)
		}
	}
	if e.Config, err = e.Start(); err != nil {
		return nil, fmt.Errorf("starting envtest (binaries in %s): %w", assets, err)
	}
	// The operator's client as it runs (cmd/app: ctrl.GetConfig sets QPS
	// -1, no client-side rate limit; the API server's priority and
	// fairness limits it). envtest's config leaves client-go's 5 requests
	// a second, so a salt change that re-issues every token of a suite
	// took as long as the suite had tokens.
	e.Config.QPS = -1
	if opts.GarbageCollector {
		controllers := "garbagecollector"
		if opts.Namespaces {
			controllers += ",namespace"
		}
		if err := e.startControllerManager(assets, controllers); err != nil {
			_ = e.Stop()
			return nil, err
		}
	}
	return e, nil
}

// Scheme returns a scheme with the built-in types and ApiToken.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(tokensv1alpha1.AddToScheme(s))
	return s
}

// WriteKubeconfig writes to path a kubeconfig for a new user of the API
// server in group system:masters.
func (e *Env) WriteKubeconfig(path, user string) error {
	u, err := e.ControlPlane.AddUser(envtest.User{Name: user, Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("adding user %s: %w", user, err)
	}
	kubeconfig, err := u.KubeConfig()
	if err != nil {
		return err
	}
	return os.WriteFile(path, kubeconfig, 0o600)
}

// startControllerManager runs kube-controller-manager with only the given
// controllers (comma-separated kube-controller-manager controller names).
func (e *Env) startControllerManager(assets, controllers string) error {
	var err error
	if e.dir == "" {
		if e.dir, err = os.MkdirTemp("", "testenv-"); err != nil {
			return err
		}
	}
	path := filepath.Join(e.dir, "kubeconfig")
	if err := e.WriteKubeconfig(path, "gc"); err != nil {
		return err
	}
	e.kcm = exec.Command(filepath.Join(assets, "kube-controller-manager"), //nolint:gosec // the binary built by hack/
		"--kubeconfig="+path, "--controllers="+controllers, "--leader-elect=false", "--secure-port=0", "-v=0")
	logFile, err := os.Create(filepath.Join(e.dir, "kcm.log"))
	if err != nil {
		return err
	}
	e.kcm.Stdout, e.kcm.Stderr = logFile, logFile
	if err := e.kcm.Start(); err != nil {
		return fmt.Errorf("starting kube-controller-manager: %w", err)
	}
	e.kcmExited = make(chan struct{})
	go func() { _ = e.kcm.Wait(); close(e.kcmExited) }()
	// Give it a moment to fail fast on bad flags.
	select {
	case <-e.kcmExited:
		return fmt.Errorf("kube-controller-manager exited early (%v); see %s", e.kcm.ProcessState, logFile.Name())
	case <-time.After(500 * time.Millisecond):
	}
	return nil
}

// StopAPIServer kills kube-apiserver as a crash would (etcd keeps
// running); StartAPIServer brings it back. Only with Options.Restartable.
// A graceful stop would wait for every open watch to drain, longer than
// envtest's stop timeout.
func (e *Env) StopAPIServer() error {
	certDir := e.ControlPlane.APIServer.CertDir
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), "kube-apiserver") || !strings.Contains(string(cmdline), certDir) {
			continue
		}
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
	return e.ControlPlane.APIServer.Stop()
}

// StartAPIServer restarts kube-apiserver on its address, with its certificates.
func (e *Env) StartAPIServer() error { return e.ControlPlane.APIServer.Start() }

// Stop stops everything Start started.
func (e *Env) Stop() error {
	if e.kcmExited != nil {
		_ = e.kcm.Process.Kill()
		<-e.kcmExited
	}
	err := e.Environment.Stop()
	if e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
	return err
}
