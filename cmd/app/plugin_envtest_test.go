package app_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// get returns the ApiToken ns/name as the API server has it.
func get(ns, name string) *tokensv1alpha1.ApiToken {
	at := &tokensv1alpha1.ApiToken{}
	ExpectWithOffset(1, k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, at)).To(Succeed())
	return at
}

// phaseOf returns the phase of ns/name, for Eventually.
func phaseOf(ns, name string) func() tokensv1alpha1.Phase {
	return func() tokensv1alpha1.Phase {
		at := &tokensv1alpha1.ApiToken{}
		if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, at); err != nil {
			return ""
		}
		return at.Status.Phase
	}
}

// createActive creates an ApiToken with the plugin and waits until it is Active.
func createActive(ns, name string, flags ...string) {
	r := kubectlApitoken(append([]string{"create", name, "-n", ns}, flags...)...)
	ExpectWithOffset(1, r.err).NotTo(HaveOccurred())
	EventuallyWithOffset(1, phaseOf(ns, name)).Should(Equal(tokensv1alpha1.PhaseActive))
}

// poke makes the reconciler look again after the fake clock moved.
func poke(ns, name string) {
	at := get(ns, name)
	patch := client.MergeFrom(at.DeepCopy())
	if at.Annotations == nil {
		at.Annotations = map[string]string{}
	}
	at.Annotations["test/poke"] = strconv.FormatInt(time.Now().UnixNano(), 10)
	ExpectWithOffset(1, k8s.Patch(context.Background(), at, patch)).To(Succeed())
}

// names returns the object names of "-o name" output, without the resource.
func names(out string) []string {
	var ns []string
	for _, l := range strings.Fields(out) {
		ns = append(ns, strings.TrimPrefix(l, "apitoken.tokens.apitoken.dev/"))
	}
	return ns
}

var _ = Describe("create", func() {
	It("prints a manifest that parses as an ApiToken and sends nothing with --dry-run=client", func() {
		ns := newNamespace("create-dry")
		r := kubectlApitoken("create", "billing", "--type", "custom", "--scopes", "invoices:read,payments:*",
			"--duration", "90d", "--audience", "billing-api", "--presentation", "bearer", "--grace-period", "5m",
			"--description", "Billing reads invoices", "--dry-run=client", "-o", "yaml")
		Expect(r.err).NotTo(HaveOccurred())
		at := &tokensv1alpha1.ApiToken{}
		Expect(yaml.UnmarshalStrict([]byte(r.out), at)).To(Succeed(), r.out)
		Expect(at.APIVersion).To(Equal("tokens.apitoken.dev/v1alpha1"))
		Expect(at.Kind).To(Equal("ApiToken"))
		Expect(at.Name).To(Equal("billing"))
		Expect(at.Namespace).To(BeEmpty(), "a manifest for git names no namespace unless -n is given")
		Expect(at.Spec).To(Equal(tokensv1alpha1.ApiTokenSpec{
			Description: "Billing reads invoices", Type: tokensv1alpha1.Custom, Scopes: []string{"invoices:read", "payments:*"},
			Duration: "90d", Audience: "billing-api", Presentation: tokensv1alpha1.BearerHeader,
			Rotation: &tokensv1alpha1.Rotation{GracePeriod: "5m"},
		}))
		Expect(r.out).NotTo(ContainSubstring("status"))
		Expect(r.out).NotTo(ContainSubstring("creationTimestamp"))

		By("nothing was created")
		err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "billing"}, &tokensv1alpha1.ApiToken{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue())

		By("the API server accepts the manifest as printed")
		at.Namespace = ns
		Expect(k8s.Create(context.Background(), at)).To(Succeed())
		Eventually(phaseOf(ns, "billing")).Should(Equal(tokensv1alpha1.PhaseActive))

		By("-n puts the namespace in the manifest")
		r = kubectlApitoken("create", "reader", "-n", ns, "--dry-run=client", "-o", "yaml")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(yaml.UnmarshalStrict([]byte(r.out), at)).To(Succeed())
		Expect(at.Namespace).To(Equal(ns))
		Expect(at.Spec.Type).To(Equal(tokensv1alpha1.ReadOnly))
		Expect(at.Spec.Duration).To(Equal("30d"))
	})

	It("creates the ApiToken, and the operator issues its token", func() {
		ns := newNamespace("create")
		r := kubectlApitoken("create", "ci", "-n", ns, "--type", "custom", "--scopes", "articles:read", "--scopes", "orders:*", "--duration", "7d")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(Equal("apitoken.tokens.apitoken.dev/ci created\n"))
		at := get(ns, "ci")
		Expect(at.Spec.Type).To(Equal(tokensv1alpha1.Custom))
		Expect(at.Spec.Scopes).To(Equal([]string{"articles:read", "orders:*"}))
		Expect(at.Spec.Duration).To(Equal("7d"))
		Eventually(phaseOf(ns, "ci")).Should(Equal(tokensv1alpha1.PhaseActive))
		Expect(secretToken(ns, "ci-token")).To(HavePrefix("atk_"))

		By("a second create of the same name is refused by the API server")
		r = kubectlApitoken("create", "ci", "-n", ns)
		Expect(r.err).To(MatchError(ContainSubstring(`"ci" already exists`)))

		By("--dry-run=server validates without storing")
		r = kubectlApitoken("create", "checked", "-n", ns, "--dry-run=server")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(Equal("apitoken.tokens.apitoken.dev/checked created (server dry run)\n"))
		err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "checked"}, &tokensv1alpha1.ApiToken{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue())
	})

	DescribeTable("refuses bad flags before sending anything, naming the flag",
		func(want string, args ...string) {
			r := kubectlApitoken(append([]string{"create", "bad", "-n", "no-such-namespace"}, args...)...)
			Expect(r.err).To(MatchError(ContainSubstring(want)))
			Expect(r.out).To(BeEmpty())
		},
		Entry("custom without scopes", "--type custom needs --scopes", "--type", "custom"),
		Entry("scopes on read-only", "--scopes is only allowed with --type custom", "--scopes", "articles:read"),
		Entry("unknown type", `--type "admin": must be read-only, full-access or custom`, "--type", "admin"),
		Entry("malformed scope", `--scopes "orders": must be resource:action`, "--type", "custom", "--scopes", "orders"),
		Entry("bad duration", "--duration: invalid duration", "--duration", "2w"),
		Entry("bad audience", `--audience "Billing"`, "--audience", "Billing"),
		Entry("renewBefore on unlimited", "--renew-before needs a finite --duration", "--duration", "unlimited", "--renew-before", "7d"),
		Entry("bad dry-run", `--dry-run "yes"`, "--dry-run=yes"),
	)
})

