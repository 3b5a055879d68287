package authserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/proxytest"
)

const labelPrefix = proxytest.IdentityLabelPrefix

// TestIdentityLabels: which labels are identity labels, under which
// header, and which are left out (what a tenant might write).
func TestIdentityLabels(t *testing.T) {
	cases := []struct {
		name   string
		prefix string
		labels map[string]string
		want   []string // Header=value, in order
	}{
		{"off", "", map[string]string{labelPrefix + "tier": "gold"}, nil},
		{"one", labelPrefix, map[string]string{labelPrefix + "tier": "gold", "tier": "x", "app.kubernetes.io/name": "shop"}, []string{"X-ApiToken-Tier=gold"}},
		{"words title-cased", labelPrefix, map[string]string{labelPrefix + "rate-limit-class": "a1", labelPrefix + "2fa": "on"}, []string{"X-ApiToken-2fa=on", "X-ApiToken-Rate-Limit-Class=a1"}},
		{"another prefix only", "limits.example.com/", map[string]string{labelPrefix + "tier": "gold", "limits.example.com/tier": "silver"}, []string{"X-ApiToken-Tier=silver"}},
		{"a prefix is matched whole", labelPrefix, map[string]string{"xtokens.apitoken.dev/tier": "gold", "tokens.apitoken.dev.evil/tier": "gold"}, nil},
		{"reserved names never replace the identity", labelPrefix, map[string]string{
			labelPrefix + "name": "full", labelPrefix + "namespace": "kube-system", labelPrefix + "type": "full-access",
			labelPrefix + "scopes": "*:*", labelPrefix + "user": "admin", labelPrefix + "uid": "1", labelPrefix + "audience": "admin",
		}, nil},
		{"names that are no header word", labelPrefix, map[string]string{
			labelPrefix + "Tier": "upper", labelPrefix + "TIER": "upper", labelPrefix + "rate_limit": "underscore", labelPrefix + "a.b": "dot",
			labelPrefix + "-a": "dash", labelPrefix + "a-": "dash", labelPrefix + "a--b": "dashes", labelPrefix: "empty",
			labelPrefix + "x/y": "slash", labelPrefix + strings.Repeat("a", 64): "long",
		}, nil},
		{"values no label may hold", labelPrefix, map[string]string{
			labelPrefix + "crlf": "gold\r\nX-Auth-Request-User: apitoken:kube-system:admin", labelPrefix + "lf": "a\nb",
			labelPrefix + "utf8": "gölд", labelPrefix + "space": "a b", labelPrefix + "huge": strings.Repeat("a", 64),
			labelPrefix + "comma": "a,b", labelPrefix + "nul": "a\x00",
		}, nil},
		{"an empty value is a value", labelPrefix, map[string]string{labelPrefix + "tier": ""}, []string{"X-ApiToken-Tier="}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, l := range identityLabels(c.prefix, c.labels) {
				got = append(got, l.Header+"="+l.Value())
				if l.Key != c.prefix+l.Name || http.CanonicalHeaderKey(l.Header) != l.canonical {
					t.Fatalf("label %+v", l)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("identity labels %q, want %q", got, c.want)
			}
		})
	}
	many := map[string]string{}
	for i := range 100 {
		many[fmt.Sprintf("%sl%03d", labelPrefix, i)] = "v"
	}
	ls := identityLabels(labelPrefix, many)
	if len(ls) != MaxIdentityLabels || ls[0].Name != "l000" || ls[MaxIdentityLabels-1].Name != "l007" || cap(ls) != MaxIdentityLabels {
		t.Fatalf("100 labels: kept %d (%v), want the first %d by key", len(ls), ls, MaxIdentityLabels)
	}
}

