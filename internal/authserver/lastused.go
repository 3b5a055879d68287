package authserver

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// LastUsedWriter records status.lastUsedAt off the request path: every
// Interval it takes each ApiToken used since its last record, so a token
// costs at most one write per Interval however many requests it serves.
// With Reporter set (an auth-only replica, whose identity may not write
// status) the uses go to an operator replica, which writes them; else they
// are patched into status here. Replaced or revoked tokens presented again
// are flushed the same way (flushPresented): reported, or recorded as
// Events by Presented.
type LastUsedWriter struct {
	Index     *Index
	Client    client.Client
	Reporter  *UsageReporter
	Presented *PresentedRecorder
	Clock     clock.PassiveClock
	Interval  time.Duration
}

// Start runs until ctx ends. It is a manager.Runnable on every replica.
func (w *LastUsedWriter) Start(ctx context.Context) error {
	t := time.NewTicker(w.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// A replica that stops (a rollout, a drain) writes what it saw
			// since its last write, interval or not: a rollout sooner than
			// the interval would lose every use otherwise.
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalFlushTimeout)
			defer cancel()
			w.flush(final, true)
			return nil
		case <-t.C:
			w.Flush(ctx)
		}
	}
}

// finalFlushTimeout bounds the last write at shutdown, well inside the
// pods' terminationGracePeriodSeconds.
const finalFlushTimeout = 5 * time.Second

// NeedLeaderElection is false: each replica writes the uses it saw.
func (w *LastUsedWriter) NeedLeaderElection() bool { return false }

// Flush records lastUsedAt for every token used since its last record and
// whose last record is at least Interval old.
func (w *LastUsedWriter) Flush(ctx context.Context) { w.flush(ctx, false) }

// flush is Flush; final also writes the uses of tokens recorded within
// the interval. A first use that ends a previous token's grace
// (usage.first) is written at the next flush, whatever the interval.
func (w *LastUsedWriter) flush(ctx context.Context, final bool) {
	w.flushPresented(ctx)
	now := w.Clock.Now().UnixNano()
	var dues []due
	w.Index.forEachUsage(func(u *usage) {
		seen, first := u.lastSeen.Load(), u.firstDue()
		if first == nil && (seen == 0 || seen <= u.writtenSeen.Load() || (!final && now-u.writtenAt.Load() < int64(w.Interval))) {
			return
		}
		dues = append(dues, due{u, seen, first})
	})
	if len(dues) == 0 {
		return
	}
	if w.Reporter != nil {
		w.report(ctx, dues, now)
		return
	}
	sink := statusSink{Client: w.Client}
	for _, d := range dues {
		err := sink.write(ctx, d.u.key, time.Unix(0, d.seen), d.first)
		switch {
		case err == nil:
			lastUsedWrites.WithLabelValues("ok").Inc()
		case apierrors.IsNotFound(err):
		case apierrors.IsConflict(err):
			// The record changed since the cache's copy (a first use's
			// precondition): read again at the next tick.
			continue
		default:
			lastUsedWrites.WithLabelValues("error").Inc()
			logf.FromContext(ctx).Error(err, "Failed to record last use", "apitoken", klog.KRef(d.u.key.Namespace, d.u.key.Name))
			continue // retried at the next tick
		}
		d.done(now)
	}
}

// due is a token's use to write: its last use seen, and its first use of
// a token whose use ends the previous one's grace (nil: none due).
type due struct {
	u     *usage
	seen  int64
	first *firstUse
}

// done marks d written at now.
func (d due) done(now int64) {
	d.u.writtenSeen.Store(d.seen)
	d.u.writtenAt.Store(now)
	if d.first != nil {
		d.u.firstWritten.Store(d.first)
	}
}

// report sends dues to an operator replica (an auth-only replica): the
// last uses, then the first uses in a report of their own, so that a
// receiver of an earlier release, which refuses a report with a field it
// does not know (firstUse), still records the last uses during an
// upgrade. An error leaves the uses of that report to the next flush.
func (w *LastUsedWriter) report(ctx context.Context, dues []due, now int64) {
	var firsts []due
	for _, d := range dues {
		if d.first != nil {
			firsts = append(firsts, d)
		}
	}
	if w.send(ctx, dues, false) {
		for _, d := range dues {
			d.u.writtenSeen.Store(d.seen)
			d.u.writtenAt.Store(now)
		}
	}
	if len(firsts) > 0 && w.send(ctx, firsts, true) {
		for _, d := range firsts {
			d.u.firstWritten.Store(d.first)
		}
	}
}

// send reports the uses of dues (with their first uses if withFirst) and
// reports whether the receiver took them.
func (w *LastUsedWriter) send(ctx context.Context, dues []due, withFirst bool) bool {
	uses := make([]Use, len(dues))
	for i, d := range dues {
		uses[i] = Use{Namespace: d.u.key.Namespace, Name: d.u.key.Name, LastUsedAt: time.Unix(0, d.seen).UTC()}
		if withFirst {
			uses[i].FirstUse = &FirstUse{Token: hashRef(d.first.encoded), At: time.Unix(0, d.first.at).UTC()}
		}
	}
	if err := w.Reporter.Report(ctx, uses); err != nil {
		lastUsedWrites.WithLabelValues("error").Add(float64(len(uses)))
		logf.FromContext(ctx).Error(err, "Failed to report token use; retrying at the next tick", "uses", len(uses))
		return false
	}
	lastUsedWrites.WithLabelValues("ok").Add(float64(len(uses)))
	return true
}

// statusSink writes uses to ApiToken status.
type statusSink struct {
	Client client.Client
}

// write records, in the ApiToken key (read from the cache), a first use
// of its current token (first, if not nil; writeFirstUse) and then
// status.lastUsedAt at (writeTo).
func (s statusSink) write(ctx context.Context, key types.NamespacedName, at time.Time, first *firstUse) error {
	obj := &tokensv1alpha1.ApiToken{}
	if err := s.Client.Get(ctx, key, obj); err != nil {
		return err
	}
	if first != nil {
		if err := s.writeFirstUse(ctx, obj, first.encoded, time.Unix(0, first.at)); err != nil {
			return err
		}
	}
	if at.UnixNano() <= 0 {
		return nil
	}
	return s.writeTo(ctx, obj, at)
}

// writeTo patches status.lastUsedAt to at, unless the ApiToken (read from
// the cache) already records a use as late: another replica may have
// written a later one, and the value never goes back in time.
func (s statusSink) writeTo(ctx context.Context, obj *tokensv1alpha1.ApiToken, at time.Time) error {
	at = at.UTC().Truncate(time.Second)
	if last := obj.Status.LastUsedAt; last != nil && !last.Time.Before(at) {
		return nil
	}
	patch := fmt.Sprintf(`{"status":{"lastUsedAt":%q}}`, at.Format(time.RFC3339))
	return s.Client.Status().Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(patch)))
}