var _ = Describe("list and get", func() {
	It("filters with --expiring-soon and --inactive by the operator's conditions and phases", func() {
		ns := newNamespace("list")
		createActive(ns, "steady", "--duration", "30d", "--description", "stays")
		createActive(ns, "soon", "--duration", "2h")
		createActive(ns, "gone", "--duration", "1h")
		Expect(kubectlApitoken("create", "cut", "-n", ns).err).NotTo(HaveOccurred())
		Eventually(phaseOf(ns, "cut")).Should(Equal(tokensv1alpha1.PhaseActive))
		Expect(kubectlApitoken("revoke", "cut", "-n", ns).err).NotTo(HaveOccurred())
		Eventually(phaseOf(ns, "cut")).Should(Equal(tokensv1alpha1.PhaseRevoked))

		By("100 minutes later: gone (1h) expired, soon (2h) has 20 of its 120 minutes left")
		fakeClock.Step(100 * time.Minute)
		poke(ns, "soon")
		poke(ns, "gone")
		Eventually(phaseOf(ns, "gone")).Should(Equal(tokensv1alpha1.PhaseExpired))
		Eventually(func() []metav1.Condition { return get(ns, "soon").Status.Conditions }).Should(ContainElement(
			And(HaveField("Type", tokensv1alpha1.ConditionExpiringSoon), HaveField("Status", metav1.ConditionTrue))))

		r := kubectlApitoken("list", "-n", ns, "-o", "name")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(names(r.out)).To(Equal([]string{"cut", "gone", "soon", "steady"}))

		r = kubectlApitoken("list", "-n", ns, "--expiring-soon", "-o", "name")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(names(r.out)).To(Equal([]string{"soon"}))

		r = kubectlApitoken("list", "-n", ns, "--inactive", "-o", "name")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(names(r.out)).To(Equal([]string{"cut", "gone"}))

		r = kubectlApitoken("get", "-n", ns, "--inactive", "--expiring-soon", "-o", "name")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(names(r.out)).To(Equal([]string{"cut", "gone", "soon"}))

		By("the table")
		r = kubectlApitoken("list", "-n", ns)
		Expect(r.err).NotTo(HaveOccurred())
		lines := strings.Split(strings.TrimSpace(r.out), "\n")
		Expect(lines).To(HaveLen(5))
		Expect(strings.Fields(lines[0])).To(Equal([]string{"NAME", "TYPE", "PHASE", "EXPIRES", "LAST", "USED", "AGE"}))
		Expect(lines[1]).To(MatchRegexp(`^cut\s+read-only\s+Revoked\s+-\s+never\s`))
		// EXPIRES is relative to the real clock; the operator's fake clock
		// runs ahead of it, so only the phase and LAST USED are checked.
		Expect(lines[2]).To(MatchRegexp(`^gone\s+read-only\s+Expired\s+.*\snever\s`))
		Expect(lines[3]).To(MatchRegexp(`^soon\s+read-only\s+Active \(ExpiringSoon\)\s+in \S+\s+never\s`))
		Expect(lines[4]).To(MatchRegexp(`^steady\s+read-only\s+Active\s+in \S+\s+never\s`))

		r = kubectlApitoken("get", "steady", "-n", ns, "-o", "wide")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(ContainSubstring("DESCRIPTION"))
		Expect(r.out).To(MatchRegexp(`steady\s+read-only\s+Active\s+in \S+\s+never\s+\S+\s+content-api\s+any\s+steady-token\s+-\s+stays`))

		By("-A adds the namespace")
		r = kubectlApitoken("list", "-A", "--inactive")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(HavePrefix("NAMESPACE "))
		Expect(r.out).To(MatchRegexp(ns + `\s+gone\s+read-only\s+Expired`))
		Expect(r.out).To(MatchRegexp(ns + `\s+cut\s+read-only\s+Revoked`))
		Expect(r.out).NotTo(MatchRegexp(ns + `\s+steady`))

		By("an empty result says so on stderr")
		empty := newNamespace("list-empty")
		r = kubectlApitoken("list", "-n", empty)
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(BeEmpty())
		Expect(r.errOut).To(Equal("No ApiTokens found in namespace " + empty + ".\n"))
	})

	It("prints JSON and YAML without the token's hashes", func() {
		ns := newNamespace("get-json")
		createActive(ns, "doc")
		hash := get(ns, "doc").Status.Verification.Hash
		Expect(hash).NotTo(BeEmpty())

		r := kubectlApitoken("list", "-n", ns, "-o", "json")
		Expect(r.err).NotTo(HaveOccurred())
		list := &tokensv1alpha1.ApiTokenList{}
		Expect(json.Unmarshal([]byte(r.out), list)).To(Succeed())
		Expect(list.Items).To(HaveLen(1))
		Expect(list.Items[0].Kind).To(Equal("ApiToken"))
		Expect(list.Items[0].Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
		Expect(list.Items[0].Status.Verification.SaltID).NotTo(BeEmpty())
		Expect(r.out).NotTo(ContainSubstring(hash))
		Expect(r.out).NotTo(ContainSubstring(secretToken(ns, "doc-token")))

		r = kubectlApitoken("get", "doc", "-n", ns, "-o", "yaml")
		Expect(r.err).NotTo(HaveOccurred())
		at := &tokensv1alpha1.ApiToken{}
		Expect(yaml.Unmarshal([]byte(r.out), at)).To(Succeed())
		Expect(at.Name).To(Equal("doc"))
		Expect(at.ManagedFields).To(BeEmpty())
		Expect(r.out).NotTo(ContainSubstring(hash))
	})
})

var _ = Describe("regenerate", func() {
	It("with --wait returns once the Secret holds a new token and the token is Active, printing neither", func() {
		ns := newNamespace("regen")
		createActive(ns, "rot", "--grace-period", "5m")
		old := secretToken(ns, "rot-token")

		r := kubectlApitoken("regenerate", "rot", "-n", ns, "--wait", "--timeout", "60s")
		Expect(r.err).NotTo(HaveOccurred())
		fresh := secretToken(ns, "rot-token")
		Expect(fresh).NotTo(Equal(old))
		Expect(fresh).To(HavePrefix("atk_"))
		at := get(ns, "rot")
		Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
		value := at.Annotations[tokensv1alpha1.RegenerateAnnotation]
		Expect(value).NotTo(BeEmpty())
		Expect(at.Status.LastHandledRegenerate).To(Equal(value))
		Expect(r.out).To(ContainSubstring("apitoken.tokens.apitoken.dev/rot regeneration requested (tokens.apitoken.dev/regenerate=" + value + ")\n"))
		Expect(r.out).To(ContainSubstring("apitoken.tokens.apitoken.dev/rot regenerated: Secret rot-token holds a new token, phase Active; the previous token stays valid until "))
		for _, tok := range []string{old, fresh} {
			Expect(r.out).NotTo(ContainSubstring(tok))
			Expect(r.errOut).NotTo(ContainSubstring(tok))
		}

		By("without --wait it asks and returns; each request is a fresh value")
		r = kubectlApitoken("regenerate", "rot", "-n", ns)
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(HavePrefix("apitoken.tokens.apitoken.dev/rot regeneration requested"))
		Expect(get(ns, "rot").Annotations[tokensv1alpha1.RegenerateAnnotation]).NotTo(Equal(value))
		Eventually(func() string { return secretToken(ns, "rot-token") }).ShouldNot(Equal(fresh))
	})

	It("refuses a revoked token, and fails fast when the operator cannot deliver", func() {
		ns := newNamespace("regen-fail")
		createActive(ns, "cut")
		Expect(kubectlApitoken("revoke", "cut", "-n", ns).err).NotTo(HaveOccurred())
		r := kubectlApitoken("regenerate", "cut", "-n", ns, "--wait")
		Expect(r.err).To(MatchError(`apitoken "cut" in namespace ` + ns + ` is revoked: a regeneration issues no token; 'kubectl apitoken unrevoke cut -n ` + ns + `' issues a new one`))

		By("a Secret of that name that the operator does not own")
		Expect(k8s.Create(context.Background(), &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "taken-token", Namespace: ns},
			StringData: map[string]string{"token": "someone else's"},
		})).To(Succeed())
		Expect(kubectlApitoken("create", "taken", "-n", ns).err).NotTo(HaveOccurred())
		Eventually(phaseOf(ns, "taken")).Should(Equal(tokensv1alpha1.PhaseFailed))
		r = kubectlApitoken("regenerate", "taken", "-n", ns, "--wait", "--timeout", "30s")
		Expect(r.err).To(MatchError(ContainSubstring(`apitoken "taken" in namespace ` + ns + ` cannot be regenerated: Ready=False SecretConflict`)))

		By("reveal never reads out a Secret the ApiToken does not own")
		r = kubectlApitoken("reveal", "taken", "-n", ns)
		Expect(r.err).To(MatchError(ContainSubstring(`secret "taken-token" in namespace ` + ns + ` is not the token Secret of apitoken "taken"`)))
		Expect(r.out).To(BeEmpty())
		Expect(r.errOut).NotTo(ContainSubstring("someone else's"))
	})
})

