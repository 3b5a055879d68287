package app_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/cmd/app"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// A salt Secret someone else provides (--salt-create=false, the chart's
// salt.existingSecret): the operator waits for it, never writes it, and
// follows what its writer puts there, a rotation included.
var _ = Describe("A salt Secret someone else provides", func() {
	It("waits for it, never creates or writes it, serves once it appears, and follows a rotation its writer makes", Label(ownOperators), func() {
		ctx := context.Background()
		// The namespace and name docs/operations.md's commands use.
		opNS, tokNS := operatorNamespace, newNamespace("tok")
		ref := types.NamespacedName{Namespace: opNS, Name: "salt-from-vault"}
		docs := docBlocks("operations.md", "## A salt from a secret manager", "### Rotating a salt someone else provides")
		o := operatorOptions(opNS, clock.RealClock{})
		o.SaltCreate, o.SaltSecret, o.SaltOverlap = false, ref.Name, time.Hour
		// It sees only its two namespaces.
		tweak := func(mo *ctrl.Options) { mo.Cache.DefaultNamespaces = map[string]cache.Config{opNS: {}, tokNS: {}} }
		// Setup waits in loading the salt until the Secret can be loaded.
		op, setup := beginOperator(o, tweak, nil)
		defer func() { op.stop() }()
		store := op.store

		By("waiting, not ready, saying so, while the Secret is absent; creating nothing")
		Eventually(store.Waiting).Should(ContainSubstring("does not exist; --salt-create=false"))
		Expect(store.Hasher()).To(BeNil(), "the readiness check passes once the store has a hasher")
		Expect(store.NotLoadedMessage()).To(ContainSubstring(ref.String()))
		Eventually(func(g Gomega) int { return eventCount(g, opNS, ref.Name, salt.ReasonSaltSecretWaiting) }).Should(Equal(1))
		Eventually(suiteLogs.String).Should(MatchRegexp(`Waiting for the salt Secret.*"name":"salt-from-vault"`), "Setup logs why it waits")
		absent := func(g Gomega) {
			err := k8s.Get(ctx, ref, &corev1.Secret{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the operator created the salt Secret")
		}
		Consistently(absent, "1s").Should(Succeed())
		Expect(docs[0]).To(ContainSubstring("reason=SaltSecretWaiting"))
		Expect(runDocs(docs[0], tokNS)).To(ContainSubstring("SaltSecretWaiting"))

		By("waiting for the label, without adding it, when the Secret appears without it")
		first := strongSalt("provided-first")
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: opNS, Name: ref.Name}, Data: map[string][]byte{salt.Key: []byte(first)}}
		Expect(k8s.Create(ctx, sec)).To(Succeed())
		Eventually(store.Waiting).Should(ContainSubstring("lacks the label " + tokensv1alpha1.ManagedByLabel))
		Eventually(func(g Gomega) int { return eventCount(g, opNS, ref.Name, salt.ReasonSaltSecretWaiting) }).Should(Equal(2))
		unwritten := func(rv string) func(g Gomega) {
			return func(g Gomega) {
				var s corev1.Secret
				g.Expect(k8s.Get(ctx, ref, &s)).To(Succeed())
				g.Expect(s.ResourceVersion).To(Equal(rv), "the operator wrote the salt Secret")
			}
		}
		Consistently(unwritten(sec.ResourceVersion), "1s").Should(Succeed())
		Expect(store.Hasher()).To(BeNil())

		By("loading it once its writer labels it")
		sec.Labels = map[string]string{tokensv1alpha1.ManagedByLabel: tokensv1alpha1.ManagedByValue}
		Expect(k8s.Update(ctx, sec)).To(Succeed())
		// Setup tries again every 2s.
		Eventually(setup, "10s").Should(Receive(BeNil()))
		Expect(store.State().ID()).To(Equal(token.SaltID([]byte(first))))
		Expect(store.Waiting()).To(BeEmpty())

		By("serving tokens, and never writing the Secret (no label, annotation or salt ID)")
		Eventually(func() int { return status(op.authURL+"/readyz", "") }).Should(Equal(http.StatusOK))
		key := types.NamespacedName{Namespace: tokNS, Name: "reader"}
		Expect(k8s.Create(ctx, &tokensv1alpha1.ApiToken{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
			Spec:       tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"},
		})).To(Succeed())
		tokenOf := func(g Gomega) string {
			var s corev1.Secret
			g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: tokNS, Name: key.Name + "-token"}, &s)).To(Succeed())
			return string(s.Data["token"])
		}
		var tok string
		Eventually(func(g Gomega) {
			tok = tokenOf(g)
			g.Expect(op.verifies(tok)).To(BeTrue())
		}, "20s").Should(Succeed())
		Consistently(unwritten(sec.ResourceVersion), "1s").Should(Succeed())

		By("following a rotation its writer makes with the page's commands: a new salt, and the old salt's ID as replaced")
		oldID := store.State().ID()
		Expect(runDocs(docs[1], tokNS)).To(ContainSubstring(key.Name))
		Expect(k8s.Get(ctx, ref, sec)).To(Succeed())
		Expect(sec.Annotations).To(HaveKeyWithValue(salt.ReplacesAnnotation, oldID))
		second := string(sec.Data[salt.Key])
		Expect(len(second)).To(BeNumerically(">=", salt.MinSize))
		newID := token.SaltID([]byte(second))
		Eventually(func() string { return store.State().ID() }).Should(Equal(newID))
		var rotated string
		Eventually(func(g Gomega) {
			var at tokensv1alpha1.ApiToken
			g.Expect(k8s.Get(ctx, key, &at)).To(Succeed())
			g.Expect(at.Status.Verification.SaltID).To(Equal(newID))
			rotated = tokenOf(g)
			g.Expect(rotated).NotTo(Equal(tok))
			g.Expect(op.verifies(rotated)).To(BeTrue())
		}, "20s").Should(Succeed())
		Expect(op.verifies(tok)).To(BeFalse(), "a token made with the replaced salt still verifies")
		Consistently(unwritten(sec.ResourceVersion), "1s").Should(Succeed())

		By("starting again on the rotated Secret: the token is neither held nor re-issued")
		first1Logs := op.logs.String()
		op.stop()
		op = startOperator(o, tweak, nil)
		Expect(op.store.State().ID()).To(Equal(newID))
		Eventually(func() bool { return op.verifies(rotated) }).Should(BeTrue())
		tok = rotated
		Consistently(func(g Gomega) {
			g.Expect(tokenOf(g)).To(Equal(rotated))
			unwritten(sec.ResourceVersion)(g)
		}, "2s").Should(Succeed())
		Expect(eventCount(Default, tokNS, key.Name, "SaltMismatch")).To(BeZero())

		By("leaving an emptied Secret empty, and still verifying with the salt in memory")
		sec.Data = map[string][]byte{salt.Key: nil}
		Expect(k8s.Update(ctx, sec)).To(Succeed())
		Consistently(func(g Gomega) {
			unwritten(sec.ResourceVersion)(g)
			g.Expect(op.verifies(tok)).To(BeTrue())
		}, "2s").Should(Succeed())

		By("leaving a deleted Secret deleted, and still verifying")
		Expect(k8s.Delete(ctx, sec)).To(Succeed())
		Consistently(func(g Gomega) {
			absent(g)
			g.Expect(op.verifies(tok)).To(BeTrue())
		}, "2s").Should(Succeed())
		Expect(eventCount(Default, opNS, ref.Name, "SaltSecretRecreated")).To(BeZero())

		for _, secret := range []string{first, second, rotated} {
			Expect(strings.Contains(suiteLogs.String()+first1Logs+op.logs.String(), secret)).To(BeFalse(), "a salt or token was logged")
		}
	})

	It("returns at once an error that is not a wait (a weak salt), and waits for an absent one only until its context ends", func() {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		o := operatorOptions(newNamespace("op"), clock.RealClock{})
		o.SaltCreate, o.SaltSecret = false, "absent"
		store := app.NewSaltStore(o)
		Expect(store.Provided).To(BeTrue())
		Expect(errors.Is(store.Wait(ctx, k8s, "", true, nil, 50*time.Millisecond), context.DeadlineExceeded)).To(BeTrue())
		o.SaltSecret = "weak"
		weak := app.NewSaltStore(o)
		Expect(k8s.Create(context.Background(), &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: "weak", Labels: map[string]string{tokensv1alpha1.ManagedByLabel: tokensv1alpha1.ManagedByValue}},
			Data:       map[string][]byte{salt.Key: []byte("short")},
		})).To(Succeed())
		var werr *salt.WeakSaltError
		Expect(errors.As(weak.Wait(context.Background(), k8s, "", true, nil, 50*time.Millisecond), &werr)).To(BeTrue())
	})
})

