package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/grpc/codes"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
)

var _ = Describe("The auth endpoint fed by the operator", func() {
	var (
		ctx context.Context
		ns  string
	)
	BeforeEach(func() {
		ctx = context.Background()
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "auth-"}}
		Expect(k8s.Create(ctx, n)).To(Succeed())
		ns = n.Name
	})

	// issue creates an ApiToken and returns the token its Secret holds once
	// the endpoint accepts it.
	issue := func(name string, spec tokensv1alpha1.ApiTokenSpec) (types.NamespacedName, string) {
		at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: spec}
		Expect(k8s.Create(ctx, at)).To(Succeed())
		key := types.NamespacedName{Namespace: ns, Name: name}
		var tok string
		Eventually(func(g Gomega) {
			tok = tokenIn(g, ns, name+"-token")
			g.Expect(tok).NotTo(BeEmpty())
			g.Expect(status(authURL+verifyPath, tok)).To(Equal(200))
		}).Should(Succeed())
		return key, tok
	}
	update := func(key types.NamespacedName, mutate func(*tokensv1alpha1.ApiToken)) {
		Eventually(func(g Gomega) {
			var at tokensv1alpha1.ApiToken
			g.Expect(k8s.Get(ctx, key, &at)).To(Succeed())
			mutate(&at)
			g.Expect(k8s.Update(ctx, &at)).To(Succeed())
		}).Should(Succeed())
	}
	// refusedWithin asserts that tok is refused within a second of the change.
	refusedWithin := func(tok string) {
		start := time.Now()
		Eventually(func() int { return status(authURL+verifyPath, tok) }, time.Second, 10*time.Millisecond).Should(Equal(401))
		AddReportEntry("refused after", time.Since(start).String())
	}

	It("refuses a regenerated token within a second and accepts the new one", func() {
		key, old := issue("regen", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"})
		update(key, func(at *tokensv1alpha1.ApiToken) {
			at.Annotations = map[string]string{tokensv1alpha1.RegenerateAnnotation: "now"}
		})
		refusedWithin(old)
		Eventually(func(g Gomega) {
			fresh := tokenIn(g, ns, "regen-token")
			g.Expect(fresh).NotTo(Equal(old))
			g.Expect(status(authURL+verifyPath, fresh)).To(Equal(200))
		}).Should(Succeed())
	})

	It("refuses a revoked token within a second, over HTTP and gRPC ext_authz", func() {
		key, tok := issue("revoke", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"})
		check := func() int32 {
			resp, err := grpcClient.Check(ctx, checkRequest("GET", "/articles/7", map[string]string{"authorization": "Bearer " + tok}, nil))
			Expect(err).NotTo(HaveOccurred())
			return resp.GetStatus().GetCode()
		}
		Expect(check()).To(Equal(int32(codes.OK)))
		update(key, func(at *tokensv1alpha1.ApiToken) { at.Spec.Revoked = true })
		start := time.Now()
		Eventually(check, time.Second, 10*time.Millisecond).Should(Equal(int32(codes.Unauthenticated)))
		AddReportEntry("refused through gRPC after", time.Since(start).String())
		refusedWithin(tok)
	})

	It("answers an ApiToken's identity labels as they change, with the same token, over HTTP, gRPC and TokenReview", func() {
		key, tok := issue("tiered", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"})
		var issuedAt *metav1.Time
		// seen is what each door answers: the HTTP header, the gRPC OK's
		// header and dynamic metadata, the TokenReview extra.
		seen := func(g Gomega) []string {
			req, _ := http.NewRequest(http.MethodGet, authURL+verifyPath, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			g.Expect(err).NotTo(HaveOccurred())
			_ = resp.Body.Close()
			g.Expect(resp.StatusCode).To(Equal(200))
			cr, err := grpcClient.Check(ctx, checkRequest("GET", "/articles/7", map[string]string{"authorization": "Bearer " + tok}, nil))
			g.Expect(err).NotTo(HaveOccurred())
			grpcHeader := ""
			for _, h := range cr.GetOkResponse().GetHeaders() {
				if h.GetHeader().GetKey() == "X-ApiToken-Tier" {
					grpcHeader = h.GetHeader().GetValue()
				}
			}
			review := tokenReview(g, tok)
			return []string{resp.Header.Get("X-ApiToken-Tier"), grpcHeader, cr.GetDynamicMetadata().GetFields()["tier"].GetStringValue(),
				strings.Join(review.Status.User.Extra["tokens.apitoken.dev/tier"], ",")}
		}
		Expect(seen(Default)).To(Equal([]string{"", "", "", ""}))
		for _, tier := range []string{"gold", "silver", ""} {
			update(key, func(at *tokensv1alpha1.ApiToken) {
				issuedAt = at.Status.IssuedAt
				if tier == "" {
					delete(at.Labels, "tokens.apitoken.dev/tier")
					return
				}
				at.Labels = map[string]string{"tokens.apitoken.dev/tier": tier, "tokens.apitoken.dev/name": "admin"}
			})
			start := time.Now()
			Eventually(seen, time.Second, 10*time.Millisecond).Should(Equal([]string{tier, tier, tier, tier}))
			AddReportEntry("tier "+tier+" seen after", time.Since(start).String())
		}
		var at tokensv1alpha1.ApiToken
		Expect(k8s.Get(ctx, key, &at)).To(Succeed())
		Expect(at.Status.IssuedAt).To(Equal(issuedAt), "a label change issued a new token")
		Expect(tokenIn(Default, ns, "tiered-token")).To(Equal(tok))
	})

	It("refuses a deleted token within a second", func() {
		key, tok := issue("delete", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"})
		Expect(k8s.Delete(ctx, &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace}})).To(Succeed())
		refusedWithin(tok)
	})

	It("refuses a Terminating token at once on every endpoint, while a foreign finalizer holds the ApiToken", func() {
		const hold = "example.com/hold"
		key, tok := issue("held", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"})
		update(key, func(at *tokensv1alpha1.ApiToken) { at.Finalizers = append(at.Finalizers, hold) })
		DeferCleanup(func() {
			update(key, func(at *tokensv1alpha1.ApiToken) { at.Finalizers = nil })
		})
		Expect(doors(tok)).To(HaveEach(BeTrue()), "the token does not verify everywhere before the deletion")
		Expect(k8s.Delete(ctx, &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace}})).To(Succeed())
		var at tokensv1alpha1.ApiToken
		Expect(k8s.Get(ctx, key, &at)).To(Succeed())
		Expect(at.DeletionTimestamp).NotTo(BeNil(), "not Terminating: the test does not test")
		start := time.Now()
		Eventually(func() map[string]bool { return doors(tok) }, time.Second, 10*time.Millisecond).Should(HaveEach(BeFalse()))
		AddReportEntry("refused on every endpoint after", time.Since(start).String())
		Consistently(func() map[string]bool { return doors(tok) }, "1s").Should(HaveEach(BeFalse()), "a Terminating token verified again")
	})

	It("accepts the previous token inside its grace window, then refuses it", func() {
		key, old := issue("grace", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d", Rotation: &tokensv1alpha1.Rotation{GracePeriod: "2m"}})
		update(key, func(at *tokensv1alpha1.ApiToken) {
			at.Annotations = map[string]string{tokensv1alpha1.RegenerateAnnotation: "1"}
		})
		Eventually(func(g Gomega) {
			fresh := tokenIn(g, ns, "grace-token")
			g.Expect(fresh).NotTo(Equal(old))
			g.Expect(status(authURL+verifyPath, fresh)).To(Equal(200))
		}).Should(Succeed())
		Consistently(func() int { return status(authURL+verifyPath, old) }, "500ms").Should(Equal(200))
		// The endpoint checks the grace end against its clock at request
		// time: no reconcile is needed for the old token to stop working.
		fakeClock.Step(2 * time.Minute)
		Expect(status(authURL+verifyPath, old)).To(Equal(401))
	})

	It("refuses an expiring token at the instant, before the reconciler runs", func() {
		_, tok := issue("expiring", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "1h"})
		fakeClock.Step(time.Hour)
		Expect(status(authURL+verifyPath, tok)).To(Equal(401))
	})
})

