package authserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
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
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// revokeFixture is an operator replica's /v1/revoke over a fake API
// server holding two ApiTokens: "web" (a current token and a previous one
// in its grace) and "gone" (an expired one), indexed as the cache has them.
type revokeFixture struct {
	t       *testing.T
	c       client.WithWatch
	ix      *Index
	hasher  *token.Hasher
	clk     *clocktesting.FakeClock
	rv      *Revoker
	audit   *AuditLog
	patches int
	tokens  map[string]string
}

func newRevokeFixture(t *testing.T) *revokeFixture {
	f := &revokeFixture{t: t, hasher: token.NewHasher([]byte("test-salt")), clk: clocktesting.NewFakeClock(now), tokens: map[string]string{}}
	for _, n := range []string{"current", "previous", "expired"} {
		f.tokens[n] = mustToken()
	}
	until, issued, past := metav1.NewTime(now.Add(time.Minute)), metav1.NewTime(now.Add(-time.Hour)), metav1.NewTime(now.Add(-time.Second))
	web := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a", UID: "uid-web"},
		Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"},
		Status: tokensv1alpha1.ApiTokenStatus{Phase: tokensv1alpha1.PhaseActive, IssuedAt: &issued, Verification: &tokensv1alpha1.Verification{
			Hash: f.hash("current"), PreviousHash: f.hash("previous"), PreviousValidUntil: &until}}}
	gone := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "gone", Namespace: "team-a", UID: "uid-gone"},
		Spec:   tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "1h"},
		Status: tokensv1alpha1.ApiTokenStatus{IssuedAt: &issued, ExpiresAt: &past, Verification: &tokensv1alpha1.Verification{Hash: f.hash("expired")}}}
	s := runtime.NewScheme()
	_ = tokensv1alpha1.AddToScheme(s)
	_ = authnv1.AddToScheme(s)
	f.c = fake.NewClientBuilder().WithScheme(s).WithStatusSubresource(&tokensv1alpha1.ApiToken{}).WithObjects(web, gone).
		WithInterceptorFuncs(interceptor.Funcs{
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
				f.patches++
				return c.Status().Patch(ctx, o, p, opts...)
			},
			Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
				if tr, ok := o.(*authnv1.TokenReview); ok {
					switch tr.Spec.Token {
					case reporterToken:
						tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: reporterSA}}
					case otherSAToken:
						tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: "system:serviceaccount:shop:web"}}
					}
					return nil
				}
				return c.Create(ctx, o, opts...)
			},
		}).Build()
	f.ix = NewIndex(func() *token.Hasher { return f.hasher })
	f.ix.Upsert(web.DeepCopy())
	f.ix.Upsert(gone.DeepCopy())
	f.audit = NewAuditLog(nil)
	f.rv = &Revoker{Index: f.ix, Client: f.c, Reader: f.c, Clock: f.clk, Audit: f.audit,
		Forwarders: &UsageReceiver{Client: f.c, Reporters: []string{reporterSA}, Clock: f.clk}}
	return f
}

func (f *revokeFixture) hash(name string) string { return f.hasher.Hash(f.tokens[name]).Encode() }

// post sends body to h from addr and returns the answer.
func post(h http.Handler, addr, contentType, body string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, RevokePath, strings.NewReader(body))
	req.RemoteAddr = addr + ":40000"
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func tokenBody(tok string) string { return `{"token":` + strconv.Quote(tok) + `}` }

func (f *revokeFixture) web() *tokensv1alpha1.ApiToken {
	var at tokensv1alpha1.ApiToken
	if err := f.c.Get(context.Background(), keyOf("team-a", "web"), &at); err != nil {
		f.t.Fatal(err)
	}
	return &at
}

// records returns the audit records queued so far, as written.
func (f *revokeFixture) records() []string {
	var out []string
	for len(f.audit.ch) > 0 {
		r := <-f.audit.ch
		out = append(out, string(r.appendJSON(nil)))
	}
	return out
}

