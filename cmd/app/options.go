package app

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/clock"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/controllers"
	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
)

// Options are the operator's settings: one field per flag of bin/manager
// (AddFlags), plus what a test sets and no flag can (Clock, EnvSalt).
type Options struct {
	MetricsAddr             string
	SecureMetrics           bool
	ProbeAddr               string
	LeaderElect             bool
	LeaderElectionNamespace string
	EnableController        bool
	EnableWebhooks          bool
	WebhookPort             int
	WebhookHost             string
	WebhookCertDir          string
	EnableHTTP2             bool
	Namespace               string
	SaltSecret              string
	AllowWeakSalt           bool
	SaltCreate              bool
	SaltOverlap             time.Duration
	Concurrency             int
	PprofAddr               string
	AuthAddr                string
	AuthMaxConnections      int
	GRPCAuthAddr            string
	AuditLog                string
	AuthCert, AuthKey       string
	AuthPathPrefix          string
	AuthResourceSegment     int
	AuthDefaultNamespaces   string
	AuthIdentityLabelPrefix string
	KubeAPIAudiences        string
	LastUsedInterval        time.Duration
	ReportUsageTo           string
	ReportUsageTokenFile    string
	ReportUsageCAFile       string
	UsageReporters          string
	ReplacedEventPeriod     time.Duration
	TokenMetrics            string
	GeneratedEvents         bool
	ShutdownDelay           time.Duration
	// Cuts holds --max-cuts, --max-cuts-percent and --cut-window, and
	// counts the cuts of the running reconciler.
	Cuts controllers.CutGuard

	// EnvSalt is API_TOKEN_SALT, which seeds an absent salt Secret and
	// must agree with a present one (NewOptions reads it).
	EnvSalt string
	// Clock drives the reconcilers and the auth endpoint; nil: the real
	// clock. Tests set a fake one.
	Clock clock.Clock
}

// NewOptions returns the defaults of every flag, with the environment's
// fallbacks: POD_NAMESPACE for --namespace, API_TOKEN_SALT.
func NewOptions() *Options {
	return &Options{ //nolint:gosec // G101: the name of the salt Secret and the path of the ServiceAccount token file, no credential
		MetricsAddr:          ":8080",
		ProbeAddr:            ":8081",
		EnableController:     true,
		SaltCreate:           true,
		EnableWebhooks:       true,
		WebhookPort:          9443,
		Namespace:            envOr("POD_NAMESPACE", "apitoken-system"),
		SaltSecret:           "apitoken-operator-salt",
		SaltOverlap:          controllers.DefaultSaltOverlap,
		Concurrency:          16,
		AuthAddr:             ":8082",
		AuthMaxConnections:   authserver.DefaultMaxConnections,
		GRPCAuthAddr:         ":9002",
		AuditLog:             "off",
		KubeAPIAudiences:     "https://kubernetes.default.svc.cluster.local",
		LastUsedInterval:     time.Minute,
		ReplacedEventPeriod:  authserver.DefaultPresentedEventInterval,
		ReportUsageTokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token",
		TokenMetrics:         string(controllers.TokenMetricsExpiring),
		GeneratedEvents:      true,
		Cuts:                 controllers.CutGuard{Max: 10, Percent: 10, Window: 5 * time.Minute},
		EnvSalt:              os.Getenv(salt.EnvVar),
	}
}

// AddFlags binds every flag of the operator to o, with o's values as the
// defaults.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	o.addServingFlags(fs)
	o.addSaltFlags(fs)
	o.addAuthFlags(fs)
	o.addReconcilerFlags(fs)
}

