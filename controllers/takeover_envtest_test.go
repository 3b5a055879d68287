package controllers

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// watchBreaker wraps a client's transport: Break ends every Secret watch
// it carries (client-go then relists), and a watch that resumes instead is
// answered 410 Gone, as the API server does for a resource version
// compacted away, so that the informer must relist: through a watch-list
// stream, whose objects client-go transforms twice.
type watchBreaker struct {
	mu      sync.Mutex
	cancels []context.CancelFunc
	expire  atomic.Int32
	broken  atomic.Bool
	relists atomic.Int32
}

func (b *watchBreaker) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		q := req.URL.Query()
		if q.Get("watch") != "true" || !strings.HasSuffix(req.URL.Path, "/secrets") {
			return rt.RoundTrip(req)
		}
		if q.Get("sendInitialEvents") == "true" && b.broken.Load() {
			b.relists.Add(1)
		}
		if q.Get("sendInitialEvents") != "true" && b.expire.CompareAndSwap(1, 0) {
			gone := `{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version","reason":"Expired","code":410}}` + "\n"
			return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
				Body: io.NopCloser(strings.NewReader(gone)), Request: req}, nil
		}
		ctx, cancel := context.WithCancel(req.Context())
		b.mu.Lock()
		b.cancels = append(b.cancels, cancel)
		b.mu.Unlock()
		return rt.RoundTrip(req.WithContext(ctx))
	})
}

