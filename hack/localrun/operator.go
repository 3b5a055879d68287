package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

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
	args := o.args(extra)
	if err := checkPorts(args); err != nil {
		return nil, err
	}
	logPath, _ := filepath.Abs(filepath.Join(o.state, "operator.log"))
	logFile, err := os.Create(logPath) //nolint:gosec // the state folder make run owns
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(o.operator, args...) //nolint:gosec // the operator binary make run just built
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
