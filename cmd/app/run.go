package app

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
)

var setupLog = ctrl.Log.WithName("setup")

// Run runs the operator with o until the termination signals end it
// (shutdown), and returns the process's exit code: 0 after a clean stop,
// 2 for a flag's value refused, 1 for any other failure, each logged.
func Run(o *Options) int {
	if err := o.Validate(); err != nil {
		return logExit(err)
	}
	setMemoryLimit()
	stop := onSignal(o.ShutdownDelay)
	cfg, err := ctrl.GetConfig()
	if err != nil {
		// As ctrl.GetConfigOrDie logs it.
		ctrl.Log.WithName("controller-runtime").WithName("client").WithName("config").Error(err, "unable to get kubeconfig")
		return exitFailure
	}
	salts := NewSaltStore(o)
	mgr, err := ctrl.NewManager(cfg, ManagerOptions(o, salts))
	if err != nil {
		setupLog.Error(err, "Failed to create the manager")
		return exitFailure
	}
	op, err := Setup(stop.Signalled, mgr, o, salts)
	if errors.Is(err, ErrStopped) {
		setupLog.Info("Stopped before the salt was loaded")
		return 0
	}
	if err != nil {
		return logExit(err)
	}
	defer op.Close()
	setupLog.Info("Starting the manager")
	if err := mgr.Start(stop.Done); err != nil {
		setupLog.Error(err, "The manager stopped with an error")
		return exitFailure
	}
	return 0
}

// logExit logs a failure of Validate or Setup as cmd/main.go always has,
// and returns its exit code.
func logExit(err error) int {
	var se *setupError
	if !errors.As(err, &se) {
		setupLog.Error(err, "Failed to set up the operator")
		return exitFailure
	}
	setupLog.Error(se.err, se.msg, se.kv...)
	return se.code
}

// setMemoryLimit sets the Go memory limit to 90% of MEMORY_LIMIT (the
// container's limit, in bytes, from the Downward API) unless GOMEMLIMIT is
// set: the garbage collector then works harder near the limit instead of
// the kernel killing the process, and below it keeps GOGC's pace.
func setMemoryLimit() {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	v := os.Getenv("MEMORY_LIMIT")
	if v == "" {
		return
	}
	limit, err := strconv.ParseInt(v, 10, 64)
	if err != nil || limit <= 0 {
		setupLog.Error(err, "MEMORY_LIMIT is not a number of bytes; no Go memory limit set", "value", v)
		return
	}
	debug.SetMemoryLimit(limit / 10 * 9)
	setupLog.Info("Go memory limit set from the container's", "bytes", limit/10*9)
}

// usageClient is the HTTP client of usage reports, trusting caFile when set.
func usageClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile) //nolint:gosec // a path the operator's deployer chose
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, nil
}
