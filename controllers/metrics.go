package controllers

import (
	"fmt"
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
		Help: "One series per ApiToken with its type and phase, the value always 1: with --token-metrics=expiring (the default) only for tokens in their ExpiringSoon window, with all for every token.",
	}, []string{"namespace", "name", "type", "phase"})
	tokens = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "apitoken_tokens",
		Help: "ApiTokens by namespace, type and phase (whatever --token-metrics says).",
	}, []string{"namespace", "type", "phase"})
	saltMismatchTokens = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "apitoken_salt_mismatch_tokens",
		Help: "ApiTokens held because their hashes were made with a salt the salt Secret neither holds nor names as replaced (condition Ready=False, reason SaltMismatch); alert on > 0.",
	})
	cutHeldTokens = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "apitoken_cut_held_tokens",
		Help: "ApiTokens whose cut (Secret tampered, missing or untrusted) is held because more than the limit were to be cut at once (condition Ready=False, reason CutHeld); alert on > 0.",
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
	metrics.Registry.MustRegister(expirationTimestamp, expiringSoonTimestamp, regenerations, info, tokens,
		saltMismatchTokens, cutHeldTokens, saltSecretRecreations, saltRotations, saltPreviousValidUntil)
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

// cutHeld are the ApiTokens counted by apitoken_cut_held_tokens.
var cutHeld = struct {
	sync.Mutex
	m map[types.NamespacedName]struct{}
}{m: map[types.NamespacedName]struct{}{}}

// recordCutHeld counts the ApiToken as held by the cut guard, or not.
func recordCutHeld(namespace, name string, held bool) {
	key := types.NamespacedName{Namespace: namespace, Name: name}
	cutHeld.Lock()
	defer cutHeld.Unlock()
	if held {
		cutHeld.m[key] = struct{}{}
	} else {
		delete(cutHeld.m, key)
	}
	cutHeldTokens.Set(float64(len(cutHeld.m)))
}

// TokenMetrics says which ApiTokens have series of their own
// (apitoken_info, apitoken_expiration_timestamp_seconds,
// apitoken_expiring_soon_timestamp_seconds): their number is the number of
// tokens, so at scale they cost the operator and Prometheus more than the
// tokens themselves. apitoken_tokens counts every token in any case.
type TokenMetrics string

const (
	// TokenMetricsExpiring gives series only to the tokens in their
	// ExpiringSoon window: the ones an alert is about.
	TokenMetricsExpiring TokenMetrics = "expiring"
	// TokenMetricsAll gives every token its series.
	TokenMetricsAll TokenMetrics = "all"
	// TokenMetricsNone gives no token series of its own.
	TokenMetricsNone TokenMetrics = "none"
)

// ParseTokenMetrics reads --token-metrics.
func ParseTokenMetrics(s string) (TokenMetrics, error) {
	switch m := TokenMetrics(s); m {
	case TokenMetricsExpiring, TokenMetricsAll, TokenMetricsNone:
		return m, nil
	}
	return "", fmt.Errorf("--token-metrics: %q is not expiring, all or none", s)
}

// tokenClass is what apitoken_tokens counts a token under.
type tokenClass struct {
	typ   tokensv1alpha1.TokenType
	phase tokensv1alpha1.Phase
}

// counted holds each ApiToken's class, so that apitoken_tokens moves by
// one on every change instead of being recounted from the cache.
var counted = struct {
	sync.Mutex
	m map[types.NamespacedName]tokenClass
}{m: map[types.NamespacedName]tokenClass{}}

// count moves the token to class c (forget: out of every class).
func count(namespace, name string, c tokenClass, forget bool) {
	key := types.NamespacedName{Namespace: namespace, Name: name}
	counted.Lock()
	defer counted.Unlock()
	old, had := counted.m[key]
	if had && !forget && old == c {
		return
	}
	if had {
		g := tokens.WithLabelValues(namespace, string(old.typ), string(old.phase))
		g.Dec()
		delete(counted.m, key)
	}
	if !forget {
		counted.m[key] = c
		tokens.WithLabelValues(namespace, string(c.typ), string(c.phase)).Inc()
	}
}

// infoLabels are every type and phase an apitoken_info series can carry.
var (
	infoTypes  = []tokensv1alpha1.TokenType{tokensv1alpha1.ReadOnly, tokensv1alpha1.FullAccess, tokensv1alpha1.Custom}
	infoPhases = []tokensv1alpha1.Phase{"", tokensv1alpha1.PhasePending, tokensv1alpha1.PhaseActive, tokensv1alpha1.PhaseExpired, tokensv1alpha1.PhaseRevoked, tokensv1alpha1.PhaseFailed}
)

// recordMetrics counts the token in apitoken_tokens and, when perToken,
// publishes its expiry, the start of its ExpiringSoon window, and its
// phase; otherwise it drops those series. Stale info series are dropped by
// their exact labels (a handful of map deletions), not by a partial match,
// which would scan every token's series on every pass.
func recordMetrics(namespace, name string, tokenType tokensv1alpha1.TokenType, phase tokensv1alpha1.Phase, expires, soon float64, finite, perToken bool) {
	count(namespace, name, tokenClass{tokenType, phase}, false)
	if !perToken {
		dropSeries(namespace, name)
		return
	}
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

// forgetMetrics removes a deleted token's series and count.
func forgetMetrics(namespace, name string) {
	recordSaltHeld(namespace, name, false)
	recordCutHeld(namespace, name, false)
	count(namespace, name, tokenClass{}, true)
	dropSeries(namespace, name)
}

// dropSeries deletes the token's own series, if it has any.
func dropSeries(namespace, name string) {
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
