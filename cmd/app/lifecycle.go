package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// shutdown follows the process's termination signals. The first SIGTERM
// (or SIGINT) makes Stopping true and ends Signalled at once, and ends
// Done the shutdown delay later: readiness is off from the signal on,
// while every server keeps serving until Done, so that the endpoints,
// kube-proxy and the proxies in front have stopped routing to this pod
// before its listeners close. A second signal exits at once.
type shutdown struct {
	stopping atomic.Bool
	// Signalled ends at the first signal: what has not started yet (the
	// wait for the salt) stops at once.
	Signalled context.Context
	// Done ends the delay after the first signal: the manager stops, and
	// the servers drain the requests in flight.
	Done context.Context
}

// Stopping reports whether a termination signal has been received.
func (s *shutdown) Stopping() bool { return s.stopping.Load() }

// onSignal starts following SIGTERM and SIGINT with the given delay.
func onSignal(delay time.Duration) *shutdown {
	signalled, endSignalled := context.WithCancel(context.Background())
	done, endDone := context.WithCancel(context.Background())
	s := &shutdown{Signalled: signalled, Done: done}
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-ch
		s.stopping.Store(true)
		endSignalled()
		setupLog.Info("Received a termination signal; not ready, serving until the shutdown delay has passed", "signal", sig.String(), "delay", delay.String())
		select {
		case <-time.After(delay):
			setupLog.Info("The shutdown delay has passed; draining the requests in flight")
			endDone()
		case <-ch:
			os.Exit(1)
		}
		<-ch
		os.Exit(1)
	}()
	return s
}

// serveProbes serves /healthz and /readyz from the start of the process,
// before the salt is loaded and before the manager runs. Liveness says
// only that the process runs, so that a replica waiting for its salt (a
// fresh install, an existingSecret not yet synced) is not restarted;
// readiness says it may be sent traffic: every check in ready passes,
// else 503 with the reasons (all checks listed with ?verbose).
func serveProbes(addr string, ready []probeCheck) error {
	if addr == "" || addr == "0" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("health probes: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/healthz", probeHandler(nil))
	mux.Handle("/readyz", probeHandler(ready))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		// It serves until the process exits: liveness answers through the
		// whole shutdown.
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			setupLog.Error(err, "The health probe server stopped")
		}
	}()
	setupLog.Info("Serving the health probes", "address", ln.Addr().String())
	return nil
}

// probeCheck is one readiness check: it fails with msg while ok is false.
type probeCheck struct {
	name string
	ok   func() bool
	msg  string
}

// probeHandler answers 200 "ok" when every check passes, else 503 naming
// the failed ones.
func probeHandler(checks []probeCheck) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		failed := false
		for _, c := range checks {
			if c.ok() {
				fmt.Fprintf(&b, "[+]%s ok\n", c.name)
				continue
			}
			failed = true
			fmt.Fprintf(&b, "[-]%s failed: %s\n", c.name, c.msg)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if failed {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(b.String()))
			return
		}
		if _, verbose := r.URL.Query()["verbose"]; verbose {
			_, _ = w.Write([]byte(b.String()))
		}
		_, _ = w.Write([]byte("ok"))
	})
}
