package authserver

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// Presented is a replaced or revoked token presented again, as an
// auth-only replica reports it (Use.Presented): never the token or its hash.
type Presented struct {
	// Token is which token: replaced or revoked.
	Token string `json:"token"`
	// Client is the client's IP address as the endpoint saw it; empty:
	// unknown.
	Client string `json:"client,omitempty"`
	// Endpoint is the door it was presented at (auth-request,
	// forward-auth, ext-authz, authorize, grpc-ext-authz, tokenreview).
	Endpoint string `json:"endpoint,omitempty"`
	// At is when it was refused.
	At time.Time `json:"at"`
}

// DefaultPresentedEventInterval is how often, at most, a replica records
// a ReplacedTokenPresented Event per ApiToken.
const DefaultPresentedEventInterval = 10 * time.Minute

// PresentedRecorder records a token presented again as a Warning Event
// ReplacedTokenPresented on its ApiToken, at most once per Interval per
// ApiToken on this replica: a client hammering with an old token costs one
// Event per Interval, however many requests it makes. It runs on operator
// replicas only (an auth-only replica's identity writes no Event); both
// the presentations this replica saw (LastUsedWriter) and those an
// auth-only replica reports (UsageReceiver) go through Record.
type PresentedRecorder struct {
	Recorder events.EventRecorder
	// Client reads the ApiTokens (the manager's cache).
	Client   client.Client
	Clock    clock.PassiveClock
	Interval time.Duration

	mu   sync.Mutex
	last map[types.NamespacedName]time.Time
}

// doors are the endpoint names a presentation may carry.
var doors = []string{"auth-request", "forward-auth", "ext-authz", "authorize", GRPCExtAuthz, "tokenreview"}

// Record records p, a presentation of a token of obj (read from the
// cache), unless this replica recorded one for obj within Interval, or
// obj's status records no such token (a report that names none is
// dropped). What a reporter sent is checked: the token's kind, an IP
// address (else unknown), a known door, never dated after now.
func (pr *PresentedRecorder) Record(obj *tokensv1alpha1.ApiToken, p *Presented) {
	if pr == nil || p == nil || !recordsPresented(obj, p.Token) {
		return
	}
	now := pr.Clock.Now()
	if !pr.admit(types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name}, now) {
		return
	}
	at := p.At
	if at.IsZero() || at.After(now) {
		at = now
	}
	from := "an unknown address"
	if a, err := netip.ParseAddr(p.Client); err == nil {
		from = a.String()
	}
	door := ""
	if slices.Contains(doors, p.Endpoint) {
		door = " at the " + p.Endpoint + " endpoint"
	}
	pr.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, tokensv1alpha1.ReasonReplacedTokenPresented, "Verify",
		"A %s token of this ApiToken was presented from %s%s at %s and refused: whoever holds it may hold it from a leak. Find that client; "+
			"if the current token may have leaked the same way, regenerate it (docs/auth-endpoint.md#a-replaced-token-presented-again)",
		p.Token, from, door, at.UTC().Truncate(time.Second).Format(time.RFC3339))
}

// recordsPresented reports whether obj's status records a token of the
// kind tok: a replaced one (previousHash, replacedHash), or a revoked one
// (revokedHash, or a revoked or deleted ApiToken).
func recordsPresented(obj *tokensv1alpha1.ApiToken, tok string) bool {
	v := obj.Status.Verification
	switch tok {
	case presentedReplaced:
		return v != nil && (v.PreviousHash != "" || v.ReplacedHash != "")
	case presentedRevoked:
		return obj.Spec.Revoked || obj.DeletionTimestamp != nil || (v != nil && v.RevokedHash != "")
	}
	return false
}

// admit reports whether an Event may be recorded for key at now, and if
// so counts it. The map holds only ApiTokens that had an Event within
// Interval, pruned as it grows.
func (pr *PresentedRecorder) admit(key types.NamespacedName, now time.Time) bool {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if last, ok := pr.last[key]; ok && now.Sub(last) < pr.Interval {
		return false
	}
	if pr.last == nil {
		pr.last = map[types.NamespacedName]time.Time{}
	}
	if len(pr.last) >= maxRemembered {
		for k, t := range pr.last {
			if now.Sub(t) >= pr.Interval {
				delete(pr.last, k)
			}
		}
	}
	pr.last[key] = now
	return true
}

// recordReported records what a usage report says of obj besides its
// last use: a token presented again (Presented), then a first use
// (recordFirstUse).
func (u *UsageReceiver) recordReported(ctx context.Context, sink statusSink, obj *tokensv1alpha1.ApiToken, use *Use, now time.Time) {
	u.Presented.Record(obj, use.Presented)
	u.recordFirstUse(ctx, sink, obj, use.FirstUse, now)
}

// recordKey is Record for the ApiToken key, read from the cache.
func (pr *PresentedRecorder) recordKey(ctx context.Context, key types.NamespacedName, p *Presented) {
	obj := &tokensv1alpha1.ApiToken{}
	if err := pr.Client.Get(ctx, key, obj); err != nil {
		if !apierrors.IsNotFound(err) {
			logf.FromContext(ctx).Error(err, "Failed to read an ApiToken whose replaced token was presented", "apitoken", klog.KRef(key.Namespace, key.Name))
		}
		return
	}
	pr.Record(obj, p)
}

// flushPresented records (Presented) or, on an auth-only replica,
// reports (Reporter) the tokens presented again since the last flush, in
// a report of their own: a receiver of an earlier release refuses a
// report with a field it does not know (presented), and still records the
// last uses of the others. An error leaves them to the next flush.
func (w *LastUsedWriter) flushPresented(ctx context.Context) {
	type pending struct {
		u *usage
		p *presentation
	}
	var dues []pending
	w.Index.forEachUsage(func(u *usage) {
		if p := u.presentedDue(); p != nil {
			dues = append(dues, pending{u, p})
		}
	})
	if len(dues) == 0 {
		return
	}
	wire := func(p *presentation) *Presented {
		return &Presented{Token: p.token, Client: p.client, Endpoint: p.endpoint, At: time.Unix(0, p.at).UTC()}
	}
	if w.Reporter != nil {
		uses := make([]Use, len(dues))
		for i, d := range dues {
			uses[i] = Use{Namespace: d.u.key.Namespace, Name: d.u.key.Name, Presented: wire(d.p)}
		}
		if err := w.Reporter.Report(ctx, uses); err != nil {
			logf.FromContext(ctx).Error(err, "Failed to report replaced tokens presented again; retrying at the next tick", "tokens", len(uses))
			return
		}
	} else if w.Presented != nil {
		for _, d := range dues {
			w.Presented.recordKey(ctx, d.u.key, wire(d.p))
		}
	}
	for _, d := range dues {
		d.u.presentedSent.Store(d.p)
	}
}
