package authserver

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	verifications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "apitoken_verifications_total",
		Help: "Verifications at the auth endpoint by result: valid, missing, malformed, unknown, expired, revoked, inactive, ambiguous, insufficient_scope, bad_request.",
	}, []string{"result"})
	verifyDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "apitoken_verify_duration_seconds",
		Help:    "Time to answer a verification at the auth endpoint.",
		Buckets: []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2},
	})
	lastUsedWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "apitoken_last_used_writes_total",
		Help: "status.lastUsedAt writes by result (ok, error).",
	}, []string{"result"})
	sharedHashes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "apitoken_shared_token_hashes",
		Help: "Token hashes that more than one ApiToken records: each is refused (result ambiguous) for all of them until only one records it.",
	})
	results = map[string]prometheus.Counter{}
)

func init() {
	metrics.Registry.MustRegister(verifications, verifyDuration, lastUsedWrites, sharedHashes)
	for _, r := range []string{"valid", "missing", "malformed", "unknown", "expired", "revoked", "inactive", "ambiguous", "insufficient_scope", "bad_request"} {
		results[r] = verifications.WithLabelValues(r)
	}
}

// observe counts one verification; the counters are looked up once, so the
// request path does not allocate for label values.
func observe(result string, start time.Time) {
	results[result].Inc()
	verifyDuration.Observe(time.Since(start).Seconds())
}

var (
	grpcStreamsInFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "apitoken_grpc_streams_in_flight",
		Help: "Streams holding a check slot at the gRPC ext_authz endpoint (health Watch streams not included).",
	})
	grpcWatchesInFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "apitoken_grpc_health_watches_in_flight",
		Help: "Health Watch streams held at the gRPC ext_authz endpoint, a pool apart from the check slots.",
	})
	grpcStreamsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "apitoken_grpc_streams_refused_total",
		Help: "Streams refused at the gRPC ext_authz endpoint (RESOURCE_EXHAUSTED) by the bound they met: global, address, connection (checks), watch_global, watch_address (health Watch).",
	}, []string{"limit"})
)

func init() {
	metrics.Registry.MustRegister(grpcStreamsInFlight, grpcWatchesInFlight, grpcStreamsRefused)
}