// addServingFlags: the manager, its metrics, probes, leader election and webhooks.
func (o *Options) addServingFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "Address of the metrics endpoint (use :8443 with --metrics-secure); 0 disables it.")
	fs.BoolVar(&o.SecureMetrics, "metrics-secure", o.SecureMetrics, "Serve metrics over HTTPS with authentication and authorization (as in-cluster).")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", o.ProbeAddr, "Address of the /healthz and /readyz probes.")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "Elect a leader, so that only one replica reconciles (the auth endpoint runs on every replica).")
	fs.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", o.LeaderElectionNamespace, "Namespace of the leader election lease (default: the operator's namespace).")
	fs.BoolVar(&o.EnableController, "enable-controller", o.EnableController, "Run the ApiToken reconciler. false: an auth-only replica that reads ApiTokens and the salt Secret (config/auth); it implies --enable-webhooks=false and no leader election. With --report-usage-to it writes nothing.")
	fs.BoolVar(&o.EnableWebhooks, "enable-webhooks", o.EnableWebhooks, "Serve the admission webhooks (they need a certificate in --webhook-cert-dir).")
	fs.IntVar(&o.WebhookPort, "webhook-port", o.WebhookPort, "Port of the admission webhooks.")
	fs.StringVar(&o.WebhookHost, "webhook-host", o.WebhookHost, "Host (interface) the admission webhooks listen on; empty: every interface.")
	fs.StringVar(&o.WebhookCertDir, "webhook-cert-dir", o.WebhookCertDir, "Directory with tls.crt and tls.key for the webhooks (default: controller-runtime's).")
	fs.BoolVar(&o.EnableHTTP2, "enable-http2", o.EnableHTTP2, "Serve metrics, webhooks and the TLS auth endpoint over HTTP/2 (off: HTTP/2 rapid-reset hardening).")
	fs.StringVar(&o.PprofAddr, "pprof-bind-address", o.PprofAddr, "Address of Go's pprof endpoints (e.g. 127.0.0.1:6060); empty disables them.")
	fs.DurationVar(&o.ShutdownDelay, "shutdown-delay", o.ShutdownDelay, "How long after SIGTERM every server keeps serving, with readiness off, before it drains the requests in flight and stops: time for the endpoints, kube-proxy and the proxies in front to stop routing to a terminating pod (config/ and the chart set 5s). A second signal exits at once.")
}

// addSaltFlags: the operator's namespace and its salt Secret.
func (o *Options) addSaltFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "The operator's own namespace, holding the salt Secret.")
	fs.StringVar(&o.SaltSecret, "salt-secret", o.SaltSecret, "Name of the Secret holding the token salt, read by every replica (created if absent, from API_TOKEN_SALT when set; a replica whose API_TOKEN_SALT differs from it refuses to start).")
	fs.BoolVar(&o.SaltCreate, "salt-create", o.SaltCreate, "Create the salt Secret when it is absent, and write it back when deleted or emptied. false: someone else provides it (a secret manager; the chart's salt.existingSecret): the operator never creates, labels or writes it, waits (not ready) until it exists with the label "+tokensv1alpha1.ManagedByLabel+"="+tokensv1alpha1.ManagedByValue+", and rotates only when it changes (docs/operations.md#a-salt-from-a-secret-manager).")
	fs.BoolVar(&o.AllowWeakSalt, "allow-weak-salt", o.AllowWeakSalt, "Start with a salt shorter than "+strconv.Itoa(salt.MinSize)+" bytes (from "+salt.EnvVar+" or the salt Secret), reporting it, instead of refusing to: only to rotate away from one (docs/operations.md#a-weak-salt). A rotation to such a salt is refused without it.")
	fs.DurationVar(&o.SaltOverlap, "salt-overlap", o.SaltOverlap, "How long a planned salt rotation (annotation "+salt.RotateAnnotation+" on the salt Secret) keeps the previous salt verifying while every token is re-issued; 0: none. An emergency rotation ("+salt.RotateEmergencyAnnotation+") never keeps it.")
}

