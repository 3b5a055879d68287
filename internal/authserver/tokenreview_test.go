package authserver

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

func (f *fixture) review(t *testing.T, body, contentType string) (*httptest.ResponseRecorder, authnv1.TokenReview) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, TokenReviewPath, strings.NewReader(body))
	r.Header.Set("Content-Type", contentType)
	w := httptest.NewRecorder()
	f.h.ServeTokenReview(w, r)
	var out authnv1.TokenReview
	if w.Code == 200 {
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			t.Fatal(err)
		}
	}
	return w, out
}

func reviewBody(version, tok string, audiences ...string) string {
	b, _ := json.Marshal(map[string]any{
		"apiVersion": "authentication.k8s.io/" + version, "kind": "TokenReview",
		"spec": map[string]any{"token": tok, "audiences": audiences},
	})
	return string(b)
}

func TestTokenReview(t *testing.T) {
	f := newFixture()
	w, out := f.review(t, reviewBody("v1", f.tokens["writer"], "content-api"), "application/json; charset=utf-8")
	if w.Code != 200 || !out.Status.Authenticated || out.Status.User.Username != "apitoken:team-b:writer" || out.Status.User.UID != "uid-writer" {
		t.Fatalf("review = %d %+v", w.Code, out.Status)
	}
	if out.APIVersion != "authentication.k8s.io/v1" || out.Kind != "TokenReview" {
		t.Fatalf("answered as %s %s", out.APIVersion, out.Kind)
	}
	wantGroups := []string{"apitoken:team-b:authenticated", "apitoken:team-b:type:custom", "apitoken:team-b:scope:articles:read", "apitoken:team-b:scope:orders:*"}
	if strings.Join(out.Status.User.Groups, " ") != strings.Join(wantGroups, " ") {
		t.Fatalf("groups = %v", out.Status.User.Groups)
	}

	_, out = f.review(t, reviewBody("v1beta1", f.tokens["reader"], "content-api"), "application/json")
	if out.APIVersion != "authentication.k8s.io/v1beta1" || !out.Status.Authenticated {
		t.Fatalf("v1beta1 = %s %+v", out.APIVersion, out.Status)
	}
	_, out = f.review(t, reviewBody("v1", f.tokens["reader"], "content-api", "other"), "application/json")
	if !out.Status.Authenticated || len(out.Status.Audiences) != 1 || out.Status.Audiences[0] != "content-api" {
		t.Fatalf("audiences = %+v", out.Status)
	}
	_, out = f.review(t, reviewBody("v1", f.tokens["reader"], "admin"), "application/json")
	if out.Status.Authenticated || !strings.Contains(out.Status.Error, "audience") {
		t.Fatalf("wrong audience accepted: %+v", out.Status)
	}
	// The API server asks with its own audiences (its service-account
	// issuer): a kubernetes token is valid there, answered with empty
	// status.audiences; other tokens are not.
	issuer := "https://kubernetes.default.svc.cluster.local"
	f.h.Options.KubeAPIAudiences = []string{issuer}
	_, out = f.review(t, reviewBody("v1", f.tokens["kube"], issuer), "application/json")
	if !out.Status.Authenticated || len(out.Status.Audiences) != 0 || out.Status.User.Username != "apitoken:team-a:kube" {
		t.Fatalf("kubernetes token for the API server = %+v", out.Status)
	}
	_, out = f.review(t, reviewBody("v1", f.tokens["reader"], issuer), "application/json")
	if out.Status.Authenticated {
		t.Fatalf("content-api token accepted for the API server: %+v", out.Status)
	}
	// Another TokenReview client asking for its own audience must not be
	// told "valid for the API server's audiences" (an empty
	// status.audiences, which k8s.io/apiserver's authenticator accepts).
	for _, aud := range []string{"content-api", "my-service"} {
		_, out = f.review(t, reviewBody("v1", f.tokens["kube"], aud), "application/json")
		if out.Status.Authenticated {
			t.Fatalf("kubernetes token accepted for audience %s: %+v", aud, out.Status)
		}
	}
	f.h.Options.KubeAPIAudiences = []string{"https://issuer.example"}
	_, out = f.review(t, reviewBody("v1", f.tokens["kube"], issuer), "application/json")
	if out.Status.Authenticated {
		t.Fatalf("kubernetes token accepted for an audience outside --kube-api-audiences: %+v", out.Status)
	}
	_, out = f.review(t, reviewBody("v1", f.tokens["kube"], "https://issuer.example"), "application/json")
	if !out.Status.Authenticated {
		t.Fatalf("kubernetes token refused for a --kube-api-audiences audience: %+v", out.Status)
	}
	f.h.Options.KubeAPIAudiences = nil
	for name, want := range map[string]string{"expired": "expired", "revoked": "revoked"} {
		_, out = f.review(t, reviewBody("v1", f.tokens[name]), "application/json")
		if out.Status.Authenticated || out.Status.Error != "invalid token: "+want {
			t.Fatalf("%s: %+v", name, out.Status)
		}
	}
	_, out = f.review(t, reviewBody("v1", "atk_x"), "application/json")
	if out.Status.Authenticated || out.Status.Error != "invalid token: malformed" {
		t.Fatalf("malformed: %+v", out.Status)
	}

	for _, bad := range []struct {
		body, ct string
		code     int
	}{
		{reviewBody("v1", f.tokens["reader"]), "text/plain", 415},
		{"{", "application/json", 400},
		{`{"apiVersion":"v1","kind":"Pod"}`, "application/json", 400},
		{strings.Repeat(" ", maxReviewBytes+1), "application/json", 400},
	} {
		if w, _ := f.review(t, bad.body, bad.ct); w.Code != bad.code {
			t.Fatalf("body %.20q: code %d, want %d", bad.body, w.Code, bad.code)
		}
	}
	r := httptest.NewRequest(http.MethodGet, TokenReviewPath, nil)
	w = httptest.NewRecorder()
	f.h.ServeTokenReview(w, r)
	if w.Code != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d", w.Code)
	}
}