var _ = Describe("revoke and unrevoke", func() {
	It("set spec.revoked; the operator empties the Secret, and issues a new token on unrevoke", func() {
		ns := newNamespace("revoke")
		createActive(ns, "ci")
		old := secretToken(ns, "ci-token")

		r := kubectlApitoken("revoke", "ci", "-n", ns)
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(Equal("apitoken.tokens.apitoken.dev/ci revoked: the token is refused from now on and removed from Secret ci-token\n"))
		Expect(get(ns, "ci").Spec.Revoked).To(BeTrue())
		Eventually(phaseOf(ns, "ci")).Should(Equal(tokensv1alpha1.PhaseRevoked))
		Eventually(func() string { return secretToken(ns, "ci-token") }).Should(BeEmpty())

		r = kubectlApitoken("revoke", "ci", "-n", ns)
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(Equal("apitoken.tokens.apitoken.dev/ci is already revoked (unchanged)\n"))

		By("reveal says it is revoked and has no token")
		r = kubectlApitoken("reveal", "ci", "-n", ns)
		Expect(r.err).To(MatchError(`apitoken "ci" in namespace ` + ns + ` is revoked and has no token: 'kubectl apitoken unrevoke ci -n ` + ns + `' issues a new one`))
		Expect(r.out).To(BeEmpty())

		r = kubectlApitoken("unrevoke", "ci", "-n", ns)
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(Equal("apitoken.tokens.apitoken.dev/ci unrevoked: the operator issues a new token into Secret ci-token\n"))
		Eventually(phaseOf(ns, "ci")).Should(Equal(tokensv1alpha1.PhaseActive))
		fresh := secretToken(ns, "ci-token")
		Expect(fresh).To(HavePrefix("atk_"))
		Expect(fresh).NotTo(Equal(old))

		r = kubectlApitoken("unrevoke", "ci", "-n", ns)
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(Equal("apitoken.tokens.apitoken.dev/ci is not revoked (unchanged)\n"))
	})
})