func TestValidIdentityLabelPrefix(t *testing.T) {
	for p, ok := range map[string]bool{
		"": true, "tokens.apitoken.dev/": true, "example.com/": true, "limits/": true,
		"tokens.apitoken.dev": false, "/": false, "Tokens.apitoken.dev/": false, "tokens.apitoken.dev/tier-": false, "a_b/": false, "a//": false,
	} {
		if got := ValidIdentityLabelPrefix(p) == ""; got != ok {
			t.Errorf("ValidIdentityLabelPrefix(%q) accepts: %v, want %v", p, got, ok)
		}
	}
}

// TestIdentityLabelsAtEveryDoor: a token's identity labels are headers of
// a 200 at every HTTP door, headers and dynamic metadata of a gRPC OK,
// and TokenReview extras; a token without any gets none, and nothing of a
// refusal carries them.
func TestIdentityLabelsAtEveryDoor(t *testing.T) {
	f := newFixture()
	tiered, reader := "Bearer "+f.tokens["tiered"], "Bearer "+f.tokens["reader"]
	doors := []req{
		{path: "/v1/authorize?scope=articles:read"},
		{path: "/v1/auth-request/-", headers: [][2]string{{"X-Original-Method", "GET"}, {"X-Original-URL", "/api/articles/1"}}},
		{path: "/v1/forward-auth/-", headers: [][2]string{{"X-Forwarded-Method", "GET"}, {"X-Forwarded-Uri", "/api/articles/1"}}},
		{path: "/v1/ext-authz/-/api/articles/1"},
	}
	for _, d := range doors {
		for tok, want := range map[string][]string{tiered: {"gold"}, reader: nil} {
			r := d
			r.headers = append([][2]string{{"Authorization", tok}}, d.headers...)
			w := f.do(r)
			if w.Code != 200 || fmt.Sprint(w.Header().Values("X-ApiToken-Tier")) != fmt.Sprint(want) || w.Header().Get("X-ApiToken-Name") == "full" {
				t.Fatalf("%s: %d, X-ApiToken-Tier %q (want %q), X-ApiToken-Name %q", d.path, w.Code, w.Header().Values("X-ApiToken-Tier"), want, w.Header().Get("X-ApiToken-Name"))
			}
			for k := range w.Header() {
				if isIdentityHeaderSpace(k) && k != "X-Apitoken-Tier" {
					t.Fatalf("%s: a 200 carries %s", d.path, k)
				}
			}
		}
	}
	// A refusal of the tiered token (a delete it may not make) carries no label.
	for _, d := range []req{
		{path: "/v1/authorize?scope=articles:delete"},
		{path: "/v1/auth-request/-", headers: [][2]string{{"X-Original-Method", "DELETE"}, {"X-Original-URL", "/api/articles/1"}}},
		{path: "/v1/forward-auth/-", headers: [][2]string{{"X-Forwarded-Method", "DELETE"}, {"X-Forwarded-Uri", "/api/articles/1"}}},
		{path: "/v1/ext-authz/-/api/articles/1", method: http.MethodDelete},
	} {
		d.headers = append(d.headers, [2]string{"Authorization", tiered})
		if w := f.do(d); w.Code != 403 || len(w.Header().Values("X-ApiToken-Tier")) != 0 {
			t.Fatalf("%s: %d with X-ApiToken-Tier %q", d.path, w.Code, w.Header().Values("X-ApiToken-Tier"))
		}
	}

	client, _, _ := startGRPC(t, f.h)
	resp, err := client.Check(context.Background(), checkRequest("GET", "/api/articles/1", map[string]string{"authorization": tiered}, nil))
	if err != nil || codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		t.Fatal(resp, err)
	}
	if v, n := headerOf(resp.GetOkResponse().GetHeaders(), "X-ApiToken-Tier"); v != "gold" || n != 1 {
		t.Fatalf("gRPC OK: X-ApiToken-Tier %q (%d)", v, n)
	}
	if md := resp.GetDynamicMetadata().AsMap(); fmt.Sprint(md) != "map[tier:gold]" {
		t.Fatalf("gRPC OK: dynamic metadata %v, want tier: gold", md)
	}
	resp, err = client.Check(context.Background(), checkRequest("GET", "/api/articles/1", map[string]string{"authorization": reader}, nil))
	if err != nil || resp.GetDynamicMetadata() != nil || len(resp.GetOkResponse().GetHeaders()) != len(IdentityHeaders) {
		t.Fatalf("gRPC OK of a token without labels: %v %v", resp, err)
	}
	resp, _ = client.Check(context.Background(), checkRequest("DELETE", "/api/articles/1", map[string]string{"authorization": tiered}, nil))
	if resp.GetDynamicMetadata() != nil || resp.GetOkResponse() != nil {
		t.Fatalf("gRPC denial carries the labels: %v", resp)
	}

	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, TokenReviewPath, strings.NewReader(reviewBody("v1", f.tokens["tiered"], "content-api")))
	r.Header.Set("Content-Type", "application/json")
	f.h.ServeTokenReview(w, r)
	var review struct {
		Status struct {
			User struct {
				Extra map[string][]string `json:"extra"`
			} `json:"user"`
		} `json:"status"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &review); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(review.Status.User.Extra); got != "map[tokens.apitoken.dev/audience:[content-api] tokens.apitoken.dev/tier:[gold]]" {
		t.Fatalf("TokenReview extra %s", got)
	}
}

// TestClientCannotSendIdentityLabelHeaders: an X-ApiToken-* header other
// than the five every 200 sets is refused at every door with headers, in
// any case and in its underscore spelling, whether or not the token (or
// any token) has such a label: Envoy copies only what the answer carries,
// so a client's copy would otherwise reach the upstream.
func TestClientCannotSendIdentityLabelHeaders(t *testing.T) {
	f := newFixture()
	f.ix.WithIdentityLabels("")
	tok := "Bearer " + f.tokens["reader"]
	for _, h := range [][2]string{{"X-ApiToken-Tier", "gold"}, {"x-apitoken-tier", "gold"}, {"X-APITOKEN-PLAN", "x"}, {"X_ApiToken_Tier", "gold"}, {"x_apitoken_rate_limit", "x"}} {
		for _, d := range []req{
			{path: "/v1/auth-request/-", headers: [][2]string{{"X-Original-Method", "GET"}, {"X-Original-URL", "/api/articles/1"}}},
			{path: "/v1/forward-auth/-", headers: [][2]string{{"X-Forwarded-Method", "GET"}, {"X-Forwarded-Uri", "/api/articles/1"}}},
			{path: "/v1/ext-authz/-/api/articles/1"},
		} {
			d.headers = append(d.headers, [2]string{"Authorization", tok}, h)
			w := f.do(d)
			if w.Code != 400 && w.Code != 403 || !strings.Contains(w.Body.String(), "is refused") {
				t.Fatalf("%s with %s: %d %q, want refused", d.path, h[0], w.Code, w.Body.String())
			}
		}
		client, _, _ := startGRPC(t, f.h)
		resp, err := client.Check(context.Background(), checkRequest("GET", "/api/articles/1", map[string]string{"authorization": tok, strings.ToLower(h[0]): h[1]}, nil))
		if err != nil || codes.Code(resp.GetStatus().GetCode()) != codes.InvalidArgument {
			t.Fatalf("gRPC with %s: %v %v", h[0], resp, err)
		}
	}
	// The five stay allowed (every 200 overwrites them), and so does a
	// header that only starts like them.
	for _, h := range [][2]string{{"X-ApiToken-Name", "full"}, {"X-ApiTokens", "x"}, {"X-ApiToken", "x"}} {
		w := f.do(req{path: "/v1/ext-authz/-/api/articles/1", headers: [][2]string{{"Authorization", tok}, h}})
		if w.Code != 200 || w.Header().Get("X-ApiToken-Name") != "reader" {
			t.Fatalf("with %s: %d %s", h[0], w.Code, w.Header().Get("X-ApiToken-Name"))
		}
	}
}

// TestIdentityLabelsFollowTheApiToken: a label changed, added or removed
// on the ApiToken changes the header with the next Upsert, for the same
// token; an auth-only replica's view keeps the labels under the prefix
// only; tokens with the same labels share one grant, and a token without
// labels shares the grant it had before the feature.
func TestIdentityLabelsFollowTheApiToken(t *testing.T) {
	f := newFixture()
	tok := mustToken()
	at := &tokensv1alpha1.ApiToken{
		ObjectMeta: metav1.ObjectMeta{Name: "moving", Namespace: "team-a", UID: types.UID("uid-moving"), Labels: map[string]string{labelPrefix + "tier": "gold"}},
		Spec:       tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly},
		Status:     tokensv1alpha1.ApiTokenStatus{Verification: &tokensv1alpha1.Verification{Hash: f.hasher.Hash(tok).Encode()}},
	}
	tier := func() string {
		w := f.do(req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer(tok)}})
		if w.Code != 200 {
			t.Fatal(w.Code)
		}
		return strings.Join(w.Header().Values("X-ApiToken-Tier"), ",")
	}
	grants := f.ix.Grants()
	for _, step := range []struct {
		labels map[string]string
		want   string
	}{
		{map[string]string{labelPrefix + "tier": "gold"}, "gold"},
		{map[string]string{labelPrefix + "tier": "silver", "team": "a"}, "silver"},
		{map[string]string{"team": "a"}, ""},
		{map[string]string{labelPrefix + "tier": "gold", labelPrefix + "name": "x"}, "gold"},
	} {
		at.Labels = step.labels
		f.ix.Upsert(IndexView(at, labelPrefix))
		if got := tier(); got != step.want {
			t.Fatalf("labels %v: X-ApiToken-Tier %q, want %q", step.labels, got, step.want)
		}
	}
	// "moving" with tier gold shares the grant of "tiered" (read-only, tier
	// gold): the labels left out count for nothing.
	if got := f.ix.Grants(); got != grants {
		t.Fatalf("%d grants, want %d", got, grants)
	}
	view := IndexView(&tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{labelPrefix + "tier": "gold", "team": "a", "app.kubernetes.io/name": "x"}}}, labelPrefix)
	if fmt.Sprint(view.Labels) != "map[tokens.apitoken.dev/tier:gold]" {
		t.Fatalf("the auth-only view keeps %v", view.Labels)
	}
	if view := IndexView(&tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{labelPrefix + "tier": "gold"}}}, ""); view.Labels != nil {
		t.Fatalf("without a prefix the view keeps %v", view.Labels)
	}
}

// BenchmarkIdentityLabels is one allowed forward-auth request and one gRPC
// check of a token without identity labels and of one with a label (what
// a label costs a 200).
func BenchmarkIdentityLabels(b *testing.B) {
	f := newFixture()
	mux := (&Server{Handler: f.h}).Mux()
	x := &ExtAuthz{Handler: f.h}
	for _, name := range []string{"reader", "tiered"} {
		b.Run("forward-auth/"+name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, "/v1/forward-auth/namespace=team-a", nil)
			r.Header["Authorization"] = []string{"Bearer " + f.tokens[name]}
			r.Header["X-Forwarded-Method"], r.Header["X-Forwarded-Uri"] = []string{"GET"}, []string{"/api/articles/7"}
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				mux.ServeHTTP(w, r)
				if w.Code != 200 {
					b.Fatal(w.Code)
				}
			}
		})
		b.Run("grpc-ext-authz/"+name, func(b *testing.B) {
			cr := checkRequest("GET", "/api/articles/7", map[string]string{"authorization": "Bearer " + f.tokens[name]}, map[string]string{"namespace": "team-a"})
			b.ReportAllocs()
			for b.Loop() {
				if resp, err := x.Check(context.Background(), cr); err != nil || resp.GetStatus().GetCode() != int32(codes.OK) {
					b.Fatal(resp, err)
				}
			}
		})
	}
}
