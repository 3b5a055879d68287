package app_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// The salt's life: each spec starts an operator (app.Setup) on its own
// two namespaces, stops it, and may start another on the same ones, as a
// restart would. The suite's operator is stopped meanwhile (ownOperators).
var _ = Describe("The salt's life", Label(ownOperators), func() {
	var (
		ctx               context.Context
		opNS, tokNS       string
		fakeClock         *clocktesting.FakeClock
		saltRef           types.NamespacedName
		running           []*operator
		start             func(env string, overlap time.Duration) *operator
		createTokens      func(n int) []types.NamespacedName
		get               func(g Gomega, key types.NamespacedName) *tokensv1alpha1.ApiToken
		secretToken       func(g Gomega, key types.NamespacedName) string
		saltSecret        func(g Gomega) *corev1.Secret
		updateSaltSecret  func(mutate func(*corev1.Secret))
		waitActive        func(op *operator, keys []types.NamespacedName) map[types.NamespacedName]string
		noSecretMaterial  func(text string, secrets ...string)
		recordedSaltIDsOf func(keys []types.NamespacedName) map[types.NamespacedName]tokensv1alpha1.Verification
	)

	BeforeEach(func() {
		ctx = context.Background()
		opNS, tokNS = newNamespace("op"), newNamespace("tok")
		saltRef = types.NamespacedName{Namespace: opNS, Name: "apitoken-operator-salt"}
		fakeClock = clocktesting.NewFakeClock(time.Now())
		running = nil
		start = func(env string, overlap time.Duration) *operator {
			o := operatorOptions(opNS, fakeClock)
			o.EnvSalt, o.SaltOverlap = env, overlap
			op := startOperator(o, func(mo *ctrl.Options) {
				// It sees only the spec's two namespaces.
				mo.Cache.DefaultNamespaces = map[string]cache.Config{opNS: {}, tokNS: {}}
			}, nil)
			running = append(running, op)
			return op
		}
		createTokens = func(n int) []types.NamespacedName {
			var keys []types.NamespacedName
			for i := range n {
				at := &tokensv1alpha1.ApiToken{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("t%d", i), Namespace: tokNS},
					Spec:       tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d", Rotation: &tokensv1alpha1.Rotation{GracePeriod: "5m"}},
				}
				Expect(k8s.Create(ctx, at)).To(Succeed())
				keys = append(keys, types.NamespacedName{Namespace: tokNS, Name: at.Name})
			}
			return keys
		}
		get = func(g Gomega, key types.NamespacedName) *tokensv1alpha1.ApiToken {
			var at tokensv1alpha1.ApiToken
			g.Expect(k8s.Get(ctx, key, &at)).To(Succeed())
			return &at
		}
		secretToken = func(g Gomega, key types.NamespacedName) string {
			var s corev1.Secret
			g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: key.Name + "-token"}, &s)).To(Succeed())
			return string(s.Data["token"])
		}
		saltSecret = func(g Gomega) *corev1.Secret {
			var s corev1.Secret
			g.Expect(k8s.Get(ctx, saltRef, &s)).To(Succeed())
			return &s
		}
		updateSaltSecret = func(mutate func(*corev1.Secret)) {
			Eventually(func(g Gomega) {
				s := saltSecret(g)
				if s.Annotations == nil {
					s.Annotations = map[string]string{}
				}
				mutate(s)
				g.Expect(k8s.Update(ctx, s)).To(Succeed())
			}).Should(Succeed())
		}
		waitActive = func(op *operator, keys []types.NamespacedName) map[types.NamespacedName]string {
			toks := map[types.NamespacedName]string{}
			for _, key := range keys {
				Eventually(func(g Gomega) {
					at := get(g, key)
					g.Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
					g.Expect(at.Status.Verification.PendingHash).To(BeEmpty())
					tok := secretToken(g, key)
					g.Expect(op.verifies(tok)).To(BeTrue())
					toks[key] = tok
				}, "20s").Should(Succeed())
			}
			return toks
		}
		recordedSaltIDsOf = func(keys []types.NamespacedName) map[types.NamespacedName]tokensv1alpha1.Verification {
			out := map[types.NamespacedName]tokensv1alpha1.Verification{}
			for _, key := range keys {
				out[key] = *get(Default, key).Status.Verification
			}
			return out
		}
		// noSecretMaterial fails if text holds any of secrets.
		noSecretMaterial = func(text string, secrets ...string) {
			for _, s := range secrets {
				if s != "" {
					Expect(strings.Contains(text, s)).To(BeFalse(), "a salt, token or hash was written out")
				}
			}
		}
	})
	AfterEach(func() {
		for _, op := range running {
			op.stop()
		}
	})
	stop := func(op *operator) {
		op.stop()
		running = running[:len(running)-1]
	}

	It("recreates a deleted salt Secret with the same salt, and no token breaks", func() {
		op := start("", time.Hour)
		keys := createTokens(3)
		toks := waitActive(op, keys)
		before := recordedSaltIDsOf(keys)
		orig := saltSecret(Default)

		c := newClients(op)
		for _, key := range keys {
			c.presentFixed("held", key.Name, toks[key])
		}
		Expect(k8s.Delete(ctx, orig)).To(Succeed())
		Eventually(func(g Gomega) {
			s := saltSecret(g)
			g.Expect(s.UID).NotTo(Equal(orig.UID), "not recreated yet")
			g.Expect(bytes.Equal(s.Data[salt.Key], orig.Data[salt.Key])).To(BeTrue(), "recreated with another salt")
			g.Expect(s.Labels).To(HaveKeyWithValue(tokensv1alpha1.ManagedByLabel, tokensv1alpha1.ManagedByValue))
		}, "10s").Should(Succeed())
		Consistently(func(g Gomega) {
			for _, key := range keys {
				v := get(g, key).Status.Verification
				g.Expect(v.Hash).To(Equal(before[key].Hash), "re-issued")
				g.Expect(v.SaltID).To(Equal(before[key].SaltID))
				g.Expect(secretToken(g, key)).To(Equal(toks[key]))
			}
		}, "2s").Should(Succeed())
		requests, refusals := c.stop()
		Expect(refusals).To(BeEmpty())
		Expect(requests).To(BeNumerically(">=", 50))
		Eventually(func(g Gomega) int { return eventCount(g, opNS, saltRef.Name, "SaltSecretRecreated") }).Should(Equal(1))
		for _, key := range keys {
			Expect(eventCount(Default, tokNS, key.Name, "SaltRotated")).To(BeZero())
			Expect(eventCount(Default, tokNS, key.Name, "SaltMismatch")).To(BeZero())
		}
		secrets := []string{string(orig.Data[salt.Key])}
		for _, key := range keys {
			secrets = append(secrets, toks[key], before[key].Hash)
		}
		noSecretMaterial(op.logs.String(), secrets...)
	})

	It("holds every token loudly when an operator starts without the salt the tokens record; a restore brings them back, an acknowledgement re-issues them", func() {
		op := start("", time.Hour)
		keys := createTokens(3)
		toks := waitActive(op, keys)
		before := recordedSaltIDsOf(keys)
		lost := saltSecret(Default).Data[salt.Key]
		stop(op)

		By("the salt Secret lost while the operator was down")
		Expect(k8s.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: opNS, Name: saltRef.Name}})).To(Succeed())
		held0 := gauge(Default, "apitoken_salt_mismatch_tokens")
		op = start("", time.Hour)
		fresh := saltSecret(Default).Data[salt.Key]
		Expect(bytes.Equal(fresh, lost)).To(BeFalse())
		for _, key := range keys {
			Eventually(func(g Gomega) {
				at := get(g, key)
				g.Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseFailed))
				ready := conditionOf(at, tokensv1alpha1.ConditionReady)
				g.Expect(ready.Reason).To(Equal(tokensv1alpha1.ReasonSaltMismatch))
				g.Expect(ready.Message).To(ContainSubstring(before[key].SaltID))
				g.Expect(eventCount(g, tokNS, key.Name, "SaltMismatch")).To(Equal(1))
			}, "10s").Should(Succeed())
		}
		Eventually(func(g Gomega) float64 { return gauge(g, "apitoken_salt_mismatch_tokens") }).Should(Equal(held0 + 3))
		Expect(op.logs.String()).To(And(MatchRegexp(`ERROR.*ApiTokens record a salt`), ContainSubstring(before[keys[0]].SaltID)), "no error line says so")
		Consistently(func(g Gomega) {
			for _, key := range keys {
				g.Expect(get(g, key).Status.Verification.Hash).To(Equal(before[key].Hash), "re-issued before anyone said so")
				g.Expect(secretToken(g, key)).To(Equal(toks[key]))
			}
		}, "2s").Should(Succeed())
		for _, key := range keys {
			Expect(eventCount(Default, tokNS, key.Name, "SaltMismatch")).To(Equal(1), "one Warning Event per token, not one per pass")
		}

		By("the salt restored from the backup: the same tokens verify, nothing re-issued")
		updateSaltSecret(func(s *corev1.Secret) { s.Data[salt.Key] = lost })
		for _, key := range keys {
			Eventually(func(g Gomega) {
				g.Expect(get(g, key).Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
				g.Expect(op.verifies(toks[key])).To(BeTrue())
			}, "10s").Should(Succeed())
			Expect(get(Default, key).Status.Verification.Hash).To(Equal(before[key].Hash))
			Expect(eventCount(Default, tokNS, key.Name, "SaltRotated")).To(BeZero())
		}
		Eventually(func(g Gomega) float64 { return gauge(g, "apitoken_salt_mismatch_tokens") }).Should(Equal(held0))
		secrets := []string{string(lost), string(fresh)}
		for _, key := range keys {
			secrets = append(secrets, toks[key], before[key].Hash)
		}
		noSecretMaterial(op.logs.String(), secrets...)
		stop(op)

		By("lost for good: held until the loss is acknowledged, then re-issued")
		Expect(k8s.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: opNS, Name: saltRef.Name}})).To(Succeed())
		op = start("", time.Hour)
		Eventually(func(g Gomega) string { return string(get(g, keys[0]).Status.Phase) }, "10s").Should(Equal(string(tokensv1alpha1.PhaseFailed)))
		updateSaltSecret(func(s *corev1.Secret) { s.Annotations[salt.ReplacesAnnotation] = before[keys[0]].SaltID })
		for _, key := range keys {
			Eventually(func(g Gomega) {
				cur := secretToken(g, key)
				g.Expect(cur).NotTo(Equal(toks[key]))
				g.Expect(op.verifies(cur)).To(BeTrue())
				g.Expect(op.verifies(toks[key])).To(BeFalse())
				g.Expect(get(g, key).Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
			}, "10s").Should(Succeed())
			// The Event is recorded after the status that says the same is
			// written, and reaches the API server on the recorder's own
			// goroutine: wait for it, then see that it stays the only one.
			Eventually(func(g Gomega) int { return eventCount(g, tokNS, key.Name, "SaltRotated") }, "10s").Should(Equal(1))
			Consistently(func(g Gomega) int { return eventCount(g, tokNS, key.Name, "SaltRotated") }, "1s").Should(Equal(1))
		}
	})

	It("refuses an API_TOKEN_SALT that disagrees with the salt Secret, naming both", func() {
		store := salt.NewStore(saltRef)
		Expect(store.Load(ctx, k8s, strongSalt("salt-from-the-environment"), true)).To(Succeed())
		Expect(string(saltSecret(Default).Data[salt.Key])).To(Equal(strongSalt("salt-from-the-environment")), "the environment seeds an absent Secret")

		By("a rolling update with another API_TOKEN_SALT: the new replicas do not start")
		for _, create := range []bool{true, false} {
			err := salt.NewStore(saltRef).Load(ctx, k8s, strongSalt("another-salt"), create)
			var mismatch *salt.EnvMismatchError
			Expect(errors.As(err, &mismatch)).To(BeTrue(), "Load = %v", err)
			Expect(err.Error()).To(And(ContainSubstring("API_TOKEN_SALT"), ContainSubstring("Secret "+saltRef.String())))
			noSecretMaterial(err.Error(), strongSalt("another-salt"), strongSalt("salt-from-the-environment"))
		}
		Expect(string(saltSecret(Default).Data[salt.Key])).To(Equal(strongSalt("salt-from-the-environment")), "a refused replica changed the Secret")

		By("after a rotation, the environment must follow the Secret")
		op := start(strongSalt("salt-from-the-environment"), time.Hour)
		updateSaltSecret(func(s *corev1.Secret) {
			s.Data[salt.NextKey] = []byte(strongSalt("the-next-salt"))
			s.Annotations[salt.RotateAnnotation] = "1"
		})
		Eventually(func(g Gomega) string { return string(saltSecret(g).Data[salt.Key]) }).Should(Equal(strongSalt("the-next-salt")))
		Eventually(func() string { return op.store.State().ID() }).Should(Equal(token.SaltID([]byte(strongSalt("the-next-salt")))), "the running replica follows the Secret")
		stop(op)
		Expect(salt.NewStore(saltRef).Load(ctx, k8s, strongSalt("salt-from-the-environment"), true)).To(MatchError(ContainSubstring("API_TOKEN_SALT")))
		Expect(salt.NewStore(saltRef).Load(ctx, k8s, strongSalt("the-next-salt"), true)).To(Succeed())
	})

	It("keeps every request verifying during a planned rotation, and cuts the old tokens at once in an emergency", func() {
		op := start("", time.Hour)
		keys := createTokens(6)
		toks := waitActive(op, keys)
		oldID := op.store.State().ID()

		// Two clients per token: one keeps the token it has (a pod whose
		// kubelet has not refreshed the Secret yet), one follows the
		// Secret as a mounted volume does, a moment after it changed.
		c := newClients(op)
		for _, key := range keys {
			c.presentFixed("old", key.Name, toks[key])
			c.presentMounted("mounted", key)
		}
		time.Sleep(500 * time.Millisecond)
		updateSaltSecret(func(s *corev1.Secret) { s.Annotations[salt.RotateAnnotation] = "planned-1" })
		var newID string
		Eventually(func(g Gomega) {
			newID = op.store.State().ID()
			g.Expect(newID).NotTo(Equal(oldID))
			for _, key := range keys {
				at := get(g, key)
				g.Expect(at.Status.Verification.SaltID).To(Equal(newID))
				g.Expect(at.Status.Verification.PendingHash).To(BeEmpty())
				g.Expect(secretToken(g, key)).NotTo(Equal(toks[key]))
			}
		}, "30s").Should(Succeed())
		Eventually(func(g Gomega) {
			for _, key := range keys {
				g.Expect(c.mountedValue(key.Name)).To(Equal(secretToken(g, key)), "the mounted copy has not moved yet")
			}
		}, "10s").Should(Succeed())
		time.Sleep(500 * time.Millisecond)
		requests, refusals := c.stop()
		Expect(refusals).To(BeEmpty(), "requests refused during the planned rotation")
		Expect(requests).To(BeNumerically(">=", 200))
		GinkgoWriter.Printf("planned rotation: %d requests, %d refused\n", requests, len(refusals))

		s := saltSecret(Default)
		Expect(s.Data).To(HaveKey(salt.PreviousKey))
		Expect(s.Annotations[salt.ReplacesAnnotation]).To(ContainSubstring(oldID))
		Expect(eventCount(Default, opNS, saltRef.Name, "SaltRotationPlanned")).To(Equal(1))

		By("at the overlap's end the old tokens stop verifying, and the previous salt leaves the Secret")
		_, until, ok := op.store.State().Overlap()
		Expect(ok).To(BeTrue())
		fakeClock.SetTime(until)
		for _, key := range keys {
			Expect(op.verifies(toks[key])).To(BeFalse())
			Expect(op.verifies(secretToken(Default, key))).To(BeTrue())
		}
		updateSaltSecret(func(s *corev1.Secret) { s.Annotations["test/poke"] = "1" })
		Eventually(func(g Gomega) map[string][]byte { return saltSecret(g).Data }).ShouldNot(HaveKey(salt.PreviousKey))

		By("an emergency rotation: no overlap")
		current := map[types.NamespacedName]string{}
		for _, key := range keys {
			current[key] = secretToken(Default, key)
		}
		updateSaltSecret(func(s *corev1.Secret) { s.Annotations[salt.RotateEmergencyAnnotation] = "compromised" })
		Eventually(func() string { return op.store.State().ID() }).ShouldNot(Equal(newID))
		Expect(op.store.PreviousHasher(fakeClock.Now())).To(BeNil())
		for _, key := range keys {
			Expect(op.verifies(current[key])).To(BeFalse(), "a token verified after an emergency rotation")
			Eventually(func(g Gomega) {
				cur := secretToken(g, key)
				g.Expect(cur).NotTo(Equal(current[key]))
				g.Expect(op.verifies(cur)).To(BeTrue())
				g.Expect(get(g, key).Status.Verification.PreviousHash).To(BeEmpty())
			}, "10s").Should(Succeed())
		}
	})
})

