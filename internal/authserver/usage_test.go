package authserver

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
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
)

const reporterSA = "system:serviceaccount:apitoken-system:apitoken-auth"

// TestUsageReportedToAnOperatorReplica: an auth-only replica, whose
// identity may not write status, reports its uses; an operator replica
// authenticates it (TokenReview) and writes lastUsedAt, never back in time
// and never in the future; anyone else is refused.
func TestUsageReportedToAnOperatorReplica(t *testing.T) {
	f := newFixture()
	s := runtime.NewScheme()
	_ = tokensv1alpha1.AddToScheme(s)
	_ = authnv1.AddToScheme(s)
	reviews := 0
	c := fake.NewClientBuilder().WithScheme(s).WithStatusSubresource(&tokensv1alpha1.ApiToken{}).
		WithObjects(&tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "reader", Namespace: "team-a"},
			Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, IdleTimeout: "2h"},
			Status: tokensv1alpha1.ApiTokenStatus{IssuedAt: &metav1.Time{Time: now.Add(-time.Hour)},
				Verification: &tokensv1alpha1.Verification{Hash: f.hasher.Hash(f.tokens["reader"]).Encode()}}}).
		WithInterceptorFuncs(interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
			if tr, ok := o.(*authnv1.TokenReview); ok {
				// The API server's answer for the two ServiceAccount tokens of this test.
				reviews++
				switch tr.Spec.Token {
				case reporterToken:
					tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: reporterSA}}
				case otherSAToken:
					tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: "system:serviceaccount:shop:web"}}
				default:
					tr.Status = authnv1.TokenReviewStatus{Error: "invalid bearer token"}
				}
				return nil
			}
			return c.Create(ctx, o, opts...)
		}}).Build()
	clk := clocktesting.NewFakeClock(now)
	f.h.Clock = clk
	recv := httptest.NewServer(&UsageReceiver{Client: c, Reporters: []string{reporterSA}, Clock: clk})
	defer recv.Close()
	dir := t.TempDir()
	tokenFile := func(tok string) string {
		p := filepath.Join(dir, "token")
		_ = os.WriteFile(p, []byte(tok+"\n"), 0o600)
		return p
	}
	w := &LastUsedWriter{Index: f.ix, Clock: clk, Interval: time.Minute,
		Reporter: &UsageReporter{URL: recv.URL, TokenFile: tokenFile(reporterToken), Client: recv.Client()}}

	lastUsed := func() *metav1.Time {
		var at tokensv1alpha1.ApiToken
		_ = c.Get(context.Background(), keyOf("team-a", "reader"), &at)
		return at.Status.LastUsedAt
	}
	id, _ := f.ix.Lookup(f.tokens["reader"], now)
	markUsed(id, now)
	clk.Step(time.Minute)
	w.Flush(context.Background())
	if got := lastUsed(); got == nil || !got.Time.Equal(now) {
		t.Fatalf("lastUsedAt = %v, want %v", got, now)
	}
	w.Flush(context.Background())
	if reviews != 1 {
		t.Fatalf("%d TokenReviews, want 1 (nothing new to report, and the answer is kept)", reviews)
	}

	post := func(tok, body string) int {
		req, _ := http.NewRequest(http.MethodPost, recv.URL, strings.NewReader(body))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := recv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	report := func(at time.Time) string {
		return `{"uses":[{"namespace":"team-a","name":"reader","lastUsedAt":"` + at.UTC().Format(time.RFC3339) + `"}]}`
	}
	for name, c := range map[string]struct {
		tok, body string
		code      int
	}{
		"no credential":                  {"", report(clk.Now()), 401},
		"not a ServiceAccount token":     {"forged", report(clk.Now()), 401},
		"a token the API server refuses": {randomJWT(t), report(clk.Now()), 401},
		"another ServiceAccount":         {otherSAToken, report(clk.Now()), 403},
		"not a report":                   {reporterToken, `{"uses":"x"}`, 400},
		"unknown fields":                 {reporterToken, `{"uses":[],"status":{"hash":"x"}}`, 400},
	} {
		if got := post(c.tok, c.body); got != c.code {
			t.Errorf("%s: %d, want %d", name, got, c.code)
		}
	}
	if got := lastUsed(); !got.Time.Equal(now) {
		t.Fatalf("a refused report changed lastUsedAt to %v", got)
	}
	if post(reporterToken, report(now.Add(-time.Hour))) != 204 || !lastUsed().Time.Equal(now) {
		t.Fatalf("lastUsedAt went back in time: %v", lastUsed())
	}
	if post(reporterToken, report(now.Add(24*time.Hour))) != 204 || !lastUsed().Time.Equal(clk.Now()) {
		t.Fatalf("a use dated in the future was not clamped to now: %v", lastUsed())
	}
	// Idle for its 2h: a reported use now would revive it; it is dropped.
	last := lastUsed().Time
	clk.Step(3 * time.Hour)
	if post(reporterToken, report(clk.Now())) != 204 || !lastUsed().Time.Equal(last) {
		t.Fatalf("a reported use revived an inactive token: lastUsedAt %v", lastUsed())
	}
}

