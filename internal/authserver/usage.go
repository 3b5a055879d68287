package authserver

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
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
	// FirstUse, when set, is the replica's first use of a current token
	// whose use ends the previous one's grace.
	FirstUse  *FirstUse  `json:"firstUse,omitempty"`
	Presented *Presented `json:"presented,omitempty"` // a token presented again, in a report of its own (presentedevent.go)
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
//
// Whoever reaches the port can send a bearer, and each unknown one would
// be a TokenReview (an API call) on the operator's identity. So a bearer
// that is not of a ServiceAccount token's form is refused at once, every
// answer is kept for a while (an authenticated one for reviewTTL, a
// refusal for refusalTTL; keyed by a keyed hash of the bearer, never the
// bearer), and the TokenReviews that remain are bounded by a token bucket
// per client address and one for the replica: past them the answer is 429
// with Retry-After, and no review is made.
type UsageReceiver struct {
	// Client creates TokenReviews and patches ApiToken status.
	Client client.Client
	// Reporters are the usernames allowed to report, e.g.
	// system:serviceaccount:apitoken-system:apitoken-auth.
	Reporters []string
	Clock     clock.PassiveClock
	Presented *PresentedRecorder // records reported tokens presented again; nil: dropped

	mu      sync.Mutex
	hashKey []byte
	authed  map[[32]byte]authedCaller  // authenticated as a reporter
	refused map[[32]byte]refusedCaller // not authenticated, or not a reporter
	limits  *clientLimits              // the TokenReviews it makes
}

type authedCaller struct {
	user  string
	until time.Time
}

type refusedCaller struct {
	user  string // "" when the API server did not authenticate the bearer
	until time.Time
}

const (
	// reviewTTL is how long a TokenReview that authenticated a reporter
	// is reused for its token.
	reviewTTL = time.Minute
	// refusalTTL is how long a refusal (not authenticated, or not a
	// reporter) is reused for a bearer.
	refusalTTL = 30 * time.Second
	// maxRemembered bounds each map of answers; when one is full its
	// expired answers are dropped, and if none were, all of it.
	maxRemembered = 4096

	// usageRate and usageBurst bound the TokenReviews a replica makes for
	// usage reports; usagePeerRate and usagePeerBurst those one client
	// address can cause. A reporter needs about one a minute per auth
	// replica (its answer is kept for reviewTTL, its report sent once per
	// --last-used-interval).
	usageRate      = rate.Limit(10)
	usageBurst     = 50
	usagePeerRate  = rate.Limit(1.0 / 6)
	usagePeerBurst = 5
	// maxClients bounds the per-address buckets held; when full, the
	// full (idle) ones are dropped, and if none were, all of them.
	maxClients = 4096

	// maxBearer bounds a ServiceAccount token (a JWT of about 1 KiB).
	maxBearer = 8 << 10
)

// plausibleServiceAccountToken reports whether tok has the form of a
// ServiceAccount token, a JWT: three non-empty base64url segments, the
// first a JSON object ("eyJ"), at most maxBearer bytes. Anything else is
// refused without asking the API server.
func plausibleServiceAccountToken(tok string) bool {
	if len(tok) > maxBearer || !strings.HasPrefix(tok, "eyJ") {
		return false
	}
	segments := 1
	last := -1
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case c == '.':
			if i == last+1 {
				return false
			}
			segments++
			last = i
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return segments == 3 && last < len(tok)-1
}

