package app_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
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
	revokeAt := func(url, tok string) (int, string) {
		resp, err := http.Post(url+authserver.RevokePath, "application/json", strings.NewReader(`{"token":`+strconv.Quote(tok)+`}`))
		Expect(err).NotTo(HaveOccurred())
		defer func() { _ = resp.Body.Close() }()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	revoke := func(tok string) (int, string) { return revokeAt(authURL, tok) }
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
			g.Expect(at.Status.LastLeakRevocation).NotTo(BeNil())
			g.Expect(at.Status.LastLeakRevocation.Client).To(Equal("127.0.0.1"))
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

	It("is forwarded by an auth-only replica to an operator replica, and answered 503 when none takes it", Label(ownOperators), func() {
		By("an operator replica that accepts the auth-only replicas' ServiceAccount, and an auth-only replica that forwards to it")
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "apitoken-auth", Namespace: operatorNamespace}}
		if err := k8s.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
			Expect(err).NotTo(HaveOccurred())
		}
		tr := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(3600))}}
		Expect(k8s.SubResource("token").Create(ctx, sa, tr)).To(Succeed())
		tokenFile := filepath.Join(GinkgoT().TempDir(), "token")
		Expect(os.WriteFile(tokenFile, []byte(tr.Status.Token), 0o600)).To(Succeed())
		o := operatorOptions(operatorNamespace, fakeClock)
		o.UsageReporters = "system:serviceaccount:" + operatorNamespace + ":apitoken-auth"
		op := startOperator(o, nil, nil)
		DeferCleanup(func() { op.stop() })
		a := operatorOptions(operatorNamespace, fakeClock)
		a.EnableController = false
		a.ReportUsageTo, a.ReportUsageTokenFile = op.authURL+authserver.UsagePath, tokenFile
		auth := startOperator(a, nil, nil)
		DeferCleanup(func() { auth.stop() })

		at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
			Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"}}
		Expect(k8s.Create(ctx, at)).To(Succeed())
		var leaked string
		Eventually(func(g Gomega) {
			leaked = tokenIn(g, ns, "web-token")
			g.Expect(auth.verifies(leaked)).To(BeTrue())
		}).Should(Succeed())

		code, _ := revokeAt(auth.authURL, leaked)
		Expect(code).To(Equal(http.StatusAccepted))
		Expect(auth.verifies(leaked)).To(BeFalse(), "refused by the auth-only replica right after its answer")
		Expect(op.verifies(leaked)).To(BeFalse())
		var fresh string
		Eventually(func(g Gomega) {
			fresh = tokenIn(g, ns, "web-token")
			g.Expect(fresh).NotTo(Equal(leaked))
			g.Expect(auth.verifies(fresh)).To(BeTrue())
			g.Expect(leakRevoked(g, "web")).To(ConsistOf(HavePrefix("The token was presented as leaked at the auth endpoint by 127.0.0.1")))
		}).Should(Succeed())

		By("no operator replica: 503, and nothing is revoked")
		op.stop()
		resp, err := http.Post(auth.authURL+authserver.RevokePath, "application/json", strings.NewReader(`{"token":`+strconv.Quote(fresh)+`}`))
		Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusServiceUnavailable))
		Expect(resp.Header.Get("Retry-After")).NotTo(BeEmpty())
		Expect(auth.verifies(fresh)).To(BeTrue())
		Expect(tokenIn(Default, ns, "web-token")).To(Equal(fresh))
	})
})