// TestRevokeTheCurrentToken: presenting the current token records a leak
// revocation of its hash (by reference: never the token or the hash) with
// the client's address; the replica that answered refuses the token from
// the moment it answers, the previous token keeps its grace, and the audit
// log says who, from where, and what came of it.
func TestRevokeTheCurrentToken(t *testing.T) {
	f := newRevokeFixture(t)
	w := post(f.rv, "192.0.2.7", "application/json", tokenBody(f.tokens["current"]))
	if w.Code != http.StatusAccepted {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	leaks := f.web().Status.Verification.LeakRevocations
	if len(leaks) != 1 || leaks[0].Token != lifecycle.HashRef(f.hash("current")) || leaks[0].Client != "192.0.2.7" || !leaks[0].RequestedAt.Time.Equal(now.Truncate(time.Second)) {
		t.Fatalf("leakRevocations %+v", leaks)
	}
	if _, v := f.ix.Lookup(f.tokens["current"], f.clk.Now()); v != Revoked {
		t.Fatalf("right after the answer the token is %s, want revoked", v)
	}
	if _, v := f.ix.Lookup(f.tokens["previous"], f.clk.Now()); v != Valid {
		t.Fatalf("the previous token is %s", v)
	}
	recs := f.records()
	if len(recs) != 1 {
		t.Fatalf("audit records %q", recs)
	}
	for _, want := range []string{`"endpoint":"revoke"`, `"result":"revoked"`, `"namespace":"team-a"`, `"name":"web"`, `"client":"192.0.2.7"`} {
		if !strings.Contains(recs[0], want) {
			t.Errorf("audit record %s lacks %s", recs[0], want)
		}
	}
	for _, secret := range []string{f.tokens["current"], f.hash("current"), f.tokens["current"][:20]} {
		if strings.Contains(recs[0], secret) || strings.Contains(w.Body.String(), secret) {
			t.Fatal("the audit record or the answer carries the token or its hash")
		}
	}
}

// TestRevokeAnswersUniformly: whatever was presented (the current token,
// one in its grace, an expired, unknown, already revoked or malformed
// one), the answer is the same: nothing tells a caller whether it held a
// valid token. Only a valid token is acted on, once: a request repeated
// writes nothing more, and a dead token is left as it is.
func TestRevokeAnswersUniformly(t *testing.T) {
	f := newRevokeFixture(t)
	var first *httptest.ResponseRecorder
	for i, tok := range []string{f.tokens["current"], f.tokens["previous"], f.tokens["expired"], mustToken(), f.tokens["current"], "not-a-token", ""} {
		w := post(f.rv, fmt.Sprintf("192.0.2.%d", i+1), "application/json", tokenBody(tok))
		if first == nil {
			first = w
		}
		if w.Code != first.Code || w.Body.String() != first.Body.String() || w.Header().Get("Content-Type") != first.Header().Get("Content-Type") {
			t.Errorf("presenting #%d: %d %q, want %d %q", i, w.Code, w.Body, first.Code, first.Body)
		}
	}
	if first.Code != http.StatusAccepted {
		t.Fatalf("answer %d", first.Code)
	}
	if f.patches != 2 {
		t.Fatalf("%d status writes, want 2 (the current token, the previous one)", f.patches)
	}
	leaks := f.web().Status.Verification.LeakRevocations
	if len(leaks) != 2 || leaks[1].Token != lifecycle.HashRef(f.hash("previous")) {
		t.Fatalf("leakRevocations %+v", leaks)
	}
	var gone tokensv1alpha1.ApiToken
	_ = f.c.Get(context.Background(), keyOf("team-a", "gone"), &gone)
	if gone.Status.Verification.LeakRevocations != nil {
		t.Fatal("an expired token's request was recorded")
	}
}

// TestRevokeRefusesWhatIsNotARequest: only a POST of a JSON object
// {"token": "..."} of a bounded size is read; a body may not name the
// client (only an authenticated replica forwarding a request does).
func TestRevokeRefusesWhatIsNotARequest(t *testing.T) {
	f := newRevokeFixture(t)
	get := httptest.NewRequest(http.MethodGet, RevokePath, nil)
	w := httptest.NewRecorder()
	f.rv.ServeHTTP(w, get)
	if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != http.MethodPost {
		t.Errorf("GET: %d", w.Code)
	}
	for name, c := range map[string]struct {
		contentType, body string
		code              int
	}{
		"a form":          {"application/x-www-form-urlencoded", "token=" + f.tokens["current"], http.StatusUnsupportedMediaType},
		"no content type": {"", tokenBody(f.tokens["current"]), http.StatusUnsupportedMediaType},
		"not JSON":        {"application/json", "token", http.StatusBadRequest},
		"no token field":  {"application/json", `{}`, http.StatusBadRequest},
		"unknown fields":  {"application/json", `{"token":"x","namespace":"team-a"}`, http.StatusBadRequest},
		"a client named":  {"application/json", `{"token":"x","client":"203.0.113.1"}`, http.StatusBadRequest},
		"two objects":     {"application/json", tokenBody("x") + tokenBody("y"), http.StatusBadRequest},
		// What a WAF in front reads must be what is revoked: the one key,
		// spelt as documented, once.
		"token named twice":   {"application/json", `{"token":"x","token":` + strconv.Quote(f.tokens["current"]) + `}`, http.StatusBadRequest},
		"TOKEN":               {"application/json", `{"TOKEN":` + strconv.Quote(f.tokens["current"]) + `}`, http.StatusBadRequest},
		"Token":               {"application/json", `{"Token":` + strconv.Quote(f.tokens["current"]) + `}`, http.StatusBadRequest},
		"too large":           {"application/json", `{"token":"` + strings.Repeat("a", maxRevokeBody) + `"}`, http.StatusRequestEntityTooLarge},
		"charset is accepted": {"application/json; charset=utf-8", tokenBody("x"), http.StatusAccepted},
	} {
		if w := post(f.rv, "192.0.2.1", c.contentType, c.body); w.Code != c.code {
			t.Errorf("%s: %d, want %d", name, w.Code, c.code)
		}
	}
	if f.patches != 0 {
		t.Fatalf("%d status writes", f.patches)
	}
}

// TestRevokeRateLimitedPerClient: one address gets revokeBurst requests,
// then 429 with Retry-After until its bucket refills (the fake clock);
// another address is not held back by it. The buckets held stay bounded
// however many addresses ask.
func TestRevokeRateLimitedPerClient(t *testing.T) {
	f := newRevokeFixture(t)
	for i := range revokeBurst {
		if w := post(f.rv, "198.51.100.1", "application/json", tokenBody(mustToken())); w.Code != http.StatusAccepted {
			t.Fatalf("request %d: %d", i, w.Code)
		}
	}
	w := post(f.rv, "198.51.100.1", "application/json", tokenBody(f.tokens["current"]))
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
		t.Fatalf("past the burst: %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	if f.patches != 0 {
		t.Fatal("a request past the limit was acted on")
	}
	if w := post(f.rv, "198.51.100.2", "application/json", tokenBody(mustToken())); w.Code != http.StatusAccepted {
		t.Fatalf("another address: %d", w.Code)
	}
	secs, _ := strconv.Atoi(w.Header().Get("Retry-After"))
	f.clk.Step(time.Duration(secs) * time.Second)
	if w := post(f.rv, "198.51.100.1", "application/json", tokenBody(f.tokens["current"])); w.Code != http.StatusAccepted || f.patches != 1 {
		t.Fatalf("after Retry-After: %d, %d writes", w.Code, f.patches)
	}
	for i := range maxClients + 10 {
		post(f.rv, fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), "application/json", tokenBody("x"))
	}
	if n := f.rv.clients(); n > maxClients {
		t.Fatalf("%d buckets held", n)
	}
}

