package authserver

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// graceFixture is an ApiToken regenerated a minute before now with
// spec.rotation.graceUntilNewTokenUsed: "fresh" is its current token,
// "stale" the previous one, in its 5m grace; c holds it (with the review
// answers of usage_test.go) and ix indexes it.
type graceFixture struct {
	hasher       *token.Hasher
	ix           *Index
	c            client.Client
	clk          *clocktesting.FakeClock
	fresh, stale string
}

func newGraceFixture(t *testing.T, funcs interceptor.Funcs) *graceFixture {
	t.Helper()
	g := &graceFixture{hasher: token.NewHasher([]byte("test-salt")), clk: clocktesting.NewFakeClock(now), fresh: mustToken(), stale: mustToken()}
	g.ix = NewIndex(func() *token.Hasher { return g.hasher })
	issued, until := metav1.NewTime(now.Add(-time.Minute)), metav1.NewTime(now.Add(4*time.Minute))
	at := &tokensv1alpha1.ApiToken{
		ObjectMeta: metav1.ObjectMeta{Name: "reader", Namespace: "team-a"},
		Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d",
			Rotation: &tokensv1alpha1.Rotation{GracePeriod: "5m", GraceUntilNewTokenUsed: true}},
		Status: tokensv1alpha1.ApiTokenStatus{Phase: tokensv1alpha1.PhaseActive, IssuedAt: &issued,
			Verification: &tokensv1alpha1.Verification{Hash: g.hasher.Hash(g.fresh).Encode(),
				PreviousHash: g.hasher.Hash(g.stale).Encode(), PreviousValidUntil: &until}},
	}
	s := runtime.NewScheme()
	_ = tokensv1alpha1.AddToScheme(s)
	_ = authnv1.AddToScheme(s)
	if funcs.Create == nil {
		funcs.Create = func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
			if tr, ok := o.(*authnv1.TokenReview); ok {
				tr.Status = authnv1.TokenReviewStatus{Authenticated: tr.Spec.Token == reporterToken, User: authnv1.UserInfo{Username: reporterSA}}
				return nil
			}
			return c.Create(ctx, o, opts...)
		}
	}
	g.c = fake.NewClientBuilder().WithScheme(s).WithStatusSubresource(&tokensv1alpha1.ApiToken{}).
		WithObjects(at).WithInterceptorFuncs(funcs).Build()
	g.reindex(t)
	return g
}

// reindex feeds ix the ApiToken as c holds it, as the cache would.
func (g *graceFixture) reindex(t *testing.T) *tokensv1alpha1.ApiToken {
	t.Helper()
	var at tokensv1alpha1.ApiToken
	if err := g.c.Get(context.Background(), keyOf("team-a", "reader"), &at); err != nil {
		t.Fatal(err)
	}
	g.ix.Upsert(&at)
	return &at
}

// use verifies tok at the clock's now and records the use as a 200 does.
func (g *graceFixture) use(t *testing.T, tok string) {
	t.Helper()
	id, v := g.ix.Lookup(tok, g.clk.Now())
	if v != Valid {
		t.Fatalf("the token was refused as %v before its use", v)
	}
	markUsed(id, g.clk.Now())
}