// ServeHTTP receives a usage report.
func (u *UsageReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "usage reports must be POSTed", http.StatusMethodNotAllowed)
		return
	}
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || !plausibleServiceAccountToken(tok) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="apitoken-usage"`)
		http.Error(w, "a ServiceAccount bearer token is required", http.StatusUnauthorized)
		return
	}
	user, wait, err := u.authenticate(r.Context(), peerHost(r), tok)
	switch {
	case wait > 0:
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		http.Error(w, "too many unknown bearer tokens; retry later", http.StatusTooManyRequests)
		return
	case err != nil:
		w.Header().Set("WWW-Authenticate", `Bearer realm="apitoken-usage", error="invalid_token"`)
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
		u.recordReported(r.Context(), sink, obj, &use, now)
		if !couldBeUsed(obj, at) {
			continue
		}
		if err := sink.writeTo(r.Context(), obj, at); err != nil && !apierrors.IsNotFound(err) {
			logf.FromContext(r.Context()).Error(err, "Failed to record a reported use")
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// couldBeUsed reports whether when could have been a successful use of
// at's token, as the status records it: issued (give or take
// lifecycle.MaxClockSkew) and, as lifecycle.Assess says, valid at when
// (not revoked, expired or idle, and its spec readable). A report of a use
// that no replica could have accepted (say, of an inactive token, to
// revive it) is dropped: a reporter can record uses, never extend what the
// status allows.
func couldBeUsed(at *tokensv1alpha1.ApiToken, when time.Time) bool {
	st := &at.Status
	switch {
	case st.IssuedAt == nil || st.Verification == nil || st.Verification.Hash == "":
		return false
	case when.Before(st.IssuedAt.Add(-lifecycle.MaxClockSkew)):
		return false
	}
	spec, _ := lifecycle.ParseSpec(&at.Spec)
	return lifecycle.Assess(at, spec).Current.WorthAt(when) == lifecycle.Valid
}

// errNotAuthenticated: the API server did not authenticate the bearer.
var errNotAuthenticated = errors.New("not authenticated")

// authenticate returns the username of a ServiceAccount token, through a
// TokenReview whose answer is kept (reviewTTL, refusalTTL). wait > 0: no
// answer is kept and the review buckets of the replica or of addr are
// empty; retry after wait. The API server's own failures are not kept.
func (u *UsageReceiver) authenticate(ctx context.Context, addr, tok string) (user string, wait time.Duration, err error) {
	now := u.Clock.Now()
	u.mu.Lock()
	key := u.keyOf(tok)
	if c, ok := u.authed[key]; ok && now.Before(c.until) {
		u.mu.Unlock()
		return c.user, 0, nil
	}
	if c, ok := u.refused[key]; ok && now.Before(c.until) {
		u.mu.Unlock()
		if c.user == "" {
			return "", 0, errNotAuthenticated
		}
		return c.user, 0, nil
	}
	if u.limits == nil {
		u.limits = &clientLimits{allRate: usageRate, allBurst: usageBurst, peerRate: usagePeerRate, peerBurst: usagePeerBurst}
	}
	wait = u.limits.admit(addr, now)
	u.mu.Unlock()
	if wait > 0 {
		return "", wait, nil
	}
	review := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: tok}}
	if err := u.Client.Create(ctx, review); err != nil {
		return "", 0, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	switch user = review.Status.User.Username; {
	case !review.Status.Authenticated:
		u.refused = remember(u.refused, key, refusedCaller{until: now.Add(refusalTTL)}, now, func(r refusedCaller) time.Time { return r.until })
		return "", 0, errNotAuthenticated
	case !slices.Contains(u.Reporters, user):
		u.refused = remember(u.refused, key, refusedCaller{user: user, until: now.Add(refusalTTL)}, now, func(r refusedCaller) time.Time { return r.until })
	default:
		u.authed = remember(u.authed, key, authedCaller{user: user, until: now.Add(reviewTTL)}, now, func(c authedCaller) time.Time { return c.until })
	}
	return user, 0, nil
}

// keyOf is the key of tok's answers: an HMAC-SHA256 under a key drawn
// for this process, so that what is held is no hash of the bearer anyone
// else could compute. Called with mu held.
func (u *UsageReceiver) keyOf(tok string) (k [32]byte) {
	if u.hashKey == nil {
		u.hashKey = make([]byte, 32)
		_, _ = rand.Read(u.hashKey) // crypto/rand.Read never fails
	}
	m := hmac.New(sha256.New, u.hashKey)
	m.Write([]byte(tok))
	copy(k[:], m.Sum(nil))
	return k
}

// remember stores v under k in m, which holds at most maxRemembered
// answers: when full, the expired ones are dropped, and if none were,
// all of them.
func remember[V any](m map[[32]byte]V, k [32]byte, v V, now time.Time, until func(V) time.Time) map[[32]byte]V {
	if m == nil {
		m = map[[32]byte]V{}
	}
	if len(m) >= maxRemembered {
		for key, old := range m {
			if !now.Before(until(old)) {
				delete(m, key)
			}
		}
		if len(m) >= maxRemembered {
			m = map[[32]byte]V{}
		}
	}
	m[k] = v
	return m
}

// peerHost is the IP of the peer that sent r (the reporters connect
// directly, with no proxy in between: nothing the client sends is read).
func peerHost(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}