// addAuthFlags: the auth endpoint (HTTP and gRPC), its audit log and the
// usage reports between replicas.
func (o *Options) addAuthFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.AuthAddr, "auth-bind-address", o.AuthAddr, "Address of the auth endpoint (/v1/auth-request, /v1/forward-auth, /v1/ext-authz, /v1/authorize, /v1/tokenreview); served by every replica.")
	fs.IntVar(&o.AuthMaxConnections, "auth-max-connections", o.AuthMaxConnections, "Most connections the auth endpoint serves at once, on each of --auth-bind-address and --grpc-auth-bind-address, and an eighth of it per client address (a connection past that is closed at once); past the total a new connection waits to be accepted. Each may hold up to 64 KiB of headers while it sends them: lower it with a small memory limit.")
	fs.StringVar(&o.GRPCAuthAddr, "grpc-auth-bind-address", o.GRPCAuthAddr, "Address of Envoy's gRPC ext_authz (envoy.service.auth.v3.Authorization/Check) and the gRPC health service; served by every replica, over TLS with --auth-tls-cert-file. 0 disables it.")
	fs.StringVar(&o.AuditLog, "audit-log", o.AuditLog, "Where to write one JSON line per auth decision (allowed and refused): stdout, a file path, or off. Never blocks a request: records beyond an 8192-record buffer are dropped and counted (apitoken_audit_records_dropped_total).")
	fs.StringVar(&o.AuthCert, "auth-tls-cert-file", o.AuthCert, "Certificate for the auth endpoint (HTTP and gRPC); with --auth-tls-key-file it serves TLS, reloading both when they change.")
	fs.StringVar(&o.AuthKey, "auth-tls-key-file", o.AuthKey, "Key for the auth endpoint's certificate.")
	fs.StringVar(&o.AuthPathPrefix, "auth-path-prefix", o.AuthPathPrefix, "Prefix stripped from the original path before the resource is read (e.g. /api).")
	fs.IntVar(&o.AuthResourceSegment, "auth-resource-segment", o.AuthResourceSegment, "Index of the path segment, after --auth-path-prefix, that names the resource.")
	fs.StringVar(&o.AuthDefaultNamespaces, "auth-default-namespaces", o.AuthDefaultNamespaces, "Comma-separated namespaces whose tokens a route accepts when its policy names none (* for every namespace). Empty: such a route accepts no token.")
	fs.StringVar(&o.AuthIdentityLabelPrefix, "auth-identity-label-prefix", o.AuthIdentityLabelPrefix, "A label key prefix (e.g. tokens.apitoken.dev/): an ApiToken's labels under it travel with its identity, for rate limits and routing. Label tokens.apitoken.dev/tier: gold is the header X-ApiToken-Tier: gold on every 200, the same header and dynamic metadata key tier on a gRPC OK, and the TokenReview extra tokens.apitoken.dev/tier. Names are lower-case words joined by -; reserved names (name, namespace, type, scopes, user, uid, audience) and more than 8 labels are left out. Whoever may edit an ApiToken sets them: see docs/auth-endpoint.md#identity-labels. Empty (default): none. Set it on every replica.")
	fs.StringVar(&o.KubeAPIAudiences, "kube-api-audiences", o.KubeAPIAudiences, "Comma-separated audiences of the Kubernetes API server (its --api-audiences, by default its --service-account-issuer): TokenReview accepts a token of audience kubernetes only for them, and no other token for them; the webhook refuses an audience named like one (k3s and RKE2 add k3s, rke2).")
	fs.DurationVar(&o.LastUsedInterval, "last-used-interval", o.LastUsedInterval, "How often status.lastUsedAt may be written per token.")
	fs.StringVar(&o.ReportUsageTo, "report-usage-to", o.ReportUsageTo, "An auth-only replica reports the uses it sees to this URL (an operator replica's "+authserver.UsagePath+"), which writes status.lastUsedAt, instead of writing status itself.")
	fs.StringVar(&o.ReportUsageTokenFile, "report-usage-token-file", o.ReportUsageTokenFile, "The ServiceAccount token sent with usage reports (re-read at each report).")
	fs.StringVar(&o.ReportUsageCAFile, "report-usage-ca-file", o.ReportUsageCAFile, "CA certificate that signs --report-usage-to's HTTPS certificate (default: the system's roots).")
	fs.StringVar(&o.UsageReporters, "usage-reporters", o.UsageReporters, "Comma-separated usernames (e.g. system:serviceaccount:apitoken-system:apitoken-auth) whose usage reports this replica accepts at "+authserver.UsagePath+" and writes to status.lastUsedAt. Empty: none.")
	fs.DurationVar(&o.ReplacedEventPeriod, "replaced-token-event-interval", o.ReplacedEventPeriod, "At most one ReplacedTokenPresented Warning Event per ApiToken and operator replica within this interval, when a replaced (past its grace) or revoked token is presented again and refused: a sign it leaked (docs/auth-endpoint.md#a-replaced-token-presented-again). apitoken_replaced_token_presented_total counts every such refusal.")
}