func conditionOf(at *tokensv1alpha1.ApiToken, typ string) metav1.Condition {
	for _, c := range at.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return metav1.Condition{}
}

// clients present tokens to an operator's auth endpoint until stopped,
// counting requests and refusals.
type clients struct {
	op       *operator
	requests atomic.Int64
	done     chan struct{}
	wg       sync.WaitGroup

	mu       sync.Mutex
	refusals []string
	mounted  map[string]*atomic.Value
}

func newClients(op *operator) *clients {
	return &clients{op: op, done: make(chan struct{}), mounted: map[string]*atomic.Value{}}
}

// present sends requests with tok() every 20ms.
func (c *clients) present(kind, name string, tok func() string) {
	c.wg.Add(1)
	go func() {
		defer GinkgoRecover()
		defer c.wg.Done()
		for {
			select {
			case <-c.done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			c.requests.Add(1)
			if code := status(c.op.authURL+verifyPath, tok()); code != http.StatusOK {
				c.mu.Lock()
				c.refusals = append(c.refusals, fmt.Sprintf("%s client of %s: %d", kind, name, code))
				c.mu.Unlock()
			}
		}
	}()
}

// presentFixed presents tok all along.
func (c *clients) presentFixed(kind, name, tok string) {
	c.present(kind, name, func() string { return tok })
}

// presentMounted presents what key's Secret holds, as a mounted volume
// shows it: a new value only once it has been in the Secret for 300ms
// (kubelet takes a minute or so; the index learns a new hash before the
// Secret is written, within the watch latency).
func (c *clients) presentMounted(kind string, key types.NamespacedName) {
	v := &atomic.Value{}
	c.mu.Lock()
	c.mounted[key.Name] = v
	c.mu.Unlock()
	read := func() string {
		var s corev1.Secret
		if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: key.Namespace, Name: key.Name + "-token"}, &s); err != nil {
			return ""
		}
		return string(s.Data["token"])
	}
	v.Store(read())
	c.wg.Add(1)
	go func() {
		defer GinkgoRecover()
		defer c.wg.Done()
		var seen string
		var seenAt time.Time
		for {
			select {
			case <-c.done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			cur := read()
			switch {
			case cur == "" || cur == v.Load().(string):
			case cur != seen:
				seen, seenAt = cur, time.Now()
			case time.Since(seenAt) >= 300*time.Millisecond:
				v.Store(cur)
			}
		}
	}()
	c.present(kind, key.Name, func() string { return v.Load().(string) })
}

func (c *clients) mountedValue(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mounted[name].Load().(string)
}

// stop ends every client and returns the number of requests and the refusals.
func (c *clients) stop() (int64, []string) {
	close(c.done)
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests.Load(), c.refusals
}

// eventCount counts the Events with reason about the object named name.
func eventCount(g Gomega, ns, name, reason string) int {
	var list eventsv1.EventList
	g.Expect(k8s.List(context.Background(), &list, client.InNamespace(ns))).To(Succeed())
	n := 0
	for _, e := range list.Items {
		if e.Regarding.Name == name && e.Reason == reason {
			n++
		}
	}
	return n
}

// gauge reads a gauge of the controller-runtime registry.
func gauge(g Gomega, name string) float64 {
	families, err := metrics.Registry.Gather()
	g.Expect(err).NotTo(HaveOccurred())
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

// strongSalt is name made as long as salt.MinSize asks: a salt that Load
// accepts, still told apart by its name.
func strongSalt(name string) string { return name + strings.Repeat("-", salt.MinSize) }
