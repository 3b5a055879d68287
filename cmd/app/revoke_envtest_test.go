package app_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// The operator as users run it: whoever holds a leaked token revokes it
// at the auth endpoint's /v1/revoke, with no access to the cluster, and
// the workload's Secret gets a new token.
var _ = Describe("Revoking a leaked token by presenting it (POST /v1/revoke)", func() {
	var (
		ctx context.Context
		ns  string
	)
	BeforeEach(func() {
		ctx = context.Background()
		ns = newNamespace("leak")
	})
	revoke := func(tok string) (int, string) {
		resp, err := http.Post(authURL+authserver.RevokePath, "application/json", strings.NewReader(`{"token":`+strconv.Quote(tok)+`}`))
		Expect(err).NotTo(HaveOccurred())
		defer func() { _ = resp.Body.Close() }()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	leakRevoked := func(g Gomega, name string) []string {
		var list eventsv1.EventList
		g.Expect(k8s.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		var notes []string
		for _, e := range list.Items {
			if e.Regarding.Name == name && e.Reason == tokensv1alpha1.ReasonLeakRevoked {
				notes = append(notes, e.Note)
			}
		}
		return notes
	}

	It("refuses the token from its answer on, and delivers a new one into the Secret", func() {
		at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
			Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"}}
		Expect(k8s.Create(ctx, at)).To(Succeed())
		key := types.NamespacedName{Namespace: ns, Name: "web"}
		var leaked string
		Eventually(func(g Gomega) {
			leaked = tokenIn(g, ns, "web-token")
			g.Expect(status(authURL+verifyPath, leaked)).To(Equal(200))
		}).Should(Succeed())

		code, answer := revoke(leaked)
		Expect(code).To(Equal(http.StatusAccepted))
		Expect(status(authURL+verifyPath, leaked)).To(Equal(401), "refused right after the answer")

		By("the workload's Secret gets a new token; the leaked one stays refused; an Event says who asked")
		Eventually(func(g Gomega) {
			fresh := tokenIn(g, ns, "web-token")
			g.Expect(fresh).NotTo(Equal(leaked))
			g.Expect(status(authURL+verifyPath, fresh)).To(Equal(200))
			g.Expect(k8s.Get(ctx, key, at)).To(Succeed())
			g.Expect(at.Status.Verification.LeakRevocations).To(BeEmpty())
			g.Expect(at.Status.Verification.RevokedHash).NotTo(BeEmpty())
			g.Expect(at.Status.Verification.PreviousHash).To(BeEmpty())
			g.Expect(leakRevoked(g, "web")).To(ConsistOf(And(HavePrefix("The token was presented as leaked at the auth endpoint by 127.0.0.1"),
				ContainSubstring("; Issued a new token into Secret web-token"))))
		}).Should(Succeed())
		Expect(status(authURL+verifyPath, leaked)).To(Equal(401))

		By("the same answer, with nothing done, for the dead token again, an unknown one and a malformed one")
		fresh := tokenIn(Default, ns, "web-token")
		unknown, err := token.Generate()
		Expect(err).NotTo(HaveOccurred())
		for _, tok := range []string{leaked, unknown, "not-a-token"} {
			c, a := revoke(tok)
			Expect(c).To(Equal(code))
			Expect(a).To(Equal(answer))
		}
		Consistently(func(g Gomega) {
			g.Expect(tokenIn(g, ns, "web-token")).To(Equal(fresh))
			g.Expect(leakRevoked(g, "web")).To(HaveLen(1))
		}, "500ms").Should(Succeed())
		Expect(status(authURL+verifyPath, fresh)).To(Equal(200))
	})
})