// Break ends the Secret watches and arms one 410 Gone for a watch that
// resumes; from then on, relists (watch-list streams) are counted.
func (b *watchBreaker) Break() {
	b.expire.Store(1)
	b.broken.Store(true)
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, cancel := range b.cancels {
		cancel()
	}
	b.cancels = nil
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// cutReasons are the reasons of a token cut without being asked.
var cutReasons = []string{tokensv1alpha1.ReasonSecretTampered, tokensv1alpha1.ReasonSecretMissing,
	tokensv1alpha1.ReasonSaltRotated, tokensv1alpha1.ReasonSecretUntrusted}

var _ = Describe("An operator that starts over existing tokens (a rollout, a leader change) or relists them", func() {
	var (
		ctx    context.Context
		ns     string
		keys   []types.NamespacedName
		hashes map[types.NamespacedName]string
		// What a replica must never rewrite over: each Secret's version
		// (its token and the rendered keys of spec.secretTemplate.data) and
		// the recorded first use of the token that ends its grace by use.
		secretVersions map[types.NamespacedName]string
		firstUses      map[types.NamespacedName]string
	)
	BeforeEach(func() {
		ctx = context.Background()
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "takeover-"}}
		Expect(k8s.Create(ctx, n)).To(Succeed())
		ns = n.Name
		keys, hashes = nil, map[types.NamespacedName]string{}
		secretVersions, firstUses = map[types.NamespacedName]string{}, map[types.NamespacedName]string{}
		usedSpec := *graceSpec.DeepCopy()
		usedSpec.Rotation.GraceUntilNewTokenUsed = true
		specs := map[string]tokensv1alpha1.ApiTokenSpec{
			"a": {Type: tokensv1alpha1.ReadOnly, Duration: "30d"}, "b": {Type: tokensv1alpha1.ReadOnly, Duration: "30d"},
			"c":        {Type: tokensv1alpha1.ReadOnly, Duration: "30d"},
			"rendered": dataSpec(), // four keys rendered from the token
			"used":     usedSpec,   // its first use recorded below
		}
		for name, spec := range specs {
			at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: spec}
			Expect(k8s.Create(ctx, at)).To(Succeed())
			keys = append(keys, client.ObjectKeyFromObject(at))
		}
		for _, key := range keys {
			Eventually(func(g Gomega) {
				var at tokensv1alpha1.ApiToken
				g.Expect(k8s.Get(ctx, key, &at)).To(Succeed())
				g.Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
				var s corev1.Secret
				g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: at.SecretName()}, &s)).To(Succeed())
				g.Expect(verifiesNow(g, key, string(s.Data[tokensv1alpha1.SecretTokenKey]))).To(BeTrue())
				if key.Name == "rendered" {
					g.Expect(s.Data).To(HaveKeyWithValue("authorization", append([]byte("Bearer "), s.Data[tokensv1alpha1.SecretTokenKey]...)))
				}
				hashes[key] = at.Status.Verification.Hash
			}).Should(Succeed())
		}
		// The first use of "used" as an auth endpoint records it.
		used := types.NamespacedName{Namespace: ns, Name: "used"}
		Eventually(func(g Gomega) {
			var at tokensv1alpha1.ApiToken
			g.Expect(k8s.Get(ctx, used, &at)).To(Succeed())
			at.Status.Verification.FirstUsedAt = &metav1.Time{Time: fakeClock.Now().Truncate(time.Second)}
			g.Expect(k8s.Status().Update(ctx, &at)).To(Succeed())
		}).Should(Succeed())
		// The suite's operator settles over it; then the versions are taken.
		Consistently(func(g Gomega) {
			for _, key := range keys {
				var at tokensv1alpha1.ApiToken
				g.Expect(k8s.Get(ctx, key, &at)).To(Succeed())
				var s corev1.Secret
				g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: at.SecretName()}, &s)).To(Succeed())
				if v, ok := secretVersions[key]; ok {
					g.Expect(s.ResourceVersion).To(Equal(v), "%s's Secret is still being written", key.Name)
				}
				secretVersions[key] = s.ResourceVersion
				firstUses[key] = fmt.Sprint(at.Status.Verification.FirstUsedAt)
			}
		}, 2*time.Second, 500*time.Millisecond).Should(Succeed())
		Expect(firstUses[used]).NotTo(Equal(fmt.Sprint((*metav1.Time)(nil))), "the first use was not kept")
	})

	// startOperator starts a second operator as main wires it (the real
	// cache options, its own salt store loaded from the salt Secret), over
	// the namespace's existing tokens, and returns once its caches synced.
	startOperator := func(wrap func(http.RoundTripper) http.RoundTripper) {
		cfg := rest.CopyConfig(env.Config)
		cfg.WrapTransport = wrap
		c, err := client.New(cfg, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		salts := salt.NewStore(saltStore.Ref())
		Expect(salts.Load(ctx, c, "", false)).To(Succeed())
		opts := CacheOptions(types.NamespacedName{}, salts, nil)
		opts.DefaultNamespaces = map[string]cache.Config{ns: {}, operatorNamespace: {}}
		mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, Cache: opts,
			// The suite's own operator registered the controller's name.
			Controller: config.Controller{SkipNameValidation: ptr.To(true)}})
		Expect(err).NotTo(HaveOccurred())
		Expect((&ApiTokenReconciler{
			Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: scheme,
			Recorder: mgr.GetEventRecorder("apitoken-operator"), Clock: fakeClock, Salt: salts,
			MaxConcurrentReconciles: 4,
		}).SetupWithManager(mgr)).To(Succeed())
		mgrCtx, cancel := context.WithCancel(ctx)
		DeferCleanup(cancel)
		go func() {
			defer GinkgoRecover()
			Expect(mgr.Start(mgrCtx)).To(Succeed())
		}()
		// The controller starts its informers after the manager: wait
		// until they hold the namespace's Secrets.
		Eventually(func(g Gomega) {
			var secrets corev1.SecretList
			g.Expect(mgr.GetCache().List(mgrCtx, &secrets, client.InNamespace(ns))).To(Succeed())
			g.Expect(secrets.Items).To(HaveLen(len(keys)))
		}).Should(Succeed())
	}

	// untouched holds for a while: every token keeps its hash and Secret,
	// and no Event says a token was cut.
	untouched := func() {
		Consistently(func(g Gomega) {
			for _, key := range keys {
				var at tokensv1alpha1.ApiToken
				g.Expect(k8s.Get(ctx, key, &at)).To(Succeed())
				g.Expect(at.Status.Verification.Hash).To(Equal(hashes[key]), "%s was re-issued", key.Name)
				g.Expect(fmt.Sprint(at.Status.Verification.FirstUsedAt)).To(Equal(firstUses[key]), "%s's first use was rewritten", key.Name)
				var s corev1.Secret
				g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: at.SecretName()}, &s)).To(Succeed())
				g.Expect(s.ResourceVersion).To(Equal(secretVersions[key]), "%s's Secret (its token or rendered keys) was rewritten", key.Name)
			}
			var evs eventsv1.EventList
			g.Expect(k8s.List(ctx, &evs, client.InNamespace(ns))).To(Succeed())
			for _, e := range evs.Items {
				g.Expect(cutReasons).NotTo(ContainElement(e.Reason), "%s: %s", e.Regarding.Name, e.Note)
			}
		}, 4*time.Second, 200*time.Millisecond).Should(Succeed())
	}

	It("re-issues nothing when a fresh operator takes over (its informers sync over a watch-list stream)", func() {
		startOperator(nil)
		untouched()
	})

	It("re-issues nothing when its Secret watch is answered 410 Gone and it relists", func() {
		var b watchBreaker
		startOperator(b.wrap)
		b.Break()
		Eventually(b.relists.Load, 30*time.Second).Should(BeNumerically(">=", 1), "the informer did not relist its Secrets")
		untouched()
	})
})