var _ = Describe("reveal", func() {
	It("prints exactly the Secret's token on stdout and warns on stderr", func() {
		ns := newNamespace("reveal")
		createActive(ns, "ci", "--secret-name", "ci-credentials")
		tok := secretToken(ns, "ci-credentials")

		r := kubectlApitoken("reveal", "ci", "-n", ns)
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(Equal(tok + "\n"))
		Expect(r.errOut).To(Equal("Warning: printing the token of apitoken " + ns + "/ci (Secret ci-credentials): anyone who sees this output can use it\n"))
	})

	It("warns that an expired token is refused", func() {
		ns := newNamespace("reveal-expired")
		createActive(ns, "short", "--duration", "1h")
		fakeClock.Step(61 * time.Minute)
		poke(ns, "short")
		Eventually(phaseOf(ns, "short")).Should(Equal(tokensv1alpha1.PhaseExpired))
		r := kubectlApitoken("reveal", "short", "-n", ns)
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(Equal(secretToken(ns, "short-token") + "\n"))
		Expect(r.errOut).To(ContainSubstring("Warning: the token is Expired and is refused; 'kubectl apitoken regenerate short' issues a new one\n"))
	})
})

var _ = Describe("verify", func() {
	It("asks the auth endpoint with a TokenReview and prints the identity, never the token", func() {
		ns := newNamespace("verify")
		createActive(ns, "reader")
		revealed := kubectlApitoken("reveal", "reader", "-n", ns)
		Expect(revealed.err).NotTo(HaveOccurred())
		tok := strings.TrimSpace(revealed.out)

		var r result
		Eventually(func() error {
			r = kubectlApitokenIn(revealed.out, "verify", "--url", authURL)
			return r.err
		}).Should(Succeed())
		Expect(r.out).To(Equal("Authenticated: true\n" +
			"User:          apitoken:" + ns + ":reader\n" +
			"UID:           " + string(get(ns, "reader").UID) + "\n" +
			"Groups:        apitoken:" + ns + ":authenticated\n" +
			"               apitoken:" + ns + ":type:read-only\n" +
			"               apitoken:" + ns + ":scope:*:read\n" +
			"Audiences:     content-api\n"))
		Expect(r.errOut).NotTo(ContainSubstring(tok))

		By("-o json prints the TokenReview's answer without the token")
		r = kubectlApitokenIn(tok, "verify", "--url", authURL+"/", "-o", "json")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).NotTo(ContainSubstring(tok))
		review := &authnv1.TokenReview{}
		Expect(json.Unmarshal([]byte(r.out), review)).To(Succeed())
		Expect(review.Kind).To(Equal("TokenReview"))
		Expect(review.Status.Authenticated).To(BeTrue())
		Expect(review.Status.User.Username).To(Equal("apitoken:" + ns + ":reader"))
		Expect(review.Status.Audiences).To(Equal([]string{"content-api"}))

		By("an audience the token is not for")
		r = kubectlApitokenIn(tok, "verify", "--url", authURL, "--audience", "billing-api")
		Expect(r.err).To(MatchError("the token is not valid: the token's audience content-api is not among the requested audiences"))
		Expect(r.out).To(BeEmpty())

		By("the auth endpoint recorded the use; status shows it")
		Eventually(func() *metav1.Time { return get(ns, "reader").Status.LastUsedAt }).ShouldNot(BeNil())
		r = kubectlApitoken("status", "reader", "-n", ns)
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(MatchRegexp(`Last used:\s+\d{4}-\d\d-\d\dT`))

		By("after revoke, the endpoint refuses it")
		Expect(kubectlApitoken("revoke", "reader", "-n", ns).err).NotTo(HaveOccurred())
		Eventually(func() error { return kubectlApitokenIn(tok, "verify", "--url", authURL).err }).Should(
			MatchError("the token is not valid: invalid token: revoked"))
	})

	It("asks for audience content-api unless --audience names the token's own (a review that names none is for the API server)", func() {
		ns := newNamespace("verify-audience")
		createActive(ns, "billing", "--audience", "billing-api")
		createActive(ns, "kube", "--audience", "kubernetes")
		billing, kube := secretToken(ns, "billing-token"), secretToken(ns, "kube-token")

		var r result
		Eventually(func() error {
			r = kubectlApitokenIn(billing, "verify", "--url", authURL, "--audience", "billing-api")
			return r.err
		}).Should(Succeed())
		Expect(r.out).To(ContainSubstring("Audiences:     billing-api\n"))
		r = kubectlApitokenIn(billing, "verify", "--url", authURL)
		Expect(r.err).To(MatchError("the token is not valid: the token's audience billing-api is not among the requested audiences " +
			"(verify asks for audience content-api: give the token's own with --audience)"))

		Eventually(func() error {
			r = kubectlApitokenIn(kube, "verify", "--url", authURL, "--audience", "kubernetes")
			return r.err
		}).Should(Succeed())
		Expect(r.out).To(ContainSubstring("User:          apitoken:" + ns + ":kube\n"))
		r = kubectlApitokenIn(kube, "verify", "--url", authURL)
		Expect(r.err).To(MatchError(ContainSubstring("a kubernetes token is valid only for the API server's audiences")))
		Expect(r.err).To(MatchError(ContainSubstring("give the token's own with --audience")))
		Expect(r.err.Error() + r.out + r.errOut).NotTo(Or(ContainSubstring(billing), ContainSubstring(kube)))
	})

	It("checks the endpoint's certificate: --certificate-authority or --insecure-skip-tls-verify", func() {
		ns := newNamespace("verify-tls")
		createActive(ns, "reader")
		tok := secretToken(ns, "reader-token")

		r := kubectlApitokenIn(tok, "verify", "--url", authTLSURL)
		Expect(r.err).To(MatchError(ContainSubstring("certificate signed by unknown authority")))
		Expect(r.err.Error()).NotTo(ContainSubstring(tok))

		Eventually(func() error {
			r = kubectlApitokenIn(tok, "verify", "--url", authTLSURL, "--certificate-authority", caFile)
			return r.err
		}).Should(Succeed())
		Expect(r.out).To(ContainSubstring("User:          apitoken:" + ns + ":reader\n"))

		r = kubectlApitokenIn(tok, "verify", "--url", authTLSURL, "--insecure-skip-tls-verify")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(ContainSubstring("User:          apitoken:" + ns + ":reader\n"))

		r = kubectlApitokenIn(tok, "verify", "--url", authTLSURL, "--certificate-authority", writeFile("empty.crt", []byte("not a certificate")))
		Expect(r.err).To(MatchError(ContainSubstring("no PEM certificate in it")))
	})

	It("refuses input that is not a token without sending it, and an empty stdin", func() {
		// Nothing listens on port 1: an attempt to send would fail differently.
		r := kubectlApitokenIn("hunter2\n", "verify", "--url", "http://127.0.0.1:1")
		Expect(r.err).To(MatchError(`the input is not an apitoken-operator token, so it was not sent: malformed token: it does not start with "atk_"`))
		Expect(r.out + r.errOut).NotTo(ContainSubstring("hunter2"))

		r = kubectlApitokenIn("", "verify", "--url", authURL)
		Expect(r.err).To(MatchError(ContainSubstring("no token on stdin")))

		r = kubectlApitokenIn("atk_x", "verify", "--url", authURL, "--service", "a/b:1")
		Expect(r.err).To(MatchError("--url and --service name two endpoints: give one"))
	})

	It("with --service, names what is missing for a port-forward", func() {
		tok := secretTokenOfNew("verify-svc")
		noService := `finding the auth endpoint: service "apitoken-operator-auth" not found in namespace apitoken-system: ` +
			`no operator is deployed with its Service here; for one that runs on this machine (make run) give its address: --url http://localhost:8082`
		r := kubectlApitokenIn(tok, "verify", "--scheme", "http")
		Expect(r.err).To(MatchError(noService))
		By("the default (HTTPS) names the missing Service, not the CA Secret it would read")
		r = kubectlApitokenIn(tok, "verify")
		Expect(r.err).To(MatchError(noService))
		By("a --service named by the user: the port-forward's own error")
		r = kubectlApitokenIn(tok, "verify", "--service", "apitoken-system/apitoken-operator-auth:8082", "--scheme", "http")
		Expect(r.err).To(MatchError(`finding the auth endpoint: service "apitoken-operator-auth" not found in namespace apitoken-system`))

		By("a Service without a ready pod")
		Expect(k8s.Create(context.Background(), &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "apitoken-operator-auth", Namespace: "apitoken-system"},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app.kubernetes.io/name": "apitoken-auth"},
				Ports:    []corev1.ServicePort{{Name: "auth", Port: 8082}},
			},
		})).To(Succeed())
		r = kubectlApitokenIn(tok, "verify", "--service", "apitoken-system/apitoken-operator-auth:8082", "--scheme", "http")
		Expect(r.err).To(MatchError(`service "apitoken-operator-auth" in namespace apitoken-system has no running, ready pod (of 0 selected): is the auth endpoint deployed and ready?`))

		By("HTTPS without a CA and without the CA Secret")
		r = kubectlApitokenIn(tok, "verify")
		Expect(r.err).To(MatchError(`reading the auth endpoint's CA: secret "apitoken-operator-auth-cert" not found in namespace apitoken-system; or give --certificate-authority FILE (or --insecure-skip-tls-verify)`))
	})
})

