package authserver

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
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
	w, out := f.review(t, reviewBody("v1", f.tokens["writer"]), "application/json; charset=utf-8")
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

	_, out = f.review(t, reviewBody("v1beta1", f.tokens["reader"]), "application/json")
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
