package app_test

import (
	"context"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

var _ = Describe("create --show-once", func() {
	It("prints the token once on stdout, after the operator accepted the pickup; no Secret ever holds it, and the auth endpoint accepts it", func() {
		ns := newNamespace("show-once")
		r := kubectlApitoken("create", "external-ci", "-n", ns, "--show-once", "--type", "read-only", "--duration", "7d", "--pickup-window", "2m")
		Expect(r.err).NotTo(HaveOccurred())
		tok := strings.TrimSuffix(r.out, "\n")
		Expect(tok).To(HavePrefix("atk_"))
		Expect(r.out).To(Equal(tok+"\n"), "stdout carries the token and nothing else")
		Expect(r.errOut).To(ContainSubstring("apitoken.tokens.apitoken.dev/external-ci created"))
		Expect(r.errOut).To(ContainSubstring("this is the only time the token"))
		Expect(r.errOut).NotTo(ContainSubstring(tok))

		at := get(ns, "external-ci")
		Expect(at.Spec.ShowOnce).NotTo(BeNil())
		Expect(at.Spec.ShowOnce.PublicKey).To(HaveLen(44))
		Expect(at.Spec.SecretName).To(BeEmpty())
		Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
		Expect(at.Status.SecretRef).To(BeNil())
		Expect(at.Status.ShowOnce.PickedUpAt).NotTo(BeNil())
		Expect(at.Status.ShowOnce.Sealed).To(BeEmpty(), "the sealed token is dropped once picked up")
		var secrets corev1.SecretList
		Expect(k8s.List(context.Background(), &secrets, client.InNamespace(ns))).To(Succeed())
		Expect(secrets.Items).To(BeEmpty())

		By("the auth endpoint accepts it")
		Eventually(func() error { return kubectlApitokenIn(tok, "verify", "--url", authURL).err }).Should(Succeed())

		By("the token is in no log line and no Event")
		Expect(suiteLogs.String()).NotTo(ContainSubstring(tok))
		if suiteOperator != nil {
			Expect(suiteOperator.logs.String()).NotTo(ContainSubstring(tok))
		}
		var events eventsv1.EventList
		Expect(k8s.List(context.Background(), &events, client.InNamespace(ns))).To(Succeed())
		Expect(events.Items).NotTo(BeEmpty())
		for _, e := range events.Items {
			Expect(e.Note).NotTo(ContainSubstring(tok))
		}

		By("reveal and regenerate refuse it: it is shown once")
		Expect(kubectlApitoken("reveal", "external-ci", "-n", ns).err).To(MatchError(ContainSubstring("is a show-once token")))
		Expect(kubectlApitoken("regenerate", "external-ci", "-n", ns).err).To(MatchError(ContainSubstring("is never regenerated")))

		By("revoked, the endpoint refuses it")
		r = kubectlApitoken("revoke", "external-ci", "-n", ns)
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(ContainSubstring("the show-once token is refused from now on, for good"))
		Expect(r.out).NotTo(ContainSubstring("Secret"), "a show-once token has no Secret")
		Expect(kubectlApitoken("regenerate", "external-ci", "-n", ns).err).To(MatchError(ContainSubstring("is never regenerated")),
			"a revoked show-once token is not sent to unrevoke, which it refuses")
		Eventually(func() error { return kubectlApitokenIn(tok, "verify", "--url", authURL).err }).Should(
			MatchError("the token is not valid: invalid token: revoked"))
		Expect(k8s.List(context.Background(), &secrets, client.InNamespace(ns))).To(Succeed())
		Expect(secrets.Items).To(BeEmpty())
	})

	DescribeTable("refuses flags that do not go with it, before sending anything",
		func(want string, flags ...string) {
			ns := newNamespace("show-once-flags")
			r := kubectlApitoken(append([]string{"create", "x", "-n", ns}, flags...)...)
			Expect(r.err).To(MatchError(ContainSubstring(want)))
			Expect(r.out).To(BeEmpty())
			var list tokensv1alpha1.ApiTokenList
			Expect(k8s.List(context.Background(), &list, client.InNamespace(ns))).To(Succeed())
			Expect(list.Items).To(BeEmpty())
		},
		Entry("a Secret name", "--secret-name is not allowed with --show-once", "--show-once", "--secret-name", "s"),
		Entry("a grace period", "--grace-period is not allowed with --show-once", "--show-once", "--grace-period", "5m"),
		Entry("renewal", "--renew-before is not allowed with --show-once", "--show-once", "--renew-before", "1d"),
		Entry("a manifest", "cannot be combined with --dry-run=client", "--show-once", "--dry-run=client"),
		Entry("a window too long", "must be at most 1h0m0s", "--show-once", "--pickup-window", "2h"),
		Entry("a window without --show-once", "--pickup-window needs --show-once", "--pickup-window", "2m"),
	)
})
