package authserver

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// Default bounds on the streams in flight (GRPCServer's MaxInFlight,
// MaxInFlightPerAddress, MaxInFlightPerConn, MaxCheckTime). A check takes
// microseconds: a proxy under heavy load keeps a few dozen in flight;
// beyond a bound new streams are refused (RESOURCE_EXHAUSTED, which Envoy
// answers per its failure mode) instead of growing memory. One client
// address may hold a quarter of the slots, one connection half of that,
// so that a flood from one address (or a few) never refuses another's.
const (
	maxChecksInFlight = 1024
	// maxCheckTime bounds how long a stream holds its slot: one that sends
	// its HEADERS and then nothing ends (DEADLINE_EXCEEDED) then.
	maxCheckTime = 10 * time.Second
	// maxWatches and maxWatchesPerAddress bound the health Watch streams
	// (GRPCServer's MaxWatches, MaxWatchesPerAddress): a client with
	// client-side health checking holds one per channel.
	maxWatches           = 64
	maxWatchesPerAddress = 4
)

// healthWatch is the one long-lived RPC served: it is exempt from the
// bound on a check's time, so it takes a slot of its own pool, never one
// of the checks' (else Watch streams held open would refuse every Check).
const healthWatch = "/grpc.health.v1.Health/Watch"

// streamLimit admits a stream (an InTapHandle, which grpc-go calls for
// every stream, before it knows the method exists or checks the
// deadline) only while its pool is under its bounds, and releases the
// slot when the stream's context ends. grpc-go cancels that context
// however the stream ends (answered, unknown method, deadline already
// past, reset by the client, connection closed): pairing the release with
// the RPC's own end (stats.End) would leak the slots of streams that
// never reach a handler. Connections are tagged with their counter by
// TagConn (a stats.Handler). A health Watch takes a slot of watches, every
// other stream one of checks.
type streamLimit struct {
	mu      sync.Mutex
	checks  slotPool
	watches slotPool
}

// slotPool is one kind of stream's slots (under streamLimit.mu): at most
// max held in total, perAddress per client address and, when perConn is
// set, perConn per connection, each held for at most timeout (zero: no
// bound on its time).
type slotPool struct {
	max, perAddress, perConn int64
	timeout                  time.Duration
	// what and limits name a refusal: the status message, and the metric
	// label of the bound met (global, address, connection).
	what   string
	limits [3]string
	// inFlight is the gauge of the slots held.
	inFlight prometheus.Gauge

	held   int64
	byAddr map[string]int64
}

// connSlots counts the streams in flight on one connection (under
// streamLimit.mu).
type connSlots struct{ n int64 }

type connSlotsKey struct{}

func newStreamLimit(total, perAddress, perConn int64, checkTime time.Duration, watches, watchesPerAddress int64) *streamLimit {
	if total <= 0 {
		total = maxChecksInFlight
	}
	if perAddress <= 0 {
		perAddress = max(1, total/4)
	}
	if perConn <= 0 {
		perConn = max(1, perAddress/2)
	}
	if checkTime <= 0 {
		checkTime = maxCheckTime
	}
	if watches <= 0 {
		watches = maxWatches
	}
	if watchesPerAddress <= 0 {
		watchesPerAddress = min(watches, maxWatchesPerAddress)
	}
	return &streamLimit{
		checks: slotPool{
			max: total, perAddress: perAddress, perConn: perConn, timeout: checkTime,
			what: "too many checks in flight", limits: [3]string{"global", "address", "connection"},
			inFlight: grpcStreamsInFlight, byAddr: map[string]int64{},
		},
		watches: slotPool{
			max: watches, perAddress: watchesPerAddress,
			what: "too many health watches", limits: [3]string{"watch_global", "watch_address"},
			inFlight: grpcWatchesInFlight, byAddr: map[string]int64{},
		},
	}
}

// clientAddress is the IP a stream came from (the port differs per
// connection, so it is not part of a client's identity).
func clientAddress(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	if tcp, ok := p.Addr.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}

// admit takes a slot for the stream of ctx from its pool, or refuses it
// (RESOURCE_EXHAUSTED, counted by the bound met). The slot is released
// when the stream's context ends, or its time bound passes.
func (l *streamLimit) admit(ctx context.Context, info *tap.Info) (context.Context, error) {
	p := &l.checks
	if info != nil && info.FullMethodName == healthWatch {
		p = &l.watches
	}
	var conn *connSlots
	if p.perConn > 0 {
		if conn, _ = ctx.Value(connSlotsKey{}).(*connSlots); conn == nil {
			conn = &connSlots{} // not tagged: counted by address and globally only
		}
	}
	addr := clientAddress(ctx)
	l.mu.Lock()
	refused := ""
	switch {
	case p.held >= p.max:
		refused = p.limits[0]
	case p.byAddr[addr] >= p.perAddress:
		refused = p.limits[1]
	case conn != nil && conn.n >= p.perConn:
		refused = p.limits[2]
	}
	if refused != "" {
		l.mu.Unlock()
		grpcStreamsRefused.WithLabelValues(refused).Inc()
		return nil, grpcstatus.Error(codes.ResourceExhausted, p.what+" ("+refused+" limit)")
	}
	p.held++
	p.byAddr[addr]++
	if conn != nil {
		conn.n++
	}
	l.mu.Unlock()
	p.inFlight.Inc()

	cancel := context.CancelFunc(func() {})
	if p.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
	}
	context.AfterFunc(ctx, func() {
		cancel()
		l.release(p, conn, addr)
	})
	return ctx, nil
}

// release gives back a slot of p that admit took.
func (l *streamLimit) release(p *slotPool, conn *connSlots, addr string) {
	l.mu.Lock()
	p.held--
	if conn != nil {
		conn.n--
	}
	if p.byAddr[addr]--; p.byAddr[addr] <= 0 {
		delete(p.byAddr, addr)
	}
	l.mu.Unlock()
	p.inFlight.Dec()
}

// inFlight returns the check slots held.
func (l *streamLimit) inFlight() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.checks.held
}

// full says why new checks are refused by the global bound, or "" while
// they are admitted.
func (l *streamLimit) full() string {
	if n := l.inFlight(); n >= l.checks.max {
		return fmt.Sprintf("gRPC ext_authz refuses new checks: %d are in flight, the limit", n)
	}
	return ""
}

func (l *streamLimit) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (l *streamLimit) HandleRPC(context.Context, stats.RPCStats) {}

func (l *streamLimit) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return context.WithValue(ctx, connSlotsKey{}, &connSlots{})
}

func (l *streamLimit) HandleConn(context.Context, stats.ConnStats) {}
