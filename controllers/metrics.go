package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	expirationTimestamp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "apitoken_expiration_timestamp_seconds",
		Help: "When the current token of an ApiToken expires, in seconds since the epoch (absent for unlimited tokens).",
	}, []string{"namespace", "name"})
	regenerations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "apitoken_regenerations_total",
		Help: "Tokens issued, by reason (Generated, Regenerated, Rotated, SaltRotated, SecretMissing, SecretTampered, Unrevoked).",
	}, []string{"reason"})
	info = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "apitoken_info",
		Help: "One series per ApiToken with its type and phase; the value is always 1.",
	}, []string{"namespace", "name", "type", "phase"})
)

func init() {
	metrics.Registry.MustRegister(expirationTimestamp, regenerations, info)
}

// recordMetrics publishes the token's expiry and phase. forget removes them.
func recordMetrics(namespace, name, tokenType, phase string, expires float64, finite bool) {
	info.DeletePartialMatch(prometheus.Labels{"namespace": namespace, "name": name})
	info.WithLabelValues(namespace, name, tokenType, phase).Set(1)
	if finite {
		expirationTimestamp.WithLabelValues(namespace, name).Set(expires)
	} else {
		expirationTimestamp.DeleteLabelValues(namespace, name)
	}
}

func forgetMetrics(namespace, name string) {
	info.DeletePartialMatch(prometheus.Labels{"namespace": namespace, "name": name})
	expirationTimestamp.DeleteLabelValues(namespace, name)
}