// reviewCounter is a client whose TokenReviews are answered as the API
// server would (authenticated for the reporter's token only) and counted.
type reviewCounter struct {
	client.Client
	reviews atomic.Int64
}

func newReviewCounter() *reviewCounter {
	s := runtime.NewScheme()
	_ = tokensv1alpha1.AddToScheme(s)
	_ = authnv1.AddToScheme(s)
	rc := &reviewCounter{}
	rc.Client = fake.NewClientBuilder().WithScheme(s).WithInterceptorFuncs(interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
		if tr, ok := o.(*authnv1.TokenReview); ok {
			rc.reviews.Add(1)
			if tr.Spec.Token == reporterToken {
				tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: reporterSA}}
			} else {
				tr.Status = authnv1.TokenReviewStatus{Error: "invalid bearer token"}
			}
			return nil
		}
		return c.Create(ctx, o, opts...)
	}}).Build()
	return rc
}

// reporterToken and otherSAToken are shaped as ServiceAccount tokens
// (JWTs): the reporter's, and another ServiceAccount's.
const (
	reporterToken = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YXBpdG9rZW4tc3lzdGVtOmFwaXRva2VuLWF1dGgifQ.c2lnbmF0dXJlLW9mLXRoZS1yZXBvcnRlcg"
	otherSAToken  = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2hvcDp3ZWIifQ.c2lnbmF0dXJlLW9mLXdlYg"
)

// randomJWT is a bearer of a ServiceAccount token's form that no API
// server issued.
func randomJWT(t *testing.T) string {
	b := make([]byte, 96)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return "eyJhbGciOiJSUzI1NiJ9." + enc.EncodeToString(b[:48]) + "." + enc.EncodeToString(b[48:])
}

// TestUsageReviewsAreBounded: a caller that reaches /v1/usage cannot make
// the operator call the API server once per request. 1000 requests with
// random bearers cause at most the review bucket's burst of TokenReviews
// (past it: 429 with Retry-After), one that is not a bearer of a
// ServiceAccount token's form causes none, a refused bearer sent again is
// answered from memory, and the reporter, from another address, is still
// heard.
func TestUsageReviewsAreBounded(t *testing.T) {
	rc := newReviewCounter()
	clk := clocktesting.NewFakeClock(now)
	recv := &UsageReceiver{Client: rc, Reporters: []string{reporterSA}, Clock: clk}
	post := func(peer, auth string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, UsagePath, strings.NewReader(`{"uses":[]}`))
		req.RemoteAddr = peer + ":40000"
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		recv.ServeHTTP(w, req)
		return w
	}
	const requests = 1000
	codes := map[int]int{}
	for range requests {
		codes[post("10.0.0.66", "Bearer "+randomJWT(t)).Code]++
	}
	random := rc.reviews.Load()
	t.Logf("%d requests with random bearers from one address: %d TokenReviews, answers %v", requests, random, codes)
	if random > usagePeerBurst {
		t.Errorf("%d requests with random bearers caused %d TokenReviews, want at most %d (the per-address burst)", requests, random, usagePeerBurst)
	}
	if codes[http.StatusTooManyRequests] == 0 {
		t.Errorf("no request was refused 429: %v", codes)
	}
	if w := post("10.0.0.66", "Bearer "+randomJWT(t)); w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
		t.Errorf("past the bucket: %d, Retry-After %q; want 429 with Retry-After", w.Code, w.Header().Get("Retry-After"))
	}

	rc.reviews.Store(0)
	codes = map[int]int{}
	for i := range requests {
		codes[post(fmt.Sprintf("10.1.%d.%d", i/250, i%250), "Bearer "+randomJWT(t)).Code]++
	}
	spread := rc.reviews.Load()
	t.Logf("%d requests with random bearers from %d addresses: %d TokenReviews, answers %v", requests, requests, spread, codes)
	if spread > usageBurst {
		t.Errorf("%d requests from %d addresses caused %d TokenReviews, want at most %d (the global burst)", requests, requests, spread, usageBurst)
	}

	clk.Step(time.Hour) // every bucket full again
	rc.reviews.Store(0)
	for _, auth := range []string{"Bearer not-a-jwt", "Bearer " + strings.Repeat("a", 64), "Bearer a.b", "Bearer a.b.c.d", "Bearer a.b!.c", "Bearer " + strings.Repeat("eyJ.", 4<<10) + "x", "Bearer eyJ" + strings.Repeat("a", 9<<10) + ".b.c", "Basic " + reporterToken} {
		if w := post("10.0.0.67", auth); w.Code != http.StatusUnauthorized {
			t.Errorf("%.40q: %d, want 401", auth, w.Code)
		}
	}
	if n := rc.reviews.Load(); n != 0 {
		t.Errorf("bearers not of a ServiceAccount token's form caused %d TokenReviews, want 0", n)
	}
	refused := randomJWT(t)
	rc.reviews.Store(0)
	for range 100 {
		if w := post("10.0.0.67", "Bearer "+refused); w.Code != http.StatusUnauthorized {
			t.Fatalf("a refused bearer sent again: %d, want 401", w.Code)
		}
	}
	if n := rc.reviews.Load(); n != 1 {
		t.Errorf("one refused bearer sent 100 times caused %d TokenReviews, want 1 (the answer kept)", n)
	}

	// A flood from one address leaves the reporter's own bucket whole.
	clk.Step(time.Hour)
	for range requests {
		post("10.0.0.66", "Bearer "+randomJWT(t))
	}
	rc.reviews.Store(0)
	for range 10 {
		if w := post("10.0.0.10", "Bearer "+reporterToken); w.Code != http.StatusNoContent {
			t.Fatalf("the reporter after a flood from another address: %d %s, want 204", w.Code, w.Body)
		}
	}
	if n := rc.reviews.Load(); n != 1 {
		t.Errorf("10 reports with one token caused %d TokenReviews, want 1", n)
	}
}