// doors asks every endpoint whether tok is accepted for reading articles:
// the four HTTP doors as their proxies call them, gRPC ext_authz, and a
// TokenReview for the token's audience.
func doors(tok string) map[string]bool {
	get := func(path string, hdr ...string) bool {
		req, _ := http.NewRequest(http.MethodGet, authURL+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		for i := 0; i < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	out := map[string]bool{
		"authorize":    get(verifyPath),
		"auth-request": get(authserver.AuthRequestPath, "X-Original-Method", "GET", "X-Original-URL", "/articles/7"),
		"forward-auth": get(authserver.ForwardAuthPath, "X-Forwarded-Method", "GET", "X-Forwarded-Uri", "/articles/7"),
		"ext-authz":    get(authserver.ExtAuthzPath + "/-/articles/7"),
	}
	resp, err := grpcClient.Check(context.Background(), checkRequest("GET", "/articles/7", map[string]string{"authorization": "Bearer " + tok}, nil))
	out["grpc-ext-authz"] = err == nil && resp.GetStatus().GetCode() == int32(codes.OK)
	body, _ := json.Marshal(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
		"spec": map[string]any{"token": tok, "audiences": []string{"content-api"}}})
	out["tokenreview"] = false
	if r, err := http.Post(authURL+authserver.TokenReviewPath, "application/json", bytes.NewReader(body)); err == nil {
		var review authnv1.TokenReview
		_ = json.NewDecoder(r.Body).Decode(&review)
		_ = r.Body.Close()
		out["tokenreview"] = review.Status.Authenticated
	}
	return out
}

// tokenIn reads the token the Secret ns/name holds, for Eventually.
func tokenIn(g Gomega, ns, name string) string {
	var s corev1.Secret
	g.Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &s)).To(Succeed())
	return string(s.Data["token"])
}

// checkRequest is what Envoy sends for an original request: headers
// lower-cased (the pseudo-headers included), the path with its query (as
// internal/authserver's grpc_test.go sends it).
func checkRequest(method, path string, headers, ext map[string]string) *authv3.CheckRequest {
	hd := map[string]string{":method": method, ":path": path, ":authority": "shop.example"}
	for k, v := range headers {
		hd[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "req-1", Method: method, Path: path, Host: "shop.example", Scheme: "https", Headers: hd,
		}},
		ContextExtensions: ext,
	}}
}

// tokenReview posts a TokenReview of tok for content-api and returns the
// answer.
func tokenReview(g Gomega, tok string) authnv1.TokenReview {
	body, _ := json.Marshal(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
		"spec": map[string]any{"token": tok, "audiences": []string{"content-api"}}})
	r, err := http.Post(authURL+authserver.TokenReviewPath, "application/json", bytes.NewReader(body))
	g.Expect(err).NotTo(HaveOccurred())
	defer r.Body.Close()
	var review authnv1.TokenReview
	g.Expect(json.NewDecoder(r.Body).Decode(&review)).To(Succeed())
	g.Expect(review.Status.Authenticated).To(BeTrue(), review.Status.Error)
	return review
}
