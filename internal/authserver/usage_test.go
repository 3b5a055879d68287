package authserver

import (
	"context"
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
				case "auth-sa-token":
					tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: reporterSA}}
				case "other-sa-token":
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
		p := filepath.Join(dir, tok)
		_ = os.WriteFile(p, []byte(tok+"\n"), 0o600)
		return p
	}
	w := &LastUsedWriter{Index: f.ix, Clock: clk, Interval: time.Minute,
		Reporter: &UsageReporter{URL: recv.URL, TokenFile: tokenFile("auth-sa-token"), Client: recv.Client()}}

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
		"a token the API server refuses": {"forged", report(clk.Now()), 401},
		"another ServiceAccount":         {"other-sa-token", report(clk.Now()), 403},
		"not a report":                   {"auth-sa-token", `{"uses":"x"}`, 400},
		"unknown fields":                 {"auth-sa-token", `{"uses":[],"status":{"hash":"x"}}`, 400},
	} {
		if got := post(c.tok, c.body); got != c.code {
			t.Errorf("%s: %d, want %d", name, got, c.code)
		}
	}
	if got := lastUsed(); !got.Time.Equal(now) {
		t.Fatalf("a refused report changed lastUsedAt to %v", got)
	}
	if post("auth-sa-token", report(now.Add(-time.Hour))) != 204 || !lastUsed().Time.Equal(now) {
		t.Fatalf("lastUsedAt went back in time: %v", lastUsed())
	}
	if post("auth-sa-token", report(now.Add(24*time.Hour))) != 204 || !lastUsed().Time.Equal(clk.Now()) {
		t.Fatalf("a use dated in the future was not clamped to now: %v", lastUsed())
	}
	// Idle for its 2h: a reported use now would revive it; it is dropped.
	last := lastUsed().Time
	clk.Step(3 * time.Hour)
	if post("auth-sa-token", report(clk.Now())) != 204 || !lastUsed().Time.Equal(last) {
		t.Fatalf("a reported use revived an inactive token: lastUsedAt %v", lastUsed())
	}
}
