package authserver

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
)

// The first use of a new token, which ends the previous token's grace
// under spec.rotation.graceUntilNewTokenUsed: recorded apart by the index
// (Identity.endsGrace, markUsed), written by the lastUsedAt writer or
// reported by an auth-only replica, and written as
// status.verification.firstUsedAt when lifecycle.FirstUse says it is one.

// firstUse is a use, at (unix nanoseconds), of the hash encoded.
type firstUse struct {
	encoded string
	at      int64
}

// markFirst keeps the first use at of the hash encoded: a later use of the
// same hash changes nothing, a use of another one (a newer token) replaces it.
func (u *usage) markFirst(encoded string, at int64) {
	for {
		p := u.first.Load()
		if p != nil && p.encoded == encoded {
			return
		}
		if u.first.CompareAndSwap(p, &firstUse{encoded: encoded, at: at}) {
			return
		}
	}
}

// firstDue returns the first use not yet written or reported, or nil.
func (u *usage) firstDue() *firstUse {
	if f := u.first.Load(); f != nil && f != u.firstWritten.Load() {
		return f
	}
	return nil
}

// FirstUse is the first use a replica saw of a token whose use ends the
// previous token's grace (spec.rotation.graceUntilNewTokenUsed).
type FirstUse struct {
	// Token names the token that was used, as hashRef of its recorded
	// hash: never the token or its hash.
	Token string `json:"token"`
	// At is when it was used.
	At time.Time `json:"at"`
}

// hashRef names a recorded hash (status.verification.hash) in a usage
// report: lifecycle.HashRef, so that the report carries no token and no
// hash, and the receiver can tell which of the ApiToken's hashes was used.
func hashRef(encoded string) string { return lifecycle.HashRef(encoded) }

// recordFirstUse writes a reported first use (fu, nil: none) of obj's
// current token as status.verification.firstUsedAt, if it names the hash
// the status records as current (a report of a use of another hash, the
// previous one or one replaced since, is dropped) and lifecycle.FirstUse
// says it is one; never dated after now. A conflict (the record changed
// since the cache's copy) drops it too: the grace then runs its full
// gracePeriod, never shorter than asked.
func (u *UsageReceiver) recordFirstUse(ctx context.Context, sink statusSink, obj *tokensv1alpha1.ApiToken, fu *FirstUse, now time.Time) {
	v := obj.Status.Verification
	if fu == nil || v == nil || v.Hash == "" || fu.Token != hashRef(v.Hash) {
		return
	}
	at := fu.At
	if at.After(now) {
		at = now
	}
	if err := sink.writeFirstUse(ctx, obj, v.Hash, at); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		logf.FromContext(ctx).Error(err, "Failed to record a reported first use of a new token", "apitoken", klog.KObj(obj))
	}
}

// writeFirstUse records a use, at when, of the hash encoded as obj's
// status.verification.firstUsedAt, which ends the previous token's grace,
// if lifecycle.FirstUse says it is one (else it writes nothing). The
// patch carries the resourceVersion obj was read at: if the record changed
// meanwhile (a new token is current), the API server refuses it (a
// conflict, retried on a fresh read), so that a use of one token never
// ends the grace of another's predecessor.
func (s statusSink) writeFirstUse(ctx context.Context, obj *tokensv1alpha1.ApiToken, encoded string, when time.Time) error {
	spec, _ := lifecycle.ParseSpec(&obj.Spec)
	at, ok := lifecycle.FirstUse(obj, spec, encoded, when)
	if !ok {
		return nil
	}
	patch := fmt.Sprintf(`{"metadata":{"resourceVersion":%q},"status":{"verification":{"firstUsedAt":%q}}}`,
		obj.ResourceVersion, at.UTC().Truncate(time.Second).Format(time.RFC3339))
	return s.Client.Status().Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(patch)))
}