// TestAUseOfThePreviousTokenNeverEndsItsGrace: the attack of a client
// still on the previous token (which is what clients send during the
// grace) is that its use, written as lastUsedAt after the new token's
// issue, ends its own grace. It never does: only a use of the hash the
// index holds as current is recorded as firstUsedAt, and then the previous
// token is refused by the index at once.
func TestAUseOfThePreviousTokenNeverEndsItsGrace(t *testing.T) {
	g := newGraceFixture(t, interceptor.Funcs{})
	w := &LastUsedWriter{Index: g.ix, Client: g.c, Clock: g.clk, Interval: time.Minute}
	ctx := context.Background()

	g.use(t, g.stale)
	g.clk.Step(time.Minute)
	w.Flush(ctx)
	at := g.reindex(t)
	if at.Status.LastUsedAt == nil || at.Status.Verification.FirstUsedAt != nil {
		t.Fatalf("a use of the previous token: lastUsedAt %v, firstUsedAt %v; want a last use and no first use", at.Status.LastUsedAt, at.Status.Verification.FirstUsedAt)
	}
	if _, v := g.ix.Lookup(g.stale, g.clk.Now()); v != Valid {
		t.Fatalf("the previous token is %v in its grace, after its own use", v)
	}

	// The new token, used within the interval of the last write: the
	// first use is written at the next flush all the same.
	g.clk.Step(10 * time.Second)
	usedAt := g.clk.Now()
	g.use(t, g.fresh)
	g.clk.Step(time.Second)
	g.use(t, g.fresh)
	w.Flush(ctx)
	at = g.reindex(t)
	if fu := at.Status.Verification.FirstUsedAt; fu == nil || !fu.Time.Equal(usedAt.Truncate(time.Second)) {
		t.Fatalf("firstUsedAt = %v, want %v", fu, usedAt)
	}
	if _, v := g.ix.Lookup(g.stale, g.clk.Now()); v != Expired {
		t.Fatalf("the previous token is %v once the new one was used, want expired", v)
	}
	if _, v := g.ix.Lookup(g.fresh, g.clk.Now()); v != Valid {
		t.Fatalf("the new token is %v", v)
	}
}

// TestAFirstUseNeverEndsTheGraceOfAnotherToken: a use of the new token
// seen by a replica whose record changed before it was written (another
// regeneration: that token is now the previous one) ends nothing. The
// write carries the resourceVersion it read: a copy older than the API
// server's is refused (a conflict, retried on a fresh read, which then
// finds the hash no longer current).
func TestAFirstUseNeverEndsTheGraceOfAnotherToken(t *testing.T) {
	var stale *tokensv1alpha1.ApiToken
	g := newGraceFixture(t, interceptor.Funcs{Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
		if at, ok := o.(*tokensv1alpha1.ApiToken); ok && stale != nil {
			// A cache that has not seen the regeneration yet.
			stale.DeepCopyInto(at)
			return nil
		}
		return c.Get(ctx, key, o, opts...)
	}})
	w := &LastUsedWriter{Index: g.ix, Client: g.c, Clock: g.clk, Interval: time.Minute}
	ctx := context.Background()
	g.use(t, g.fresh)

	// Regenerated meanwhile: a third token is current, fresh the previous.
	stale = g.reindex(t)
	third := mustToken()
	next := stale.DeepCopy()
	until := metav1.NewTime(g.clk.Now().Add(5 * time.Minute))
	next.Status.Verification = &tokensv1alpha1.Verification{Hash: g.hasher.Hash(third).Encode(), PreviousHash: stale.Status.Verification.Hash, PreviousValidUntil: &until}
	if err := g.c.Status().Update(ctx, next); err != nil {
		t.Fatal(err)
	}
	g.clk.Step(time.Second)
	w.Flush(ctx)
	stale = nil
	at := g.reindex(t)
	if fu := at.Status.Verification.FirstUsedAt; fu != nil {
		t.Fatalf("a use of the replaced token, written from a stale copy, recorded firstUsedAt %v", fu)
	}
	w.Flush(ctx) // retried on a fresh read: the hash is no longer current
	at = g.reindex(t)
	if fu := at.Status.Verification.FirstUsedAt; fu != nil {
		t.Fatalf("a use of the replaced token recorded firstUsedAt %v", fu)
	}
	if _, v := g.ix.Lookup(g.fresh, g.clk.Now()); v != Valid {
		t.Fatalf("the token now previous is %v in its grace", v)
	}
}

