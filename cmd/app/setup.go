// Package app wires apitoken-operator: Options holds its flags (AddFlags,
// Validate), Setup registers everything it runs on a manager made with
// ManagerOptions, and Run is bin/manager's whole life. The envtest suite
// of this package runs the operator Setup wires, as users run it.
package app

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"

	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/apitoken-operator/apitoken-operator/controllers"
	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	webhookv1alpha1 "github.com/apitoken-operator/apitoken-operator/webhook/v1alpha1"
)

// ErrStopped is Setup's error when ctx ended before the salt was loaded.
var ErrStopped = errors.New("stopped before the salt was loaded")

// Operator is what Setup registered that its caller may need: the salt,
// and the auth endpoint's servers (a test calls their Listen to learn
// their addresses before the manager starts).
type Operator struct {
	Salt *salt.Store
	// HTTP serves the auth endpoint (--auth-bind-address).
	HTTP *authserver.Server
	// GRPC serves Envoy's ext_authz (--grpc-auth-bind-address); nil
	// when disabled.
	GRPC *authserver.GRPCServer
	// closeAudit closes the audit log's file, if it writes to one.
	closeAudit func()
}

// Close closes what Setup opened that the manager does not: the audit
// log's file.
func (op *Operator) Close() {
	if op.closeAudit != nil {
		op.closeAudit()
	}
}

// Setup wires the operator onto mgr, made with ManagerOptions(o, salts):
// it validates o, serves the health probes (--health-probe-bind-address) at once, loads
// the salt (the controller creates its Secret if absent, an auth-only
// replica waits for it), then registers the ApiToken, salt and ApiTokenPolicy reconcilers
// (--enable-controller), the admission webhooks, the usage reporter or
// receiver, and the auth endpoint over HTTP and gRPC with the salt
// watcher, the lastUsedAt writer and the audit log. ctx ends at the first
// termination signal: from then on readiness fails and the HTTP endpoint
// says it is stopping; if the salt is not loaded yet, Setup returns
// ErrStopped.
func Setup(ctx context.Context, mgr manager.Manager, o *Options, salts *salt.Store) (*Operator, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	stopping := func() bool { return ctx.Err() != nil }
	// The probes answer from here on, before the salt is loaded: liveness
	// at once, readiness once the salt is loaded and the ApiToken cache
	// has synced, and never again after SIGTERM. Nothing that clients of
	// the auth endpoint hold open (gRPC streams at their bound) turns it
	// off: that would take the replica, and its HTTP endpoints, out of the
	// Service for whoever can reach the gRPC port. The gRPC health service
	// still answers NOT_SERVING then, for Envoy's own health checking.
	var endpoint atomic.Pointer[authserver.Server]
	if err := serveProbes(o.ProbeAddr, []probeCheck{
		{"shutdown", func() bool { return !stopping() }, "the process is shutting down"},
		{"salt", func() bool { return salts.Hasher() != nil }, salts.NotLoadedMessage()},
		{"apitokens", func() bool { s := endpoint.Load(); return s != nil && s.Ready() }, "the ApiToken cache has not synced"},
	}); err != nil {
		return nil, &setupError{msg: "Failed to serve the health probes", err: err, code: exitFailure}
	}
	if err := loadSalt(ctx, salts, mgr, o.EnvSalt, o.EnableController); err != nil {
		if stopping() {
			return nil, ErrStopped
		}
		return nil, &setupError{msg: "Failed to load the salt", err: err, code: exitFailure}
	}
	if err := setupReconcilers(mgr, o, salts); err != nil {
		return nil, err
	}
	if o.webhooks() {
		if err := webhookv1alpha1.SetupWebhookWithManager(mgr, splitList(o.KubeAPIAudiences)); err != nil {
			return nil, &setupError{msg: "Failed to set up the webhooks", kv: []any{"webhook", "ApiToken"}, err: err, code: exitFailure}
		}
	}
	op, err := setupAuthEndpoint(mgr, o, salts, stopping)
	if err != nil {
		return nil, err
	}
	endpoint.Store(op.HTTP)
	return op, nil
}

// setupReconcilers registers the ApiToken and salt reconcilers, unless
// the replica is auth-only.
func setupReconcilers(mgr manager.Manager, o *Options, salts *salt.Store) error {
	if !o.EnableController {
		return nil
	}
	perToken, err := controllers.ParseTokenMetrics(o.TokenMetrics)
	if err != nil {
		return &setupError{msg: "Invalid flag", err: err, code: exitUsage}
	}
	policies, err := controllers.PolicyServed(mgr.GetRESTMapper())
	if err != nil {
		return &setupError{msg: "Failed to look up the ApiTokenPolicy API", err: err, code: exitFailure}
	}
	if !policies {
		mgr.GetLogger().Info("The ApiTokenPolicy CRD is not installed: no platform policy applies; install it (config/crd/bases) and restart the operator to report tokens against policies")
	}
	if err := (&controllers.ApiTokenReconciler{
		Client:                  mgr.GetClient(),
		APIReader:               mgr.GetAPIReader(),
		Scheme:                  mgr.GetScheme(),
		Recorder:                mgr.GetEventRecorder("apitoken-operator"),
		Clock:                   o.Clock,
		Salt:                    salts,
		MaxConcurrentReconciles: o.Concurrency,
		MaxSaltOverlap:          o.SaltOverlap,
		TokenMetrics:            perToken,
		SkipGeneratedEvents:     !o.GeneratedEvents,
		Cuts:                    &o.Cuts,
		Policies:                policies,
	}).SetupWithManager(mgr); err != nil {
		return &setupError{msg: "Failed to set up the controller", kv: []any{"controller", "ApiToken"}, err: err, code: exitFailure}
	}
	if err := (&controllers.SaltReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("apitoken-operator"),
		Clock:     o.Clock,
		Salt:      salts,
		Overlap:   o.SaltOverlap,
	}).SetupWithManager(mgr); err != nil {
		return &setupError{msg: "Failed to set up the controller", kv: []any{"controller", "salt"}, err: err, code: exitFailure}
	}
	if !policies {
		return nil
	}
	if err := (&controllers.ApiTokenPolicyReconciler{Client: mgr.GetClient(), Clock: o.Clock}).SetupWithManager(mgr); err != nil {
		return &setupError{msg: "Failed to set up the controller", kv: []any{"controller", "ApiTokenPolicy"}, err: err, code: exitFailure}
	}
	return nil
}