// TestCouldBeUsedAtTheInstant: a reported use is kept only if a replica
// could have accepted it: from a minute before the issue time (clock
// skew) to the nanosecond before the token's end, never for a token its
// status records as ended, revoked or of a spec that does not parse.
func TestCouldBeUsedAtTheInstant(t *testing.T) {
	issued := metav1.NewTime(now)
	expires := metav1.NewTime(now.Add(time.Hour))
	base := &tokensv1alpha1.ApiToken{Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "1h", IdleTimeout: "45m"},
		Status: tokensv1alpha1.ApiTokenStatus{Phase: tokensv1alpha1.PhaseActive, IssuedAt: &issued, ExpiresAt: &expires,
			Verification: &tokensv1alpha1.Verification{Hash: "h"}}}
	ns := time.Nanosecond
	for _, c := range []struct {
		name string
		mod  func(*tokensv1alpha1.ApiToken)
		when time.Time
		want bool
	}{
		{"a minute before its issue", nil, now.Add(-time.Minute), true},
		{"beyond the clock skew", nil, now.Add(-time.Minute - ns), false},
		{"a nanosecond before it goes idle", nil, now.Add(45*time.Minute - ns), true},
		{"idle", nil, now.Add(45 * time.Minute), false},
		{"no idleTimeout: a nanosecond before it expires", func(a *tokensv1alpha1.ApiToken) { a.Spec.IdleTimeout = "" }, now.Add(time.Hour - ns), true},
		{"no idleTimeout: expired", func(a *tokensv1alpha1.ApiToken) { a.Spec.IdleTimeout = "" }, now.Add(time.Hour), false},
		{"recorded Expired", func(a *tokensv1alpha1.ApiToken) { a.Status.Phase = tokensv1alpha1.PhaseExpired }, now, false},
		{"recorded Inactive", func(a *tokensv1alpha1.ApiToken) { a.Status.Phase = tokensv1alpha1.PhaseInactive }, now, false},
		{"revoked", func(a *tokensv1alpha1.ApiToken) { a.Spec.Revoked = true }, now, false},
		{"a spec that does not parse", func(a *tokensv1alpha1.ApiToken) { a.Spec.IdleTimeout = "90 days" }, now, false},
	} {
		at := base.DeepCopy()
		if c.mod != nil {
			c.mod(at)
		}
		if got := couldBeUsed(at, c.when); got != c.want {
			t.Errorf("%s: couldBeUsed = %v, want %v", c.name, got, c.want)
		}
	}
}
