package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	authnv1 "k8s.io/api/authentication/v1"

	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
)

// Issue 28: the refusals that need only the watch. With no reconciler
// running at all (the operator stopped), an auth-only replica refuses a
// token the moment the watch delivers its revocation, its deletion request
// or the instant of its recorded expiry, on every door, while the status
// still records the hash as current. Removing the index's check of
// spec.revoked or deletionTimestamp fails this spec (docs/lifecycle.md
// says which refusals wait for the reconciler).
var _ = Describe("Refusals that need only the watch (no reconciler running)", func() {
	It("refuses a revoked, a Terminating and an expired token on every door of an auth-only replica while no operator runs, and an un-revoke brings nothing back", func() {
		const ns = "e2e-watch"
		kubectl("create", "namespace", ns)
		op := startOperator("watch-operator", true)
		DeferCleanup(op.stop)
		for _, name := range []string{"revoke-me", "delete-me", "expire-me"} {
			_, err := kubectlIn(fmt.Sprintf("apiVersion: tokens.apitoken.dev/v1alpha1\nkind: ApiToken\nmetadata: {name: %s, namespace: %s}\nspec: {type: read-only, duration: 30d}\n", name, ns), "apply", "-f", "-")
			Expect(err).NotTo(HaveOccurred())
		}
		tokens, hashes := map[string]string{}, map[string]string{}
		hashOf := func(name string) string {
			return kubectl("-n", ns, "get", "apitoken", name, "-o", "jsonpath={.status.verification.hash}")
		}
		Eventually(func(g Gomega) {
			for _, name := range []string{"revoke-me", "delete-me", "expire-me"} {
				g.Expect(kubectl("-n", ns, "get", "apitoken", name, "-o", "jsonpath={.status.phase}")).To(Equal("Active"))
				raw, err := base64.StdEncoding.DecodeString(kubectl("-n", ns, "get", "secret", name+"-token", "-o", "jsonpath={.data.token}"))
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(raw).NotTo(BeEmpty())
				tokens[name], hashes[name] = string(raw), hashOf(name)
			}
		}, "60s", "500ms").Should(Succeed())

		grpcPort := freePort()
		auth := startOperatorWith("watch-auth-only", kubeconfig, "--enable-controller=false",
			"--auth-default-namespaces="+ns, fmt.Sprintf("--grpc-auth-bind-address=127.0.0.1:%d", grpcPort))
		DeferCleanup(auth.stop)
		conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", grpcPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(conn.Close)
		doors := watchDoors(auth.authURL, authv3.NewAuthorizationClient(conn))
		for name, tok := range tokens {
			Eventually(func() map[string]bool { return doors(tok) }, "10s", "100ms").Should(HaveEach(BeTrue()), "%s before", name)
		}

		By("stopping the operator: from here on no reconciler acts")
		op.stop()
		Expect(op.killed).To(BeFalse())

		refusedEverywhere := func(name, what string) {
			start := time.Now()
			Eventually(func() map[string]bool { return doors(tokens[name]) }, "2s", "10ms").Should(HaveEach(BeFalse()), "%s: still accepted somewhere", what)
			GinkgoWriter.Printf("%s: refused on every door %s after the change\n", what, time.Since(start).Round(time.Millisecond))
			Expect(hashOf(name) == hashes[name]).To(BeTrue(), "%s: the status changed, so a reconciler acted: the spec does not test the watch alone", what)
		}

		By("a revoke: spec.revoked true")
		kubectl("-n", ns, "patch", "apitoken", "revoke-me", "--type=merge", "-p", `{"spec":{"revoked":true}}`)
		refusedEverywhere("revoke-me", "revoked")
		By("an un-revoke before any reconcile: refused by the API server, and the old token stays refused")
		out, err := kubectlErr("-n", ns, "patch", "apitoken", "revoke-me", "--type=merge", "-p", `{"spec":{"revoked":false}}`)
		Expect(err).To(HaveOccurred(), "an un-revoke no reconciler recorded was accepted: %s", out)
		// With the operator stopped its webhook refuses first (failurePolicy
		// Fail); with the webhook up, the CRD's rule refuses it until the
		// revocation is recorded (controllers/conflict_envtest_test.go).
		Expect(out).To(Or(ContainSubstring("spec.revoked"), ContainSubstring("failed calling webhook")))
		GinkgoWriter.Printf("un-revoke refused: %s\n", strings.TrimSpace(out))
		Consistently(func() map[string]bool { return doors(tokens["revoke-me"]) }, "1s", "100ms").Should(HaveEach(BeFalse()))

		By("a deletion held by a finalizer: Terminating")
		kubectl("-n", ns, "patch", "apitoken", "delete-me", "--type=merge", "-p", `{"metadata":{"finalizers":["example.com/hold"]}}`)
		DeferCleanup(func() {
			_, _ = kubectlErr("-n", ns, "patch", "apitoken", "delete-me", "--type=merge", "-p", `{"metadata":{"finalizers":null}}`)
		})
		kubectl("-n", ns, "delete", "apitoken", "delete-me", "--wait=false")
		Expect(kubectl("-n", ns, "get", "apitoken", "delete-me", "-o", "jsonpath={.metadata.deletionTimestamp}")).NotTo(BeEmpty())
		refusedEverywhere("delete-me", "Terminating")

		By("an expiry passing: the recorded expiresAt reached, with no reconcile")
		at := time.Now().Add(3 * time.Second).UTC().Truncate(time.Second)
		kubectl("-n", ns, "patch", "apitoken", "expire-me", "--subresource=status", "--type=merge", "-p",
			fmt.Sprintf(`{"status":{"expiresAt":%q}}`, at.Format(time.RFC3339)))
		hashes["expire-me"] = hashOf("expire-me")
		Eventually(func() map[string]bool { return doors(tokens["expire-me"]) }, "2s", "100ms").Should(HaveEach(BeTrue()), "refused before its expiry")
		time.Sleep(time.Until(at))
		refusedEverywhere("expire-me", "expired")
	})
})

