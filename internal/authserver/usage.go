package authserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// UsagePath is where an operator replica receives the uses that auth-only
// replicas saw; it writes them to status.lastUsedAt. The auth-only
// replicas' identity thus needs no write on ApiTokens or their status.
const UsagePath = "/v1/usage"

// Use is one token's last successful verification seen by a replica.
type Use struct {
	Namespace  string    `json:"namespace"`
	Name       string    `json:"name"`
	LastUsedAt time.Time `json:"lastUsedAt"`
}

// usageReport is the body of a POST to UsagePath.
type usageReport struct {
	Uses []Use `json:"uses"`
}

const (
	maxUsageBody     = 1 << 20
	maxUsesPerReport = 5000
)

// UsageReporter sends the uses an auth-only replica saw to an operator
// replica's UsagePath, authenticated with the replica's ServiceAccount
// token (re-read at each report, as the kubelet rotates it).
type UsageReporter struct {
	URL       string
	TokenFile string
	Client    *http.Client
}

// Report posts uses in batches; an error leaves them to the next flush.
func (r *UsageReporter) Report(ctx context.Context, uses []Use) error {
	tok, err := os.ReadFile(r.TokenFile)
	if err != nil {
		return fmt.Errorf("reading the ServiceAccount token: %w", err)
	}
	for batch := range slices.Chunk(uses, maxUsesPerReport) {
		body, err := json.Marshal(usageReport{Uses: batch})
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		resp, err := r.Client.Do(req)
		if err != nil {
			return fmt.Errorf("reporting uses to %s: %w", r.URL, err)
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			return fmt.Errorf("reporting uses to %s: %s: %s", r.URL, resp.Status, strings.TrimSpace(string(msg)))
		}
	}
	return nil
}

// UsageReceiver answers POST UsagePath on an operator replica: the caller
// must authenticate (TokenReview) as one of Reporters, and each use is
// written to status.lastUsedAt, never back in time and never past now.
type UsageReceiver struct {
	// Client creates TokenReviews and patches ApiToken status.
	Client client.Client
	// Reporters are the usernames allowed to report, e.g.
	// system:serviceaccount:apitoken-system:apitoken-auth.
	Reporters []string
	Clock     clock.PassiveClock

	mu     sync.Mutex
	authed map[[32]byte]authedCaller
}

type authedCaller struct {
	user  string
	until time.Time
}

// reviewTTL is how long a TokenReview answer is reused for one token.
const reviewTTL = time.Minute

// ServeHTTP receives a usage report.
func (u *UsageReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "usage reports must be POSTed", http.StatusMethodNotAllowed)
		return
	}
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="apitoken-usage"`)
		http.Error(w, "a ServiceAccount bearer token is required", http.StatusUnauthorized)
		return
	}
	user, err := u.authenticate(r.Context(), tok)
	switch {
	case err != nil:
		http.Error(w, "the reporter could not be authenticated", http.StatusUnauthorized)
		return
	case !slices.Contains(u.Reporters, user):
		http.Error(w, "user "+user+" may not report token use (--usage-reporters)", http.StatusForbidden)
		return
	}
	var rep usageReport
	dec := json.NewDecoder(io.LimitReader(r.Body, maxUsageBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil || len(rep.Uses) > maxUsesPerReport {
		http.Error(w, fmt.Sprintf("the body is not a usage report of at most %d uses", maxUsesPerReport), http.StatusBadRequest)
		return
	}
	now := u.Clock.Now()
	sink := statusSink{Client: u.Client}
	for _, use := range rep.Uses {
		if len(validation.IsDNS1123Label(use.Namespace)) > 0 || len(validation.IsDNS1123Subdomain(use.Name)) > 0 {
			continue
		}
		at := use.LastUsedAt
		if at.After(now) {
			at = now // a reporter cannot date a use in the future
		}
		obj := &tokensv1alpha1.ApiToken{}
		if err := u.Client.Get(r.Context(), types.NamespacedName{Namespace: use.Namespace, Name: use.Name}, obj); err != nil {
			if !apierrors.IsNotFound(err) {
				logf.FromContext(r.Context()).Error(err, "Failed to read a reported ApiToken")
			}
			continue
		}
		if !couldBeUsed(obj, at) {
			continue
		}
		if err := sink.writeTo(r.Context(), obj, at); err != nil && !apierrors.IsNotFound(err) {
			logf.FromContext(r.Context()).Error(err, "Failed to record a reported use")
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// couldBeUsed reports whether at could have been a successful use of at's
// token, as the status records it: issued, not revoked, not expired, not
// idle. A report of a use that no replica could have accepted (say, of an
// inactive token, to revive it) is dropped: a reporter can record uses,
// never extend what the status allows.
func couldBeUsed(at *tokensv1alpha1.ApiToken, when time.Time) bool {
	st := &at.Status
	switch {
	case at.Spec.Revoked || st.IssuedAt == nil || st.Verification == nil || st.Verification.Hash == "":
		return false
	case when.Before(st.IssuedAt.Add(-time.Minute)):
		return false
	case st.ExpiresAt != nil && !when.Before(st.ExpiresAt.Time):
		return false
	}
	if until, ok := idleUntil(at); ok && when.UnixNano() >= until {
		return false
	}
	return true
}

// authenticate returns the username of a ServiceAccount token, through a
// TokenReview whose answer is kept for reviewTTL (keyed by the token's
// SHA-256, never the token).
func (u *UsageReceiver) authenticate(ctx context.Context, tok string) (string, error) {
	key := sha256.Sum256([]byte(tok))
	now := u.Clock.Now()
	u.mu.Lock()
	if c, ok := u.authed[key]; ok && now.Before(c.until) {
		u.mu.Unlock()
		return c.user, nil
	}
	u.mu.Unlock()
	review := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: tok}}
	if err := u.Client.Create(ctx, review); err != nil {
		return "", err
	}
	if !review.Status.Authenticated {
		return "", errors.New("not authenticated: " + review.Status.Error)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.authed == nil || len(u.authed) > 1024 {
		u.authed = map[[32]byte]authedCaller{}
	}
	u.authed[key] = authedCaller{user: review.Status.User.Username, until: now.Add(reviewTTL)}
	return review.Status.User.Username, nil
}
