package app

import (
	"crypto/tls"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/controllers"
	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
)

// Scheme returns the operator's scheme: the built-in types and ApiToken.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(tokensv1alpha1.AddToScheme(s))
	return s
}

// ManagerOptions returns the manager's options: scheme, metrics, webhook
// server, leader election and the cache (an auth-only replica caches the
// salt Secret by name and ApiTokens as its index sees them). The health
// probes are not the manager's: Setup serves them before the salt is
// loaded.
func ManagerOptions(o *Options, salts *salt.Store) ctrl.Options {
	var tlsOpts []func(*tls.Config)
	if !o.EnableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{BindAddress: o.MetricsAddr, SecureServing: o.SecureMetrics, TLSOpts: tlsOpts}
	if o.SecureMetrics {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	cacheOpts := controllers.CacheOptions(types.NamespacedName{}, salts, nil)
	if !o.EnableController {
		cacheOpts = controllers.CacheOptions(o.saltRef(), nil, authserver.IndexTransform(o.AuthIdentityLabelPrefix))
	}
	return ctrl.Options{
		Scheme:        Scheme(),
		Metrics:       metricsOpts,
		WebhookServer: webhook.NewServer(webhook.Options{Host: o.WebhookHost, Port: o.WebhookPort, CertDir: o.WebhookCertDir, TLSOpts: tlsOpts}),
		// Served by serveProbes from before the salt is loaded instead.
		HealthProbeBindAddress:  "0",
		PprofBindAddress:        o.PprofAddr,
		LeaderElection:          o.leaderElection(),
		LeaderElectionID:        "apitoken-operator.tokens.apitoken.dev",
		LeaderElectionNamespace: o.LeaderElectionNamespace,
		// A new leader takes over at once after a clean shutdown.
		LeaderElectionReleaseOnCancel: true,
		Cache:                         cacheOpts,
	}
}