// secretTokenOfNew creates an Active token in a new namespace and returns it.
func secretTokenOfNew(prefix string) string {
	ns := newNamespace(prefix)
	createActive(ns, "t")
	return secretToken(ns, "t-token")
}

var _ = Describe("status", func() {
	It("shows phase, conditions, lifetime, creator and recent Events", func() {
		ns := newNamespace("status")
		Expect(k8s.Create(context.Background(), &tokensv1alpha1.ApiToken{
			ObjectMeta: metav1.ObjectMeta{Name: "ci", Namespace: ns, Annotations: map[string]string{
				tokensv1alpha1.CreatedByAnnotation:       "alice",
				tokensv1alpha1.CreatedByGroupsAnnotation: `["team-a","system:authenticated"]`, // as the webhook stamps it
			}},
			Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.Custom, Scopes: []string{"articles:read"}, Duration: "30d",
				Description: "CI reads articles", Rotation: &tokensv1alpha1.Rotation{GracePeriod: "5m"}},
		})).To(Succeed())
		Eventually(phaseOf(ns, "ci")).Should(Equal(tokensv1alpha1.PhaseActive))

		var r result
		Eventually(func() string {
			r = kubectlApitoken("status", "ci", "-n", ns)
			return r.out
		}).Should(MatchRegexp(`\n  \S+\s+Normal\s+Generated\s+`))
		Expect(r.err).NotTo(HaveOccurred())
		for _, want := range []string{
			`(?m)^Name:\s+ci$`,
			`(?m)^Namespace:\s+` + ns + `$`,
			`(?m)^Phase:\s+Active$`,
			`(?m)^Type:\s+custom$`,
			`(?m)^Scopes:\s+articles:read$`,
			`(?m)^Audience:\s+content-api$`,
			`(?m)^Description:\s+CI reads articles$`,
			`(?m)^Duration:\s+30d$`,
			`(?m)^Grace period:\s+5m$`,
			`(?m)^Secret:\s+ci-token \(key token\)$`,
			`(?m)^Issued:\s+\d{4}-\d\d-\d\dT\S+Z \((in )?\S+( ago)?\)$`,
			`(?m)^Expires:\s+\d{4}-\d\d-\d\dT\S+Z \(in \S+\)$`,
			`(?m)^Last used:\s+never$`,
			`(?m)^Created by:\s+alice \(groups: team-a, system:authenticated\)$`,
			`(?m)^Conditions:\n  TYPE\s+STATUS\s+REASON\s+SINCE\s+MESSAGE$`,
			`(?m)^  Ready\s+True\s+Active\s+\S+\s+Secret ci-token holds a valid token$`,
			`(?m)^  ExpiringSoon\s+False\s+NotExpiringSoon\s`,
			`(?m)^Events:\n  LAST SEEN\s+TYPE\s+REASON\s+MESSAGE$`,
		} {
			Expect(r.out).To(MatchRegexp(want))
		}
		at := get(ns, "ci")
		Expect(r.out).NotTo(ContainSubstring(at.Status.Verification.Hash))
		Expect(r.out).NotTo(ContainSubstring(secretToken(ns, "ci-token")))

		By("a regeneration shows as handled, with its Event")
		Expect(kubectlApitoken("regenerate", "ci", "-n", ns, "--wait").err).NotTo(HaveOccurred())
		Eventually(func() string { return kubectlApitoken("status", "ci", "-n", ns).out }).Should(And(
			MatchRegexp(`(?m)^Regenerate requested:\s+\S+ \(handled\)$`),
			MatchRegexp(`(?m)^Previous token valid until:\s+\S+ \((in )?\S+( ago)?\)$`),
			MatchRegexp(`\n  \S+\s+Normal\s+Regenerated\s+`)))
	})
})