// addReconcilerFlags: the ApiToken reconciler's pace, metrics, Events and
// the bound on cuts.
func (o *Options) addReconcilerFlags(fs *flag.FlagSet) {
	fs.IntVar(&o.Concurrency, "max-concurrent-reconciles", o.Concurrency, "ApiTokens reconciled in parallel: each pass mostly waits on API writes, so this bounds how fast a wave of new ApiTokens is issued (docs/scaling.md).")
	fs.StringVar(&o.TokenMetrics, "token-metrics", o.TokenMetrics, "Which ApiTokens get Prometheus series of their own (apitoken_info, apitoken_expiration_timestamp_seconds, apitoken_expiring_soon_timestamp_seconds): expiring (those in their ExpiringSoon window, what the alerts need), all, or none. apitoken_tokens counts every token by namespace, type and phase in any case.")
	fs.BoolVar(&o.GeneratedEvents, "generated-events", o.GeneratedEvents, "Record a Generated Event for each new ApiToken's first token. false: no such Event (status and apitoken_regenerations_total{reason=\"Generated\"} still record it), which saves one API write per new ApiToken when thousands are created at once; every other Event is recorded.")
	fs.IntVar(&o.Cuts.Max, "max-cuts", o.Cuts.Max, "Most ApiTokens cut without anyone asking (Secret tampered, missing or untrusted: no grace) within --cut-window; past it, further such tokens are held (Ready=False reason CutHeld, their tokens keep verifying) until a regenerate request releases each (docs/operations.md#held-cuts). 0: no bound.")
	fs.Float64Var(&o.Cuts.Percent, "max-cuts-percent", o.Cuts.Percent, "Lowers --max-cuts to this percentage of all ApiTokens (rounded up), never below 5 (or --max-cuts if less); 0: --max-cuts alone. One namespace spends at most half the bound; a token cut again within --cut-window counts once.")
	fs.DurationVar(&o.Cuts.Window, "cut-window", o.Cuts.Window, "The sliding window over which --max-cuts counts.")
}

// Validate checks what the flags' types do not; each error names its flag.
func (o *Options) Validate() error {
	if _, err := controllers.ParseTokenMetrics(o.TokenMetrics); err != nil {
		return &setupError{msg: "Invalid flag", err: err, code: exitUsage}
	}
	for _, ns := range splitList(o.AuthDefaultNamespaces) {
		if ns != "*" && len(validation.IsDNS1123Label(ns)) > 0 {
			return &setupError{msg: "--auth-default-namespaces: not a namespace name (or *)", kv: []any{"value", ns}, code: exitUsage}
		}
	}
	if problem := authserver.ValidIdentityLabelPrefix(o.AuthIdentityLabelPrefix); problem != "" {
		return &setupError{msg: "--auth-identity-label-prefix: " + problem, kv: []any{"value", o.AuthIdentityLabelPrefix}, code: exitUsage}
	}
	if o.ReplacedEventPeriod <= 0 {
		return &setupError{msg: "--replaced-token-event-interval must be positive", kv: []any{"value", o.ReplacedEventPeriod.String()}, code: exitUsage}
	}
	if len(splitList(o.UsageReporters)) > 0 && !o.EnableController {
		return &setupError{msg: "--usage-reporters needs a replica that writes status (--enable-controller=true)", code: exitUsage}
	}
	return nil
}

// webhooks reports whether the admission webhooks are served: an
// auth-only replica serves none.
func (o *Options) webhooks() bool { return o.EnableWebhooks && o.EnableController }

// leaderElection reports whether the replica takes part in leader
// election: an auth-only replica does not.
func (o *Options) leaderElection() bool { return o.LeaderElect && o.EnableController }

func (o *Options) clock() clock.Clock {
	if o.Clock == nil {
		return clock.RealClock{}
	}
	return o.Clock
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// Exit codes of Run.
const (
	exitFailure = 1
	// exitUsage: a flag's value is refused.
	exitUsage = 2
)

// setupError is a failure of Validate or Setup: the log line Run writes
// for it (message and key/value pairs, as cmd/main.go wrote them) and the
// process's exit code.
type setupError struct {
	msg  string
	kv   []any
	err  error
	code int
}

func (e *setupError) Error() string {
	s := e.msg
	for i := 0; i+1 < len(e.kv); i += 2 {
		s += fmt.Sprintf(" %v=%q", e.kv[i], fmt.Sprint(e.kv[i+1]))
	}
	if e.err != nil {
		s += ": " + e.err.Error()
	}
	return s
}

func (e *setupError) Unwrap() error { return e.err }