// TestRevokeForwardedByAnAuthOnlyReplica: an auth-only replica, which may
// not write status, forwards the request (with the client's address) to
// an operator replica, authenticated with its ServiceAccount token like a
// usage report; the operator replica records it. A forwarded request from
// anyone else is refused, and when no operator replica answers, the
// auth-only replica answers 503 (the caller retries): it never says
// "revoked" for a request that was not recorded.
func TestRevokeForwardedByAnAuthOnlyReplica(t *testing.T) {
	f := newRevokeFixture(t)
	op := httptest.NewServer(f.rv)
	defer op.Close()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(reporterToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	auth := &Revoker{Index: f.ix, Clock: f.clk, Audit: NewAuditLog(nil), Forward: &RevokeForwarder{URL: op.URL + RevokePath, TokenFile: tokenFile, Client: op.Client()}}
	if w := post(auth, "192.0.2.9", "application/json", tokenBody(f.tokens["current"])); w.Code != http.StatusAccepted {
		t.Fatalf("forwarded: %d %s", w.Code, w.Body)
	}
	leaks := f.web().Status.Verification.LeakRevocations
	if len(leaks) != 1 || leaks[0].Client != "192.0.2.9" {
		t.Fatalf("leakRevocations %+v, want one from the client, not the replica", leaks)
	}

	forwarded := `{"token":` + strconv.Quote(f.tokens["previous"]) + `,"client":"203.0.113.5"}`
	for name, c := range map[string]struct {
		bearer string
		code   int
	}{
		"another ServiceAccount":     {otherSAToken, http.StatusForbidden},
		"not a ServiceAccount token": {f.tokens["previous"], http.StatusUnauthorized},
		"an unknown bearer":          {randomJWT(t), http.StatusUnauthorized},
	} {
		if w := post(f.rv, "192.0.2.10", "application/json", forwarded, "Authorization", "Bearer "+c.bearer); w.Code != c.code {
			t.Errorf("%s: %d, want %d", name, w.Code, c.code)
		}
	}
	if n := len(f.web().Status.Verification.LeakRevocations); n != 1 {
		t.Fatalf("a refused forward was recorded: %d requests", n)
	}

	op.Close()
	w := post(auth, "192.0.2.9", "application/json", tokenBody(f.tokens["previous"]))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("operator replicas unreachable: %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	var body map[string]string
	if json.Unmarshal(w.Body.Bytes(), &body) != nil || body["message"] == "" {
		t.Fatalf("body %q", w.Body)
	}
	var recs []string
	for len(auth.Audit.ch) > 0 {
		r := <-auth.Audit.ch
		recs = append(recs, string(r.appendJSON(nil)))
	}
	if len(recs) != 2 || !strings.Contains(recs[0], `"result":"forwarded","status":202,"namespace":"team-a","name":"web"`) ||
		!strings.Contains(recs[1], `"result":"unavailable","status":503`) || !strings.Contains(recs[1], `"client":"192.0.2.9"`) {
		t.Fatalf("the forwarding replica's audit records: %q", recs)
	}
}

// TestRevokeURL: requests are forwarded beside the usage reports.
func TestRevokeURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://apitoken-operator.apitoken-system.svc:8082/v1/usage": "https://apitoken-operator.apitoken-system.svc:8082/v1/revoke",
		"https://op.example:8082/prefix/v1/usage?x=1":                 "https://op.example:8082/prefix/v1/revoke",
	} {
		if got := RevokeURL(in); got != want {
			t.Errorf("RevokeURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestStatusAddress: what the status records of a client's address fits
// the schema (an IP address, at most 64 characters).
func TestStatusAddress(t *testing.T) {
	for in, want := range map[string]string{"192.0.2.7": "192.0.2.7", "fe80::1%eth0": "fe80::1", "2001:db8::1": "2001:db8::1", "@": "", "": ""} {
		if got := statusAddress(in); got != want {
			t.Errorf("statusAddress(%q) = %q, want %q", in, got, want)
		}
	}
}