// kubectl runs the real kubectl (built beside the envtest binaries) as a
// cluster admin of the suite's API server.
func kubectl(args ...string) ([]byte, error) {
	assets, err := testenv.Assets()
	if err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	if err := env.WriteKubeconfig(kubeconfig, "admin"); err != nil {
		return nil, err
	}
	return exec.Command(filepath.Join(assets, "kubectl"), append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
}

var _ = Describe("The cut guard (the blast radius of a bug, a restore or a bad prune)", func() {
	It("re-issues the first tokens whose Secrets were edited at once, holds and reports the rest, and re-issues each held one when a person asks", func() {
		ctx := context.Background()
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "blast-"}}
		Expect(k8s.Create(ctx, n)).To(Succeed())
		// All in one namespace, which spends at most half the bound.
		const tokens, limit, cut = 20, 5, 3
		suiteCuts.Set(limit, 0, time.Hour)
		DeferCleanup(func() { suiteCuts.Set(0, 0, 0) })

		hashes := map[string]string{}
		for i := range tokens {
			at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("t%02d", i), Namespace: n.Name},
				Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"}}
			Expect(k8s.Create(ctx, at)).To(Succeed())
		}
		Eventually(func(g Gomega) {
			var list tokensv1alpha1.ApiTokenList
			g.Expect(k8s.List(ctx, &list, client.InNamespace(n.Name))).To(Succeed())
			g.Expect(list.Items).To(HaveLen(tokens))
			for _, at := range list.Items {
				g.Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
				hashes[at.Name] = at.Status.Verification.Hash
			}
		}).Should(Succeed())

		// Every Secret is edited at once, as a bad restore would.
		originals := map[string][]byte{}
		for name := range hashes {
			var s corev1.Secret
			Expect(k8s.Get(ctx, types.NamespacedName{Namespace: n.Name, Name: name + "-token"}, &s)).To(Succeed())
			originals[name] = s.Data[tokensv1alpha1.SecretTokenKey]
			other, err := token.Generate()
			Expect(err).NotTo(HaveOccurred())
			s.Data[tokensv1alpha1.SecretTokenKey] = []byte(other)
			Expect(k8s.Update(ctx, &s)).To(Succeed())
		}

		var held []string
		Eventually(func(g Gomega) {
			var list tokensv1alpha1.ApiTokenList
			g.Expect(k8s.List(ctx, &list, client.InNamespace(n.Name))).To(Succeed())
			reissued := 0
			held = nil
			for _, at := range list.Items {
				switch {
				case at.Status.Verification.Hash != hashes[at.Name]:
					reissued++
				case readyReason(&at) == tokensv1alpha1.ReasonCutHeld:
					held = append(held, at.Name)
				}
			}
			g.Expect(reissued).To(Equal(cut))
			g.Expect(held).To(HaveLen(tokens - cut))
			g.Expect(testutil.ToFloat64(cutHeldTokens)).To(BeNumerically("==", tokens-cut))
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			var evs eventsv1.EventList
			g.Expect(k8s.List(ctx, &evs, client.InNamespace(n.Name))).To(Succeed())
			reasons := map[string]int{}
			for _, e := range evs.Items {
				reasons[e.Reason]++
			}
			g.Expect(reasons[tokensv1alpha1.ReasonCutHeld]).To(Equal(tokens - cut))
			g.Expect(reasons[tokensv1alpha1.ReasonSecretTampered]).To(Equal(cut))
		}).Should(Succeed())

		// A held token keeps verifying as it did: its hash stays.
		Consistently(func(g Gomega) {
			for _, name := range held {
				var at tokensv1alpha1.ApiToken
				g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: n.Name, Name: name}, &at)).To(Succeed())
				g.Expect(at.Status.Verification.Hash).To(Equal(hashes[name]))
			}
		}, 2*time.Second, 200*time.Millisecond).Should(Succeed())

		// A Secret put back as it was leaves the hold by itself, with its
		// token unchanged (the other way out the docs give).
		repaired := held[0]
		held = held[1:]
		var s corev1.Secret
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: n.Name, Name: repaired + "-token"}, &s)).To(Succeed())
		s.Data[tokensv1alpha1.SecretTokenKey] = originals[repaired]
		Expect(k8s.Update(ctx, &s)).To(Succeed())
		Eventually(func(g Gomega) {
			var at tokensv1alpha1.ApiToken
			g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: n.Name, Name: repaired}, &at)).To(Succeed())
			g.Expect(readyReason(&at)).NotTo(Equal(tokensv1alpha1.ReasonCutHeld))
			g.Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
			g.Expect(at.Status.Verification.Hash).To(Equal(hashes[repaired]))
			g.Expect(verifiesNow(g, client.ObjectKeyFromObject(&at), string(originals[repaired]))).To(BeTrue())
			g.Expect(testutil.ToFloat64(cutHeldTokens)).To(BeNumerically("==", tokens-cut-1))
		}).Should(Succeed())

		// The documented release: a regenerate request on each held token.
		for _, name := range held {
			out, err := kubectl("-n", n.Name, "annotate", "apitoken", name, tokensv1alpha1.RegenerateAnnotation+"=release-1", "--overwrite")
			Expect(err).NotTo(HaveOccurred(), string(out))
		}
		Eventually(func(g Gomega) {
			for _, name := range held {
				var at tokensv1alpha1.ApiToken
				g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: n.Name, Name: name}, &at)).To(Succeed())
				g.Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
				g.Expect(at.Status.Verification.Hash).NotTo(Equal(hashes[name]))
				g.Expect(at.Status.Verification.PreviousHash).To(BeEmpty(), "a tampered token's cut keeps no grace")
				var s corev1.Secret
				g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: n.Name, Name: name + "-token"}, &s)).To(Succeed())
				g.Expect(verifiesNow(g, client.ObjectKeyFromObject(&at), string(s.Data[tokensv1alpha1.SecretTokenKey]))).To(BeTrue())
			}
			g.Expect(testutil.ToFloat64(cutHeldTokens)).To(BeZero())
		}).Should(Succeed())
	})
})