var _ = Describe("errors", func() {
	DescribeTable("an unknown token is named, with its namespace",
		func(args ...string) {
			ns := newNamespace("unknown")
			r := kubectlApitoken(append(args, "-n", ns)...)
			Expect(r.err).To(MatchError(`apitoken "nope" not found in namespace ` + ns))
			Expect(r.out).To(BeEmpty())
		},
		Entry("get", "get", "nope"),
		Entry("regenerate", "regenerate", "nope", "--wait"),
		Entry("revoke", "revoke", "nope"),
		Entry("unrevoke", "unrevoke", "nope"),
		Entry("reveal", "reveal", "nope"),
		Entry("status", "status", "nope"),
	)

	It("says which verb on which resource was forbidden", func() {
		ns := newNamespace("rbac")
		createActive(ns, "ci")

		By("a user without any RBAC (impersonated with --as)")
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"get", "ci"}, `forbidden: you cannot get apitokens.tokens.apitoken.dev "ci" in namespace ` + ns + ` (apitokens.tokens.apitoken.dev "ci" is forbidden: User "nobody" cannot get resource "apitokens" in API group "tokens.apitoken.dev" in the namespace "` + ns + `")`},
			{[]string{"list"}, `forbidden: you cannot list apitokens.tokens.apitoken.dev in namespace ` + ns + ` (`},
			{[]string{"create", "new"}, `forbidden: you cannot create apitokens.tokens.apitoken.dev "new" in namespace ` + ns + ` (`},
			{[]string{"reveal", "ci"}, `forbidden: you cannot get apitokens.tokens.apitoken.dev "ci" in namespace ` + ns},
		} {
			r := kubectlApitoken(append(c.args, "-n", ns, "--as", "nobody")...)
			Expect(r.err).To(MatchError(HavePrefix(c.want)), strings.Join(c.args, " "))
		}
		r := kubectlApitoken("list", "-A", "--as", "nobody")
		Expect(r.err).To(MatchError(ContainSubstring(`forbidden: you cannot list apitokens.tokens.apitoken.dev in any namespace (apitokens.tokens.apitoken.dev is forbidden: User "nobody" cannot list resource "apitokens" in API group "tokens.apitoken.dev" at the cluster scope)`)))

		By("a user who may read ApiTokens but not Secrets nor Events")
		ctx := context.Background()
		Expect(k8s.Create(ctx, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Name: "apitoken-viewer", Namespace: ns},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"tokens.apitoken.dev"}, Resources: []string{"apitokens"}, Verbs: []string{"get", "list"}}},
		})).To(Succeed())
		Expect(k8s.Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "viewer", Namespace: ns},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "apitoken-viewer"},
			Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: "viewer"}},
		})).To(Succeed())
		Eventually(func() error { return kubectlApitoken("get", "ci", "-n", ns, "--as", "viewer").err }).Should(Succeed())

		r = kubectlApitoken("reveal", "ci", "-n", ns, "--as", "viewer")
		Expect(r.err).To(MatchError(HavePrefix(`forbidden: you cannot get secrets "ci-token" in namespace ` + ns + ` (secrets "ci-token" is forbidden: User "viewer" cannot get resource "secrets" in API group "" in the namespace "` + ns + `")`)))
		Expect(r.out).To(BeEmpty())

		r = kubectlApitoken("revoke", "ci", "-n", ns, "--as", "viewer")
		Expect(r.err).To(MatchError(HavePrefix(`forbidden: you cannot patch apitokens.tokens.apitoken.dev "ci" in namespace ` + ns)))
		Expect(get(ns, "ci").Spec.Revoked).To(BeFalse())

		r = kubectlApitoken("regenerate", "ci", "-n", ns, "--wait", "--as", "viewer")
		Expect(r.err).To(MatchError(HavePrefix(`--wait compares the Secret's token before and after: forbidden: you cannot get secrets "ci-token"`)))

		r = kubectlApitoken("status", "ci", "-n", ns, "--as", "viewer")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(MatchRegexp(`(?m)^Phase:\s+Active$`))
		Expect(r.out).To(ContainSubstring("Events:\n  not shown: forbidden: you cannot list events.events.k8s.io in namespace " + ns))
	})
})