// TestTokenReviewTheAPIServersAudiences: a review that names no audience
// asks for the API server's own (the TokenReview API), so only a
// kubernetes token passes it; and an audience that shares a name with one
// of the API server's (k3s runs with --api-audiences=<issuer>,k3s, RKE2
// with <issuer>,rke2) is one of the API server's: only a kubernetes token
// is valid for it, never a token whose own audience has that name.
func TestTokenReviewTheAPIServersAudiences(t *testing.T) {
	issuer := "https://kubernetes.default.svc.cluster.local"
	for distribution, audiences := range map[string][]string{"k3s": {issuer, "k3s"}, "rke2": {issuer, "rke2"}} {
		t.Run(distribution, func(t *testing.T) {
			f := newFixture()
			f.h.Options.KubeAPIAudiences = audiences
			named := mustToken()
			future := metav1.NewTime(now.Add(time.Hour))
			f.ix.Upsert(&tokensv1alpha1.ApiToken{
				ObjectMeta: metav1.ObjectMeta{Name: "named-" + distribution, Namespace: "team-a", UID: "uid-named"},
				Spec:       tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.FullAccess, Audience: tokensv1alpha1.Audience(distribution)},
				Status:     tokensv1alpha1.ApiTokenStatus{ExpiresAt: &future, Verification: &tokensv1alpha1.Verification{Hash: f.hasher.Hash(named).Encode()}},
			})
			cases := []struct {
				name      string
				tok       string
				audiences []string
				ok        bool
			}{
				{"no audiences: a content-api token", f.tokens["reader"], nil, false},
				{"no audiences: an admin token", f.tokens["admin"], nil, false},
				{"no audiences: a token of audience " + distribution, named, nil, false},
				{"no audiences: a kubernetes token", f.tokens["kube"], nil, true},
				{"the API server's audiences: a token of audience " + distribution, named, audiences, false},
				{"audience " + distribution + ": a token of that audience", named, []string{distribution}, false},
				{"audience " + distribution + ": a kubernetes token", f.tokens["kube"], []string{distribution}, true},
				{"the issuer: a kubernetes token", f.tokens["kube"], []string{issuer}, true},
				{"content-api, named: a content-api token", f.tokens["reader"], []string{"content-api"}, true},
				{"content-api and " + distribution + ": a content-api token", f.tokens["reader"], []string{"content-api", distribution}, true},
			}
			for _, c := range cases {
				_, out := f.review(t, reviewBody("v1", c.tok, c.audiences...), "application/json")
				if out.Status.Authenticated != c.ok {
					t.Errorf("%s: authenticated = %v, want %v (%+v)", c.name, out.Status.Authenticated, c.ok, out.Status)
					continue
				}
				for _, a := range out.Status.Audiences {
					if slices.Contains(audiences, a) {
						t.Errorf("%s: answered valid for the API server's audience %s by name", c.name, a)
					}
				}
				if c.ok && c.tok == f.tokens["kube"] && len(out.Status.Audiences) != 0 {
					t.Errorf("%s: a kubernetes token is answered with status.audiences %v, want none (valid for the API server's)", c.name, out.Status.Audiences)
				}
				if !c.ok && c.tok != f.tokens["kube"] && !strings.Contains(out.Status.Error, "audience") {
					t.Errorf("%s: refused without naming the audience: %q", c.name, out.Status.Error)
				}
			}
		})
	}
}
