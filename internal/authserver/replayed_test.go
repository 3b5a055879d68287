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

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// replayFixture holds two ApiTokens of team-a: reader, regenerated twice
// (fresh is current, stale the previous one in its grace until now+4m, old
// the replacedHash), and gone, revoked (rev its revokedHash). c holds them
// (answering the reporter's TokenReview as usage_test.go does), ix indexes
// them, h serves them at clk's now, rec records the Events.
type replayFixture struct {
	hasher                *token.Hasher
	ix                    *Index
	c                     client.Client
	clk                   *clocktesting.FakeClock
	h                     *Handler
	rec                   *events.FakeRecorder
	pr                    *PresentedRecorder
	fresh, stale, old, rv string
}

func newReplayFixture(t *testing.T) *replayFixture {
	t.Helper()
	f := &replayFixture{hasher: token.NewHasher([]byte("test-salt")), clk: clocktesting.NewFakeClock(now),
		fresh: mustToken(), stale: mustToken(), old: mustToken(), rv: mustToken(), rec: events.NewFakeRecorder(100)}
	f.ix = NewIndex(func() *token.Hasher { return f.hasher })
	f.h = &Handler{Index: f.ix, Clock: f.clk, Options: Options{DefaultNamespaces: []string{"team-a"}}}
	issued, until := metav1.NewTime(now.Add(-time.Minute)), metav1.NewTime(now.Add(4*time.Minute))
	spec := tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d", Rotation: &tokensv1alpha1.Rotation{GracePeriod: "5m"}}
	reader := &tokensv1alpha1.ApiToken{
		ObjectMeta: metav1.ObjectMeta{Name: "reader", Namespace: "team-a"}, Spec: spec,
		Status: tokensv1alpha1.ApiTokenStatus{Phase: tokensv1alpha1.PhaseActive, IssuedAt: &issued,
			Verification: &tokensv1alpha1.Verification{Hash: f.hasher.Hash(f.fresh).Encode(),
				PreviousHash: f.hasher.Hash(f.stale).Encode(), PreviousValidUntil: &until, ReplacedHash: f.hasher.Hash(f.old).Encode()}},
	}
	revoked := spec
	revoked.Revoked = true
	gone := &tokensv1alpha1.ApiToken{
		ObjectMeta: metav1.ObjectMeta{Name: "gone", Namespace: "team-a"}, Spec: revoked,
		Status: tokensv1alpha1.ApiTokenStatus{Phase: tokensv1alpha1.PhaseRevoked, Verification: &tokensv1alpha1.Verification{RevokedHash: f.hasher.Hash(f.rv).Encode()}},
	}
	s := runtime.NewScheme()
	_ = tokensv1alpha1.AddToScheme(s)
	_ = authnv1.AddToScheme(s)
	f.c = fake.NewClientBuilder().WithScheme(s).WithStatusSubresource(&tokensv1alpha1.ApiToken{}).WithObjects(reader, gone).
		WithInterceptorFuncs(interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
			if tr, ok := o.(*authnv1.TokenReview); ok {
				tr.Status = authnv1.TokenReviewStatus{Authenticated: tr.Spec.Token == reporterToken, User: authnv1.UserInfo{Username: reporterSA}}
				return nil
			}
			return c.Create(ctx, o, opts...)
		}}).Build()
	f.ix.Upsert(reader)
	f.ix.Upsert(gone)
	f.pr = &PresentedRecorder{Recorder: f.rec, Client: f.c, Clock: f.clk, Interval: DefaultPresentedEventInterval}
	return f
}

// forwardAuth presents tok at forward-auth, as Traefik sends it for the
// client at 203.0.113.7 (the last X-Forwarded-For address is the one the
// proxy wrote), and returns the answer.
func (f *replayFixture) forwardAuth(tok string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, ForwardAuthPath+"/", nil)
	r.RemoteAddr = "10.0.0.9:41000"
	r.Header.Set("Authorization", "Bearer "+tok)
	r.Header.Set("X-Forwarded-For", "198.51.100.1, 203.0.113.7")
	r.Header.Set("X-Forwarded-Method", http.MethodGet)
	r.Header.Set("X-Forwarded-Uri", "/articles")
	w := httptest.NewRecorder()
	(&Server{Handler: f.h}).Mux().ServeHTTP(w, r)
	return w
}

// due returns the presentation ApiToken name holds, not yet recorded.
func (f *replayFixture) due(name string) *presentation {
	return f.ix.objects[keyOf("team-a", name)].usage.presentedDue()
}