// setupAuthEndpoint registers the auth endpoint: its index over the
// cache, the HTTP server (with the usage receiver of --usage-reporters
// and the leak revocations of RevokePath, forwarded with --report-usage-to),
// the gRPC server, the salt watcher, the lastUsedAt writer (or reporter,
// with --report-usage-to) and the audit log.
func setupAuthEndpoint(mgr manager.Manager, o *Options, salts *salt.Store, stopping func() bool) (*Operator, error) {
	index := authserver.NewIndex(salts.Hasher).WithPrevious(salts.PreviousHasher).WithIdentityLabels(o.AuthIdentityLabelPrefix)
	audit, auditFile, err := authserver.OpenAuditLog(o.AuditLog)
	if err != nil {
		return nil, &setupError{msg: "Failed to open the audit log", err: err, code: exitUsage}
	}
	// A replica that writes status records revocations itself; one that
	// reports its uses forwards them too, to the same operator replicas.
	revoke := &authserver.Revoker{Index: index, Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Audit: audit, Clock: o.clock()}
	var reporter *authserver.UsageReporter
	if o.ReportUsageTo != "" {
		hc, err := usageClient(o.ReportUsageCAFile)
		if err != nil {
			return nil, &setupError{msg: "--report-usage-ca-file", err: err, code: exitUsage}
		}
		reporter = &authserver.UsageReporter{URL: o.ReportUsageTo, TokenFile: o.ReportUsageTokenFile, Client: hc}
		revoke.Forward = &authserver.RevokeForwarder{URL: authserver.RevokeURL(o.ReportUsageTo), TokenFile: o.ReportUsageTokenFile, Client: hc}
	}
	var presented *authserver.PresentedRecorder // an auth-only replica writes no Event: it reports
	if o.EnableController {
		presented = &authserver.PresentedRecorder{Recorder: mgr.GetEventRecorder("apitoken-operator"), Client: mgr.GetClient(), Clock: o.clock(), Interval: o.ReplacedEventPeriod}
	}
	var usage http.Handler
	if reporters := splitList(o.UsageReporters); len(reporters) > 0 {
		receiver := &authserver.UsageReceiver{Client: mgr.GetClient(), Reporters: reporters, Clock: o.clock(), Presented: presented}
		usage, revoke.Forwarders = receiver, receiver
	}

	op := &Operator{Salt: salts}
	if auditFile != nil {
		op.closeAudit = func() { _ = auditFile.Close() }
	}
	handler := &authserver.Handler{Index: index, Clock: o.clock(), Audit: audit, Options: authserver.Options{
		PathPrefix: o.AuthPathPrefix, ResourceSegment: o.AuthResourceSegment,
		DefaultNamespaces: splitList(o.AuthDefaultNamespaces), KubeAPIAudiences: splitList(o.KubeAPIAudiences),
	}}
	op.HTTP = &authserver.Server{Addr: o.AuthAddr, CertFile: o.AuthCert, KeyFile: o.AuthKey, EnableHTTP2: o.EnableHTTP2, Handler: handler, Usage: usage, Revoke: revoke, Cache: mgr.GetCache(), Stopping: stopping, MaxConnections: o.AuthMaxConnections}
	runnables := []manager.Runnable{
		&salt.Watcher{Store: salts, Cache: mgr.GetCache()},
		op.HTTP,
		&authserver.LastUsedWriter{Index: index, Client: mgr.GetClient(), Reporter: reporter, Presented: presented, Clock: o.clock(), Interval: o.LastUsedInterval},
	}
	if o.GRPCAuthAddr != "0" {
		op.GRPC = &authserver.GRPCServer{Addr: o.GRPCAuthAddr, CertFile: o.AuthCert, KeyFile: o.AuthKey, Handler: handler, Ready: op.HTTP.Ready, MaxConnections: o.AuthMaxConnections}
		runnables = append(runnables, op.GRPC)
	}
	if audit != nil {
		runnables = append(runnables, audit)
	}
	for _, r := range runnables {
		if err := mgr.Add(r); err != nil {
			op.Close()
			return nil, &setupError{msg: "Failed to add the auth endpoint", err: err, code: exitFailure}
		}
	}
	return op, nil
}
