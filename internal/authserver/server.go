package authserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// Server serves the auth endpoint on its own port, on every replica (it is
// a manager.Runnable that needs no leader election).
type Server struct {
	// Addr is the listen address, e.g. ":8082".
	Addr string
	// CertFile and KeyFile, when set, serve TLS.
	CertFile, KeyFile string
	// EnableHTTP2 offers HTTP/2 over TLS; off by default (HTTP/2 rapid
	// reset hardening, as for the metrics and webhook servers).
	EnableHTTP2 bool
	Handler     *Handler
	// Usage, when set, receives auth-only replicas' usage reports at
	// UsagePath (an operator replica, which may write status).
	Usage http.Handler
	// Revoke, when set, answers RevokePath (every replica: Revoker).
	Revoke http.Handler
	// Cache feeds the index with ApiTokens.
	Cache cache.Cache
	// Stopping, when set, reports that the process is shutting down:
	// /readyz (and the gRPC health service, through Ready) then answers
	// not ready while the endpoint still serves, until ctx ends. Nothing
	// an unauthenticated client holds open (gRPC streams, connections)
	// decides readiness: a replica out of its Service would take the
	// HTTP endpoints down with it.
	Stopping func() bool
	// MaxConnections bounds the connections served at once; past it a
	// new connection waits to be accepted. Zero: DefaultMaxConnections.
	MaxConnections int

	synced atomic.Pointer[func() bool]
	ln     net.Listener
}

// Ready reports whether the ApiToken informer and the index have synced,
// and the process is not shutting down.
func (s *Server) Ready() bool {
	if s.Stopping != nil && s.Stopping() {
		return false
	}
	f := s.synced.Load()
	return f != nil && (*f)()
}

// NeedLeaderElection is false: every replica answers.
func (s *Server) NeedLeaderElection() bool { return false }

// Listen binds the address; Start calls it if the caller has not (tests
// call it first to learn a ":0" port).
func (s *Server) Listen() (net.Addr, error) { return listenOnce(&s.ln, s.Addr, "auth endpoint") }

// listenOnce binds addr into *ln unless it is bound already; what names
// the server in errors.
func listenOnce(ln *net.Listener, addr, what string) (net.Addr, error) {
	if *ln == nil {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		*ln = l
	}
	return (*ln).Addr(), nil
}

// Mux returns the endpoint's routes: one per proxy protocol, the explicit
// one, TokenReview and the probes. The auth routes are matched on the raw
// path before http.ServeMux, which would answer a path with dot segments
// or "//" with a redirect instead of a decision.
func (s *Server) Mux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(TokenReviewPath, s.Handler.ServeTokenReview)
	if s.Usage != nil {
		mux.Handle(UsagePath, s.Usage)
	}
	if s.Revoke != nil {
		mux.Handle(RevokePath, s.Revoke)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.Stopping != nil && s.Stopping() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		if !s.Ready() {
			http.Error(w, "the ApiToken cache has not synced", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	routes := []struct {
		base  string
		serve http.HandlerFunc
	}{
		{ExtAuthzPath, s.Handler.ServeExtAuthz},
		{ForwardAuthPath, s.Handler.ServeForwardAuth},
		{AuthRequestPath, s.Handler.ServeAuthRequest},
		{AuthorizePath, s.Handler.ServeAuthorize},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, rt := range routes {
			if rest, ok := strings.CutPrefix(r.URL.Path, rt.base); ok && (rest == "" || rest[0] == '/') {
				rt.serve(w, r)
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// Start feeds the index from the ApiToken informer and serves until ctx
// ends. /readyz turns ready once the informer and the index have synced.
// When ctx ends, the listener closes and the requests in flight complete
// (up to drainTimeout); the shutdown delay before that is the caller's
// (Stopping, and a ctx that ends after it).
func (s *Server) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("auth-endpoint")
	inf, err := s.Cache.GetInformer(ctx, &tokensv1alpha1.ApiToken{})
	if err != nil {
		return fmt.Errorf("auth endpoint: ApiToken informer: %w", err)
	}
	reg, err := inf.AddEventHandler(IndexFeeder(s.Handler.Index))
	if err != nil {
		return fmt.Errorf("auth endpoint: %w", err)
	}
	hasSynced := reg.HasSynced
	s.synced.Store(&hasSynced)
	if _, err := s.Listen(); err != nil {
		return err
	}
	maxConns := s.MaxConnections
	if maxConns <= 0 {
		maxConns = DefaultMaxConnections
	}
	// Each connection holds up to MaxHeaderBytes of headers while it
	// reads them: the bound bounds that memory too.
	ln := limitConnections(s.ln, maxConns)
	srv := NewHTTPServer(s.Mux())
	srv.ConnState = ln.ConnState
	if s.CertFile != "" {
		tlsConfig, err := watchedTLS(ctx, s.CertFile, s.KeyFile, "auth endpoint")
		if err != nil {
			return err
		}
		srv.TLSConfig = tlsConfig
		if !s.EnableHTTP2 {
			srv.TLSConfig.NextProtos = []string{"http/1.1"}
			srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		}
	}
	errc := make(chan error, 1)
	go func() {
		log.Info("Serving the auth endpoint", "address", s.ln.Addr().String(), "tls", s.CertFile != "")
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		return srv.Shutdown(shutdown)
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

// DefaultMaxConnections is the default bound on the auth endpoint's
// connections (Server.MaxConnections, --auth-max-connections): well above
// what proxies keep open to it (a keep-alive pool each), and at most
// about 4096 x 75 KB (headers of up to MaxHeaderBytes, never finished)
// of memory, within the default 512Mi limit.
const DefaultMaxConnections = 4096

// drainTimeout bounds how long a stopping server waits for the requests in
// flight: a request's ReadTimeout and WriteTimeout (10 s) bound them too.
const drainTimeout = 10 * time.Second

// watchedTLS is a TLS config serving the certificate in certFile and
// keyFile, reloaded when the files change (cert-manager renews them in
// place), without a restart; what names the server in messages.
func watchedTLS(ctx context.Context, certFile, keyFile, what string) (*tls.Config, error) {
	cw, err := certwatcher.New(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	go func() {
		if err := cw.Start(ctx); err != nil {
			logf.FromContext(ctx).Error(err, "Stopped watching the certificate", "server", what)
		}
	}()
	return &tls.Config{GetCertificate: cw.GetCertificate, MinVersion: tls.VersionTLS12}, nil
}

// idleTimeout closes a kept-alive connection that carries no request
// (HTTP) or stream (gRPC) for that long.
const idleTimeout = 2 * time.Minute

// NewHTTPServer is the auth endpoint's http.Server for h: its timeouts and
// header limit (tests serve the real settings through it).
func NewHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       idleTimeout,
		// Above nginx's own limit (4 x 8 KiB by default): nginx passes the
		// client's headers into the auth request, adds X-Original-URL (up
		// to 8 KiB more) and turns a 431 into a 500. Bounded, with the
		// connections, so that headers never finished hold bounded memory.
		MaxHeaderBytes: 64 << 10,
	}
}

// IndexFeeder keeps ix in step with ApiToken events.
func IndexFeeder(ix *Index) toolscache.ResourceEventHandler {
	upsert := func(obj any) {
		if at, ok := obj.(*tokensv1alpha1.ApiToken); ok {
			ix.Upsert(at)
		}
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { upsert(obj) },
		UpdateFunc: func(_, obj any) { upsert(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if at, ok := obj.(*tokensv1alpha1.ApiToken); ok {
				ix.Delete(types.NamespacedName{Namespace: at.Namespace, Name: at.Name})
			}
		},
	}
}