// docBlocks returns the shell blocks of docs/page, the first under each
// heading in turn (a line equal to it).
func docBlocks(page string, headings ...string) []string {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", page))
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	lines := strings.Split(string(data), "\n")
	var out []string
	i := 0
	for _, h := range headings {
		for i < len(lines) && lines[i] != h {
			i++
		}
		for i < len(lines) && lines[i] != "```sh" {
			i++
		}
		var block []string
		for i++; i < len(lines) && lines[i] != "```"; i++ {
			block = append(block, lines[i])
		}
		ExpectWithOffset(1, block).NotTo(BeEmpty(), "docs/%s: no sh block under %q", page, h)
		out = append(out, strings.Join(block, "\n"))
	}
	return out
}

// runDocs runs a page's block with bash and kubectl, as the suite's admin
// (kubeconfig), returning its output. Other specs' ApiTokens share this
// API server (with their own salts), so "get apitokens -A" is narrowed to
// ns.
func runDocs(block, ns string) string {
	out, err := exec.Command(filepath.Join(testenv.RepoRoot(), "hack", "envtest-binaries.sh"), "kubectl").Output()
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", strings.ReplaceAll(block, "get apitokens -A ", "get apitokens -n "+ns+" "))
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "PATH="+strings.TrimSpace(string(out))+string(os.PathListSeparator)+os.Getenv("PATH"))
	got, err := cmd.CombinedOutput()
	ExpectWithOffset(1, err).NotTo(HaveOccurred(), "%s\n%s", block, got)
	return string(got)
}