// watchDoors asks every door of the auth endpoint at base whether tok
// reads articles: the four HTTP doors as their proxies call them, gRPC
// ext_authz, and a TokenReview for the token's audience.
func watchDoors(base string, grpcClient authv3.AuthorizationClient) func(tok string) map[string]bool {
	return func(tok string) map[string]bool {
		get := func(path string, hdr ...string) bool {
			req, _ := http.NewRequest(http.MethodGet, base+path, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			for i := 0; i < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
			if err != nil {
				return false
			}
			_ = resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}
		out := map[string]bool{
			"authorize":    get(authserver.AuthorizePath + "?scope=articles:read"),
			"auth-request": get(authserver.AuthRequestPath, "X-Original-Method", "GET", "X-Original-URL", "/articles/7"),
			"forward-auth": get(authserver.ForwardAuthPath, "X-Forwarded-Method", "GET", "X-Forwarded-Uri", "/articles/7"),
			"ext-authz":    get(authserver.ExtAuthzPath + "/-/articles/7"),
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		hd := map[string]string{":method": "GET", ":path": "/articles/7", ":authority": "shop.example", "authorization": "Bearer " + tok}
		resp, err := grpcClient.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Id: "e2e", Method: "GET", Path: "/articles/7", Host: "shop.example", Scheme: "https", Headers: hd,
			}},
		}})
		out["grpc-ext-authz"] = err == nil && resp.GetStatus().GetCode() == int32(codes.OK)
		body, _ := json.Marshal(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
			"spec": map[string]any{"token": tok, "audiences": []string{"content-api"}}})
		out["tokenreview"] = false
		if r, err := (&http.Client{Timeout: 2 * time.Second}).Post(base+authserver.TokenReviewPath, "application/json", bytes.NewReader(body)); err == nil {
			var review authnv1.TokenReview
			_ = json.NewDecoder(r.Body).Decode(&review)
			_ = r.Body.Close()
			out["tokenreview"] = review.Status.Authenticated
		}
		return out
	}
}