func (f *replayFixture) events() []string {
	var out []string
	for {
		select {
		case e := <-f.rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// TestAReplacedTokenPresentedAgainIsMarked: the decision marks a
// replaced token that no longer verifies (the previous one past its grace,
// the replacedHash) and a revoked one, at every door, with the client's
// address the endpoint sees; the answer is the one it was before: a
// replacedHash is an unknown token, headers and body alike. A valid
// token, the previous one in its grace, and a token nobody recorded are
// not marked.
func TestAReplacedTokenPresentedAgainIsMarked(t *testing.T) {
	f := newReplayFixture(t)
	count := func(name string) float64 {
		return testutil.ToFloat64(replacedPresented.WithLabelValues("team-a", name))
	}
	unknown := f.forwardAuth(mustToken())
	for _, c := range []struct {
		name, tok, result, marked string
	}{
		{"current", f.fresh, "", ""},
		{"previous in its grace", f.stale, "", ""},
		{"unknown", mustToken(), "unknown", ""},
		{"replacedHash", f.old, "unknown", presentedReplaced},
		{"revokedHash", f.rv, "revoked", presentedRevoked},
	} {
		t.Run(c.name, func(t *testing.T) {
			owner := "reader"
			if c.marked == presentedRevoked {
				owner = "gone"
			}
			f.ix.objects[keyOf("team-a", owner)].usage.presented.Store(nil)
			before := count(owner)
			w := f.forwardAuth(c.tok)
			if c.result == "" {
				if w.Code != http.StatusOK || f.due(owner) != nil || count(owner) != before {
					t.Fatalf("a valid token: %d, marked %+v", w.Code, f.due(owner))
				}
				return
			}
			if want := `error_description="` + c.result + `"`; w.Code != http.StatusUnauthorized || !strings.Contains(w.Header().Get("WWW-Authenticate"), want) {
				t.Fatalf("answer %d %q, want 401 %s", w.Code, w.Header().Get("WWW-Authenticate"), want)
			}
			if c.result == "unknown" && (w.Header().Get("WWW-Authenticate") != unknown.Header().Get("WWW-Authenticate") || w.Body.String() != unknown.Body.String()) {
				t.Fatalf("a replaced token is answered unlike an unknown one: %q %q", w.Header(), w.Body)
			}
			p := f.due(owner)
			if c.marked == "" {
				if p != nil {
					t.Fatalf("marked %+v", p)
				}
				return
			}
			if p == nil || p.token != c.marked || p.client != "203.0.113.7" || p.endpoint != "forward-auth" || p.at != now.UnixNano() {
				t.Fatalf("marked %+v, want %s from 203.0.113.7 at forward-auth", p, c.marked)
			}
			if count(owner) != before+1 {
				t.Fatalf("apitoken_replaced_token_presented_total went from %v to %v", before, count(owner))
			}
		})
	}

	// The previous token, once its grace is over (before the reconciler
	// moves it to replacedHash), is answered expired, as before, and marked.
	f.clk.Step(4 * time.Minute)
	if w := f.forwardAuth(f.stale); w.Code != http.StatusUnauthorized || !strings.Contains(w.Header().Get("WWW-Authenticate"), `"expired"`) {
		t.Fatalf("the previous token past its grace: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
	if p := f.due("reader"); p == nil || p.token != presentedReplaced {
		t.Fatalf("the previous token past its grace is not marked: %+v", p)
	}

	// TokenReview: the client is the API server that asked (the peer).
	f.ix.objects[keyOf("team-a", "gone")].usage.presented.Store(nil)
	r := httptest.NewRequest(http.MethodPost, TokenReviewPath, strings.NewReader(reviewBody("v1", f.rv, "content-api")))
	r.RemoteAddr = "[::ffff:10.1.2.3]:6443"
	r.Header.Set("Content-Type", "application/json")
	f.h.ServeTokenReview(httptest.NewRecorder(), r)
	if p := f.due("gone"); p == nil || p.token != presentedRevoked || p.client != "10.1.2.3" || p.endpoint != "tokenreview" {
		t.Fatalf("TokenReview marked %+v", p)
	}

	// gRPC ext_authz: Envoy's own attributes.source, not a header.
	f.ix.objects[keyOf("team-a", "reader")].usage.presented.Store(nil)
	cr := checkRequest(http.MethodGet, "/articles", map[string]string{"authorization": "Bearer " + f.old, "x-forwarded-for": "192.0.2.66"}, nil)
	cr.Attributes.Source = &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
		SocketAddress: &corev3.SocketAddress{Address: "198.51.100.23"}}}}
	if _, err := (&ExtAuthz{Handler: f.h}).Check(context.Background(), cr); err != nil {
		t.Fatal(err)
	}
	if p := f.due("reader"); p == nil || p.token != presentedReplaced || p.client != "198.51.100.23" || p.endpoint != GRPCExtAuthz {
		t.Fatalf("gRPC marked %+v", p)
	}
}

// TestAReplacedTokenHammeredIsOneEventPerInterval: an operator replica
// records a token presented again as one Warning Event per ApiToken per
// interval, however often it is presented and flushed; the Event names
// the kind of token and the client, never the token or its hash.
func TestAReplacedTokenHammeredIsOneEventPerInterval(t *testing.T) {
	f := newReplayFixture(t)
	w := &LastUsedWriter{Index: f.ix, Client: f.c, Presented: f.pr, Clock: f.clk, Interval: time.Minute}
	ctx := context.Background()
	hammer := func() {
		for range 200 {
			f.forwardAuth(f.old)
		}
	}
	hammer()
	w.Flush(ctx)
	got := f.events()
	if len(got) != 1 || !strings.HasPrefix(got[0], "Warning ReplacedTokenPresented A replaced token of this ApiToken was presented from 203.0.113.7 at the forward-auth endpoint at ") {
		t.Fatalf("Events = %q, want one ReplacedTokenPresented", got)
	}
	for _, secret := range []string{f.old, f.fresh, f.hasher.Hash(f.old).Encode(), hashRef(f.hasher.Hash(f.old).Encode()), f.old[:16]} {
		if strings.Contains(got[0], secret) {
			t.Fatalf("the Event carries a token or a hash: %q", got[0])
		}
	}
	for range 9 {
		f.clk.Step(time.Minute)
		hammer()
		w.Flush(ctx)
	}
	if got := f.events(); len(got) != 0 {
		t.Fatalf("within the interval: %q", got)
	}
	f.clk.Step(time.Minute)
	hammer()
	w.Flush(ctx)
	w.Flush(ctx)
	if got := f.events(); len(got) != 1 {
		t.Fatalf("after the interval: %q, want one Event", got)
	}
	// Nothing presented since: nothing due, nothing recorded.
	f.clk.Step(time.Hour)
	w.Flush(ctx)
	if got := f.events(); len(got) != 0 || f.due("reader") != nil {
		t.Fatalf("with nothing presented: %q", got)
	}
}

// TestAReplacedTokenPresentedAtAnAuthOnlyReplica: an auth-only replica
// reports it to an operator replica, which records the Event as it records
// its own. A report the status does not bear out (a revoked token of an
// ApiToken that records none, a kind that is none) is dropped, and what a
// reporter writes never reaches the Event but as an IP address or a door.
func TestAReplacedTokenPresentedAtAnAuthOnlyReplica(t *testing.T) {
	f := newReplayFixture(t)
	recv := httptest.NewServer(&UsageReceiver{Client: f.c, Reporters: []string{reporterSA}, Clock: f.clk, Presented: f.pr})
	defer recv.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	_ = os.WriteFile(tokenFile, []byte(reporterToken), 0o600)
	reporter := &UsageReporter{URL: recv.URL, TokenFile: tokenFile, Client: recv.Client()}
	w := &LastUsedWriter{Index: f.ix, Reporter: reporter, Clock: f.clk, Interval: time.Minute}
	ctx := context.Background()

	f.forwardAuth(f.rv)
	w.Flush(ctx)
	got := f.events()
	if len(got) != 1 || !strings.Contains(got[0], "A revoked token of this ApiToken was presented from 203.0.113.7 at the forward-auth endpoint") {
		t.Fatalf("Events = %q", got)
	}
	if f.due("gone") != nil {
		t.Fatal("a reported presentation is still due")
	}

	for _, p := range []Presented{
		{Token: presentedRevoked, Client: "192.0.2.1"},                           // reader records no revoked token
		{Token: "stolen", Client: "192.0.2.1"},                                   // no such kind
		{Token: presentedReplaced, Client: "192.0.2.1\nforged", Endpoint: "x y"}, // recorded, as an unknown address
	} {
		if err := reporter.Report(ctx, []Use{{Namespace: "team-a", Name: "reader", Presented: &p}}); err != nil {
			t.Fatal(err)
		}
	}
	got = f.events()
	if len(got) != 1 || !strings.Contains(got[0], "A replaced token of this ApiToken was presented from an unknown address at ") || strings.Contains(got[0], "forged") || strings.Contains(got[0], "x y") {
		t.Fatalf("Events = %q, want the replaced one only, from an unknown address", got)
	}
}
