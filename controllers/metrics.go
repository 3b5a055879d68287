package controllers

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

var (
	expirationTimestamp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "apitoken_expiration_timestamp_seconds",
		Help: "When the current token of an ApiToken expires, in seconds since the epoch (absent for unlimited tokens).",
	}, []string{"namespace", "name"})
	expiringSoonTimestamp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "apitoken_expiring_soon_timestamp_seconds",
		Help: "When the current token of an ApiToken enters its ExpiringSoon window (a fifth of its lifetime, at most 7 days, before it expires), in seconds since the epoch (absent for unlimited tokens).",
	}, []string{"namespace", "name"})
	regenerations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "apitoken_regenerations_total",
		Help: "Tokens issued, by reason (Generated, Regenerated, Rotated, SaltRotated, SecretMissing, SecretTampered, SecretUntrusted, Unrevoked).",
	}, []string{"reason"})
	info = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "apitoken_info",
		Help: "One series per ApiToken with its type and phase; the value is always 1.",
	}, []string{"namespace", "name", "type", "phase"})
	saltMismatchTokens = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "apitoken_salt_mismatch_tokens",
		Help: "ApiTokens held because their hashes were made with a salt the salt Secret neither holds nor names as replaced (condition Ready=False, reason SaltMismatch); alert on > 0.",
	})
	saltSecretRecreations = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "apitoken_salt_secret_recreations_total",
		Help: "Times the salt Secret was found deleted (or emptied) and written back with the same salt.",
	})
	saltRotations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "apitoken_salt_rotations_total",
		Help: "Salt rotations carried out, by kind (planned, emergency).",
	}, []string{"kind"})
	saltPreviousValidUntil = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "apitoken_salt_previous_valid_until_seconds",
		Help: "End of the running planned salt rotation's overlap, in seconds since the epoch; 0 when none runs.",
	})
)

func init() {
	metrics.Registry.MustRegister(expirationTimestamp, expiringSoonTimestamp, regenerations, info,
		saltMismatchTokens, saltSecretRecreations, saltRotations, saltPreviousValidUntil)
}

// saltHeld are the ApiTokens counted by apitoken_salt_mismatch_tokens.
var saltHeld = struct {
	sync.Mutex
	m map[types.NamespacedName]struct{}
}{m: map[types.NamespacedName]struct{}{}}

// recordSaltHeld counts the ApiToken as held by a salt mismatch, or not.
func recordSaltHeld(namespace, name string, held bool) {
	key := types.NamespacedName{Namespace: namespace, Name: name}
	saltHeld.Lock()
	defer saltHeld.Unlock()
	if held {
		saltHeld.m[key] = struct{}{}
	} else {
		delete(saltHeld.m, key)
	}
	saltMismatchTokens.Set(float64(len(saltHeld.m)))
}

// infoLabels are every type and phase an apitoken_info series can carry.
var (
	infoTypes  = []tokensv1alpha1.TokenType{tokensv1alpha1.ReadOnly, tokensv1alpha1.FullAccess, tokensv1alpha1.Custom}
	infoPhases = []tokensv1alpha1.Phase{"", tokensv1alpha1.PhasePending, tokensv1alpha1.PhaseActive, tokensv1alpha1.PhaseExpired, tokensv1alpha1.PhaseRevoked, tokensv1alpha1.PhaseFailed}
)

// recordMetrics publishes the token's expiry, the start of its
// ExpiringSoon window, and its phase. Stale info series are dropped by
// their exact labels (a handful of map deletions), not by a partial match,
// which would scan every token's series on every pass.
func recordMetrics(namespace, name string, tokenType tokensv1alpha1.TokenType, phase tokensv1alpha1.Phase, expires, soon float64, finite bool) {
	dropInfo(namespace, name, tokenType, phase)
	info.WithLabelValues(namespace, name, string(tokenType), string(phase)).Set(1)
	if finite {
		expirationTimestamp.WithLabelValues(namespace, name).Set(expires)
		expiringSoonTimestamp.WithLabelValues(namespace, name).Set(soon)
	} else {
		expirationTimestamp.DeleteLabelValues(namespace, name)
		expiringSoonTimestamp.DeleteLabelValues(namespace, name)
	}
}

// forgetMetrics removes a deleted token's series.
func forgetMetrics(namespace, name string) {
	recordSaltHeld(namespace, name, false)
	dropInfo(namespace, name, "", "")
	expirationTimestamp.DeleteLabelValues(namespace, name)
	expiringSoonTimestamp.DeleteLabelValues(namespace, name)
}

// dropInfo deletes the token's info series other than (keepType, keepPhase).
func dropInfo(namespace, name string, keepType tokensv1alpha1.TokenType, keepPhase tokensv1alpha1.Phase) {
	for _, t := range infoTypes {
		for _, p := range infoPhases {
			if t != keepType || p != keepPhase {
				info.DeleteLabelValues(namespace, name, string(t), string(p))
			}
		}
	}
}
