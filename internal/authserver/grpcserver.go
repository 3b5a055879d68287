package authserver

import (
	"context"
	"net"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// GRPCServer serves ExtAuthz and the standard gRPC health service on its
// own port, on every replica, from the same index as the HTTP endpoint.
type GRPCServer struct {
	// Addr is the listen address, e.g. ":9002".
	Addr string
	// CertFile and KeyFile, when set, serve TLS (reloaded on change).
	CertFile, KeyFile string
	Handler           *Handler
	// Ready reports whether the index has synced; health answers SERVING
	// from then on.
	Ready func() bool
	// MaxConnections bounds the connections served at once, in all and
	// an eighth of it per client address (limitConnections); zero:
	// DefaultMaxConnections.
	MaxConnections int
	// MaxInFlight bounds the streams served at once over every
	// connection; zero: maxChecksInFlight.
	MaxInFlight int64
	// MaxInFlightPerAddress bounds them per client IP address; zero: a
	// quarter of MaxInFlight.
	MaxInFlightPerAddress int64
	// MaxInFlightPerConn bounds them per connection; zero: half of
	// MaxInFlightPerAddress.
	MaxInFlightPerConn int64
	// MaxCheckTime bounds how long a stream (other than a health Watch)
	// holds its slot; zero: maxCheckTime.
	MaxCheckTime time.Duration
	// MaxWatches bounds the health Watch streams, which take no slot of
	// MaxInFlight and have no bound on their time; zero: maxWatches.
	MaxWatches int64
	// MaxWatchesPerAddress bounds them per client IP address; zero:
	// maxWatchesPerAddress.
	MaxWatchesPerAddress int64

	ln        net.Listener
	limitOnce sync.Once
	limit     *streamLimit
}

func (s *GRPCServer) limits() *streamLimit {
	s.limitOnce.Do(func() {
		s.limit = newStreamLimit(s.MaxInFlight, s.MaxInFlightPerAddress, s.MaxInFlightPerConn, s.MaxCheckTime, s.MaxWatches, s.MaxWatchesPerAddress)
	})
	return s.limit
}

// InFlight returns the streams holding a check slot (health Watch
// streams not included).
func (s *GRPCServer) InFlight() int64 { return s.limits().inFlight() }

// NeedLeaderElection is false: every replica answers.
func (s *GRPCServer) NeedLeaderElection() bool { return false }

// Listen binds the address; Start calls it if the caller has not.
func (s *GRPCServer) Listen() (net.Addr, error) { return listenOnce(&s.ln, s.Addr, "gRPC ext_authz") }

// Start serves until ctx ends.
func (s *GRPCServer) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("grpc-ext-authz")
	if _, err := s.Listen(); err != nil {
		return err
	}
	limit := s.limits()
	opts := []grpc.ServerOption{
		// A CheckRequest holds the original request's headers (Envoy
		// sends at most 60 KiB by default), never its body here.
		grpc.MaxRecvMsgSize(128 << 10),
		grpc.MaxConcurrentStreams(256),
		// Streams in flight globally, per client address and per
		// connection, each released when its stream ends however it ends.
		grpc.InTapHandle(limit.admit),
		grpc.StatsHandler(limit),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// A connection with no stream is closed after the HTTP endpoint's
		// idle timeout, and one that has not finished its handshake (TLS,
		// the HTTP/2 preface) after 10 s, not grpc-go's 120.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: idleTimeout}),
		grpc.ConnectionTimeout(10 * time.Second),
	}
	maxConns := s.MaxConnections
	if maxConns <= 0 {
		maxConns = DefaultMaxConnections
	}
	if s.CertFile != "" {
		tlsConfig, err := watchedTLS(ctx, s.CertFile, s.KeyFile, "gRPC ext_authz")
		if err != nil {
			return err
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConfig)))
	}
	srv := grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(srv, &ExtAuthz{Handler: s.Handler})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	go followReady(ctx, hs, func() bool { return (s.Ready == nil || s.Ready()) && limit.full() == "" })
	errc := make(chan error, 1)
	go func() {
		log.Info("Serving gRPC ext_authz", "address", s.ln.Addr().String(), "tls", s.CertFile != "")
		errc <- srv.Serve(limitConnections(s.ln, maxConns))
	}()
	select {
	case <-ctx.Done():
		hs.Shutdown()
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(drainTimeout):
			srv.Stop()
		}
		return nil
	case err := <-errc:
		return err
	}
}

// followReady keeps the health service hs at serving() until ctx ends:
// SERVING once the index has synced, NOT_SERVING again while the process
// shuts down or while the global bound refuses new checks. Only Envoy's
// own health checking reads it: the pod's readiness does not follow the
// bound, which any client reaching the port can fill.
func followReady(ctx context.Context, hs *health.Server, serving func() bool) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	was := false
	for {
		if now := serving(); now != was {
			st := healthpb.HealthCheckResponse_NOT_SERVING
			if now {
				st = healthpb.HealthCheckResponse_SERVING
			}
			hs.SetServingStatus("", st)
			hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, st)
			was = now
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
