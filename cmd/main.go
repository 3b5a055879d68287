// Command manager runs apitoken-operator: the ApiToken reconciler (leader
// only), the admission webhooks and the auth endpoint (every replica).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/controllers"
	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	webhookv1alpha1 "github.com/apitoken-operator/apitoken-operator/webhook/v1alpha1"
)

var (
	scheme   = runtime.NewScheme()
	setupLog = ctrl.Log.WithName("setup")
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(tokensv1alpha1.AddToScheme(scheme))
}

func main() {
	var (
		metricsAddr, probeAddr     string
		secureMetrics, enableHTTP2 bool
		leaderElect                bool
		leaderElectionNamespace    string
		webhookPort                int
		webhookHost                string
		webhookCertDir             string
		saltSecret                 string
		saltOverlap                time.Duration
		allowWeakSalt              bool
		saltCreate                 bool
		namespace                  string
		concurrency                int
		enableWebhooks             bool
		enableController           bool
		pprofAddr                  string
		authAddr                   string
		authCert, authKey          string
		authPathPrefix             string
		authResourceSegment        int
		authDefaultNamespaces      string
		kubeAPIAudiences           string
		reportUsageTo              string
		reportUsageTokenFile       string
		reportUsageCAFile          string
		usageReporters             string
		lastUsedInterval           time.Duration
		grpcAuthAddr               string
		authMaxConnections         int
		auditLog                   string
		tokenMetrics               string
		cuts                       controllers.CutGuard
		generatedEvents            bool
		shutdownDelay              time.Duration
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address of the metrics endpoint (use :8443 with --metrics-secure); 0 disables it.")
	flag.BoolVar(&secureMetrics, "metrics-secure", false, "Serve metrics over HTTPS with authentication and authorization (as in-cluster).")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz probes.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader, so that only one replica reconciles (the auth endpoint runs on every replica).")
	flag.StringVar(&leaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader election lease (default: the operator's namespace).")
	flag.BoolVar(&enableController, "enable-controller", true, "Run the ApiToken reconciler. false: an auth-only replica that reads ApiTokens and the salt Secret (config/auth); it implies --enable-webhooks=false and no leader election. With --report-usage-to it writes nothing.")
	flag.BoolVar(&enableWebhooks, "enable-webhooks", true, "Serve the admission webhooks (they need a certificate in --webhook-cert-dir).")
	flag.IntVar(&webhookPort, "webhook-port", 9443, "Port of the admission webhooks.")
	flag.StringVar(&webhookHost, "webhook-host", "", "Host (interface) the admission webhooks listen on; empty: every interface.")
	flag.StringVar(&webhookCertDir, "webhook-cert-dir", "", "Directory with tls.crt and tls.key for the webhooks (default: controller-runtime's).")
	flag.BoolVar(&enableHTTP2, "enable-http2", false, "Serve metrics, webhooks and the TLS auth endpoint over HTTP/2 (off: HTTP/2 rapid-reset hardening).")
	flag.StringVar(&namespace, "namespace", envOr("POD_NAMESPACE", "apitoken-system"), "The operator's own namespace, holding the salt Secret.")
	flag.StringVar(&saltSecret, "salt-secret", "apitoken-operator-salt", "Name of the Secret holding the token salt, read by every replica (created if absent, from API_TOKEN_SALT when set; a replica whose API_TOKEN_SALT differs from it refuses to start).")
	flag.BoolVar(&saltCreate, "salt-create", true, "Create the salt Secret when it is absent, and write it back when deleted or emptied. false: someone else provides it (a secret manager; the chart's salt.existingSecret): the operator never creates, labels or writes it, waits (not ready) until it exists with the label "+tokensv1alpha1.ManagedByLabel+"="+tokensv1alpha1.ManagedByValue+", and rotates only when it changes (docs/operations.md#a-salt-from-a-secret-manager).")
	flag.BoolVar(&allowWeakSalt, "allow-weak-salt", false, "Start with a salt shorter than "+strconv.Itoa(salt.MinSize)+" bytes (from "+salt.EnvVar+" or the salt Secret), reporting it, instead of refusing to: only to rotate away from one (docs/operations.md#a-weak-salt). A rotation to such a salt is refused without it.")
	flag.DurationVar(&saltOverlap, "salt-overlap", controllers.DefaultSaltOverlap, "How long a planned salt rotation (annotation "+salt.RotateAnnotation+" on the salt Secret) keeps the previous salt verifying while every token is re-issued; 0: none. An emergency rotation ("+salt.RotateEmergencyAnnotation+") never keeps it.")
	flag.IntVar(&concurrency, "max-concurrent-reconciles", 16, "ApiTokens reconciled in parallel: each pass mostly waits on API writes, so this bounds how fast a wave of new ApiTokens is issued (docs/scaling.md).")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "", "Address of Go's pprof endpoints (e.g. 127.0.0.1:6060); empty disables them.")
	flag.StringVar(&authAddr, "auth-bind-address", ":8082", "Address of the auth endpoint (/v1/auth-request, /v1/forward-auth, /v1/ext-authz, /v1/authorize, /v1/tokenreview); served by every replica.")
	flag.IntVar(&authMaxConnections, "auth-max-connections", authserver.DefaultMaxConnections, "Most connections the HTTP auth endpoint (--auth-bind-address) serves at once; past it a new connection waits to be accepted. Each may hold up to 64 KiB of headers while it sends them: lower it with a small memory limit.")
	flag.StringVar(&grpcAuthAddr, "grpc-auth-bind-address", ":9002", "Address of Envoy's gRPC ext_authz (envoy.service.auth.v3.Authorization/Check) and the gRPC health service; served by every replica, over TLS with --auth-tls-cert-file. 0 disables it.")
	flag.StringVar(&auditLog, "audit-log", "off", "Where to write one JSON line per auth decision (allowed and refused): stdout, a file path, or off. Never blocks a request: records beyond an 8192-record buffer are dropped and counted (apitoken_audit_records_dropped_total).")
	flag.StringVar(&authCert, "auth-tls-cert-file", "", "Certificate for the auth endpoint (HTTP and gRPC); with --auth-tls-key-file it serves TLS, reloading both when they change.")
	flag.StringVar(&authKey, "auth-tls-key-file", "", "Key for the auth endpoint's certificate.")
	flag.StringVar(&authPathPrefix, "auth-path-prefix", "", "Prefix stripped from the original path before the resource is read (e.g. /api).")
	flag.IntVar(&authResourceSegment, "auth-resource-segment", 0, "Index of the path segment, after --auth-path-prefix, that names the resource.")
	flag.StringVar(&authDefaultNamespaces, "auth-default-namespaces", "", "Comma-separated namespaces whose tokens a route accepts when its policy names none (* for every namespace). Empty: such a route accepts no token.")
	flag.StringVar(&kubeAPIAudiences, "kube-api-audiences", "https://kubernetes.default.svc.cluster.local", "Comma-separated audiences of the Kubernetes API server (its --api-audiences, by default its --service-account-issuer): TokenReview accepts a token of audience kubernetes only for them, and no other token for them; the webhook refuses an audience named like one (k3s and RKE2 add k3s, rke2).")
	flag.DurationVar(&lastUsedInterval, "last-used-interval", time.Minute, "How often status.lastUsedAt may be written per token.")
	flag.StringVar(&reportUsageTo, "report-usage-to", "", "An auth-only replica reports the uses it sees to this URL (an operator replica's "+authserver.UsagePath+"), which writes status.lastUsedAt, instead of writing status itself.")
	flag.StringVar(&reportUsageTokenFile, "report-usage-token-file", "/var/run/secrets/kubernetes.io/serviceaccount/token", "The ServiceAccount token sent with usage reports (re-read at each report).")
	flag.StringVar(&reportUsageCAFile, "report-usage-ca-file", "", "CA certificate that signs --report-usage-to's HTTPS certificate (default: the system's roots).")
	flag.StringVar(&usageReporters, "usage-reporters", "", "Comma-separated usernames (e.g. system:serviceaccount:apitoken-system:apitoken-auth) whose usage reports this replica accepts at "+authserver.UsagePath+" and writes to status.lastUsedAt. Empty: none.")
	flag.StringVar(&tokenMetrics, "token-metrics", string(controllers.TokenMetricsExpiring), "Which ApiTokens get Prometheus series of their own (apitoken_info, apitoken_expiration_timestamp_seconds, apitoken_expiring_soon_timestamp_seconds): expiring (those in their ExpiringSoon window, what the alerts need), all, or none. apitoken_tokens counts every token by namespace, type and phase in any case.")
	flag.BoolVar(&generatedEvents, "generated-events", true, "Record a Generated Event for each new ApiToken's first token. false: no such Event (status and apitoken_regenerations_total{reason=\"Generated\"} still record it), which saves one API write per new ApiToken when thousands are created at once; every other Event is recorded.")
	flag.DurationVar(&shutdownDelay, "shutdown-delay", 0, "How long after SIGTERM every server keeps serving, with readiness off, before it drains the requests in flight and stops: time for the endpoints, kube-proxy and the proxies in front to stop routing to a terminating pod (config/ and the chart set 5s). A second signal exits at once.")
	opts := zap.Options{Development: false}
	flag.IntVar(&cuts.Max, "max-cuts", 10, "Most ApiTokens cut without anyone asking (Secret tampered, missing or untrusted: no grace) within --cut-window; past it, further such tokens are held (Ready=False reason CutHeld, their tokens keep verifying) until a regenerate request releases each (docs/operations.md#held-cuts). 0: no bound.")
	flag.Float64Var(&cuts.Percent, "max-cuts-percent", 10, "Lowers --max-cuts to this percentage of all ApiTokens (rounded up), never below 5 (or --max-cuts if less); 0: --max-cuts alone. One namespace spends at most half the bound; a token cut again within --cut-window counts once.")
	flag.DurationVar(&cuts.Window, "cut-window", 5*time.Minute, "The sliding window over which --max-cuts counts.")
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	perToken, perTokenErr := controllers.ParseTokenMetrics(tokenMetrics)
	if perTokenErr != nil {
		setupLog.Error(perTokenErr, "Invalid flag")
		os.Exit(2)
	}
	setMemoryLimit()
	stop := onSignal(shutdownDelay)
	for _, ns := range splitList(authDefaultNamespaces) {
		if ns != "*" && len(validation.IsDNS1123Label(ns)) > 0 {
			setupLog.Error(nil, "--auth-default-namespaces: not a namespace name (or *)", "value", ns)
			os.Exit(2)
		}
	}

	var tlsOpts []func(*tls.Config)
	if !enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{BindAddress: metricsAddr, SecureServing: secureMetrics, TLSOpts: tlsOpts}
	if secureMetrics {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	// An auth-only replica needs only the salt, in the operator's namespace.
	saltStore := salt.NewStore(types.NamespacedName{Namespace: namespace, Name: saltSecret})
	saltStore.AllowWeak, saltStore.Provided = allowWeakSalt, !saltCreate
	// The probes answer from here on, before the salt is loaded: liveness
	// at once, readiness once the salt is loaded and the ApiToken cache
	// has synced, and never again after SIGTERM. Nothing that clients of
	// the auth endpoint hold open (gRPC streams at their bound) turns it
	// off: that would take the replica, and its HTTP endpoints, out of the
	// Service for whoever can reach the gRPC port. The gRPC health service
	// still answers NOT_SERVING then, for Envoy's own health checking.
	var endpoint atomic.Pointer[authserver.Server]
	if err := serveProbes(probeAddr, []probeCheck{
		{"shutdown", func() bool { return !stop.Stopping() }, "the process is shutting down"},
		{"salt", func() bool { return saltStore.Hasher() != nil }, saltStore.NotLoadedMessage()},
		{"apitokens", func() bool { s := endpoint.Load(); return s != nil && s.Ready() }, "the ApiToken cache has not synced"},
	}); err != nil {
		setupLog.Error(err, "Failed to serve the health probes")
		os.Exit(1)
	}
	cacheOpts := controllers.CacheOptions(types.NamespacedName{}, saltStore, nil)
	if !enableController {
		enableWebhooks, leaderElect = false, false
		cacheOpts = controllers.CacheOptions(types.NamespacedName{Namespace: namespace, Name: saltSecret}, nil, authserver.IndexTransform)
	}

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:        scheme,
		Metrics:       metricsOpts,
		WebhookServer: webhook.NewServer(webhook.Options{Host: webhookHost, Port: webhookPort, CertDir: webhookCertDir, TLSOpts: tlsOpts}),
		// Served by serveProbes from the start of the process instead.
		HealthProbeBindAddress:  "0",
		PprofBindAddress:        pprofAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "apitoken-operator.tokens.apitoken.dev",
		LeaderElectionNamespace: leaderElectionNamespace,
		// A new leader takes over at once after a clean shutdown.
		LeaderElectionReleaseOnCancel: true,
		Cache:                         cacheOpts,
	})
	if err != nil {
		setupLog.Error(err, "Failed to create the manager")
		os.Exit(1)
	}

	if err := loadSalt(stop.Signalled, saltStore, mgr, enableController); err != nil {
		if stop.Stopping() {
			setupLog.Info("Stopped before the salt was loaded")
			return
		}
		setupLog.Error(err, "Failed to load the salt")
		os.Exit(1)
	}

	if enableController {
		if err := (&controllers.ApiTokenReconciler{
			Client:                  mgr.GetClient(),
			APIReader:               mgr.GetAPIReader(),
			Scheme:                  mgr.GetScheme(),
			Recorder:                mgr.GetEventRecorder("apitoken-operator"),
			Salt:                    saltStore,
			MaxConcurrentReconciles: concurrency,
			MaxSaltOverlap:          saltOverlap,
			TokenMetrics:            perToken,
			SkipGeneratedEvents:     !generatedEvents,
			Cuts:                    &cuts,
		}).SetupWithManager(mgr); err != nil {
			setupLog.Error(err, "Failed to set up the controller", "controller", "ApiToken")
			os.Exit(1)
		}
		if err := (&controllers.SaltReconciler{
			Client:    mgr.GetClient(),
			APIReader: mgr.GetAPIReader(),
			Recorder:  mgr.GetEventRecorder("apitoken-operator"),
			Salt:      saltStore,
			Overlap:   saltOverlap,
		}).SetupWithManager(mgr); err != nil {
			setupLog.Error(err, "Failed to set up the controller", "controller", "salt")
			os.Exit(1)
		}
	}

	if enableWebhooks {
		if err := webhookv1alpha1.SetupWebhookWithManager(mgr, splitList(kubeAPIAudiences)); err != nil {
			setupLog.Error(err, "Failed to set up the webhooks", "webhook", "ApiToken")
			os.Exit(1)
		}
	}

	var reporter *authserver.UsageReporter
	if reportUsageTo != "" {
		hc, err := usageClient(reportUsageCAFile)
		if err != nil {
			setupLog.Error(err, "--report-usage-ca-file")
			os.Exit(2)
		}
		reporter = &authserver.UsageReporter{URL: reportUsageTo, TokenFile: reportUsageTokenFile, Client: hc}
	}
	var usage http.Handler
	if reporters := splitList(usageReporters); len(reporters) > 0 {
		if !enableController {
			setupLog.Error(nil, "--usage-reporters needs a replica that writes status (--enable-controller=true)")
			os.Exit(2)
		}
		usage = &authserver.UsageReceiver{Client: mgr.GetClient(), Reporters: reporters, Clock: clock.RealClock{}}
	}

	index := authserver.NewIndex(saltStore.Hasher).WithPrevious(saltStore.PreviousHasher)
	audit, auditFile, err := authserver.OpenAuditLog(auditLog)
	if err != nil {
		setupLog.Error(err, "Failed to open the audit log")
		os.Exit(2)
	}
	if auditFile != nil {
		defer func() { _ = auditFile.Close() }()
	}
	handler := &authserver.Handler{Index: index, Clock: clock.RealClock{}, Audit: audit, Options: authserver.Options{
		PathPrefix: authPathPrefix, ResourceSegment: authResourceSegment,
		DefaultNamespaces: splitList(authDefaultNamespaces), KubeAPIAudiences: splitList(kubeAPIAudiences),
	}}
	httpServer := &authserver.Server{Addr: authAddr, CertFile: authCert, KeyFile: authKey, EnableHTTP2: enableHTTP2, Handler: handler, Usage: usage, Cache: mgr.GetCache(), Stopping: stop.Stopping, MaxConnections: authMaxConnections}
	endpoint.Store(httpServer)
	runnables := []manager.Runnable{
		&salt.Watcher{Store: saltStore, Cache: mgr.GetCache()},
		httpServer,
		&authserver.LastUsedWriter{Index: index, Client: mgr.GetClient(), Reporter: reporter, Clock: clock.RealClock{}, Interval: lastUsedInterval},
	}
	if grpcAuthAddr != "0" {
		grpcServer := &authserver.GRPCServer{Addr: grpcAuthAddr, CertFile: authCert, KeyFile: authKey, Handler: handler, Ready: httpServer.Ready}
		runnables = append(runnables, grpcServer)
	}
	if audit != nil {
		runnables = append(runnables, audit)
	}
	for _, r := range runnables {
		if err := mgr.Add(r); err != nil {
			setupLog.Error(err, "Failed to add the auth endpoint")
			os.Exit(1)
		}
	}

	setupLog.Info("Starting the manager")
	if err := mgr.Start(stop.Done); err != nil {
		setupLog.Error(err, "The manager stopped with an error")
		os.Exit(1)
	}
}

// loadSalt loads the salt; the controller creates the Secret if absent
// (unless --salt-create=false), an auth-only replica waits for it, and so
// does every replica for a Secret someone else provides (the controller
// recording why as an Event). An API_TOKEN_SALT that differs from the
// Secret's salt is an error: the replica must not start.
func loadSalt(ctx context.Context, store *salt.Store, mgr manager.Manager, controller bool) error {
	var rec events.EventRecorder // an auth-only replica writes no Event
	if controller {
		rec = mgr.GetEventRecorder("apitoken-operator")
	}
	return store.Wait(logf.IntoContext(ctx, setupLog), mgr.GetAPIReader().(client.Client), os.Getenv(salt.EnvVar), controller, rec, 2*time.Second)
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