// TestAFirstUseReportedByAnAuthOnlyReplica: an auth-only replica reports
// the first use with a reference to the hash it saw used (never the hash);
// the operator replica records it only for the hash its status records as
// current. A report naming the previous token, or a token the record
// does not hold, is dropped; a use dated in the future is dated now.
func TestAFirstUseReportedByAnAuthOnlyReplica(t *testing.T) {
	g := newGraceFixture(t, interceptor.Funcs{})
	recv := httptest.NewServer(&UsageReceiver{Client: g.c, Reporters: []string{reporterSA}, Clock: g.clk})
	defer recv.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	_ = os.WriteFile(tokenFile, []byte(reporterToken), 0o600)
	ctx := context.Background()
	firstUsed := func() *metav1.Time { return g.reindex(t).Status.Verification.FirstUsedAt }

	post := func(ref string, at time.Time) {
		t.Helper()
		body := `{"uses":[{"namespace":"team-a","name":"reader","lastUsedAt":"` + at.UTC().Format(time.RFC3339) +
			`","firstUse":{"token":"` + ref + `","at":"` + at.UTC().Format(time.RFC3339) + `"}}]}`
		req, _ := http.NewRequest(http.MethodPost, recv.URL, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+reporterToken)
		resp, err := recv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("report answered %d", resp.StatusCode)
		}
	}
	post(hashRef(g.hasher.Hash(g.stale).Encode()), g.clk.Now())
	post(hashRef(g.hasher.Hash(mustToken()).Encode()), g.clk.Now())
	post(g.hasher.Hash(g.fresh).Encode(), g.clk.Now()) // the hash itself is no reference
	if fu := firstUsed(); fu != nil {
		t.Fatalf("a report of another token's use recorded firstUsedAt %v", fu)
	}

	// Through the reporter, as an auth-only replica sends it, dated in
	// the future by its clock.
	w := &LastUsedWriter{Index: g.ix, Clock: g.clk, Interval: time.Minute,
		Reporter: &UsageReporter{URL: recv.URL, TokenFile: tokenFile, Client: recv.Client()}}
	ahead := clocktesting.NewFakeClock(g.clk.Now().Add(time.Hour))
	id, _ := g.ix.Lookup(g.fresh, g.clk.Now())
	markUsed(id, ahead.Now())
	w.Flush(ctx)
	if fu := firstUsed(); fu == nil || !fu.Time.Equal(g.clk.Now()) {
		t.Fatalf("firstUsedAt = %v, want the receiver's now %v", fu, g.clk.Now())
	}
	if _, v := g.ix.Lookup(g.stale, g.clk.Now()); v != Expired {
		t.Fatalf("the previous token is %v once the new one's use was reported", v)
	}
}

// TestAnEarlierReceiverStillRecordsTheLastUses: during an upgrade an
// auth-only replica of this release may report to an operator replica of
// the one before, which refuses a report with a field it does not know
// (firstUse). The first uses go in a report of their own: the last uses
// are recorded all the same, and the first use is kept for the next flush.
func TestAnEarlierReceiverStillRecordsTheLastUses(t *testing.T) {
	g := newGraceFixture(t, interceptor.Funcs{})
	var recorded []string
	earlier := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rep struct {
			Uses []struct {
				Namespace, Name string
				LastUsedAt      time.Time
			}
		}
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rep); err != nil {
			http.Error(w, "the body is not a usage report", http.StatusBadRequest)
			return
		}
		for _, u := range rep.Uses {
			recorded = append(recorded, u.Name)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer earlier.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	_ = os.WriteFile(tokenFile, []byte(reporterToken), 0o600)
	w := &LastUsedWriter{Index: g.ix, Clock: g.clk, Interval: time.Minute,
		Reporter: &UsageReporter{URL: earlier.URL, TokenFile: tokenFile, Client: earlier.Client()}}
	g.use(t, g.fresh)
	w.Flush(context.Background())
	if len(recorded) != 1 || recorded[0] != "reader" {
		t.Fatalf("the earlier receiver recorded %v, want the last use of reader", recorded)
	}
	if g.ix.objects[keyOf("team-a", "reader")].usage.firstDue() == nil {
		t.Fatal("the first use the earlier receiver refused was dropped, not kept for the next flush")
	}
}
