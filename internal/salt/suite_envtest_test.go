package salt_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/apitoken-operator/apitoken-operator/controllers"
	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// This suite follows the salt through the operator's lives: each spec
// starts an operator (reconcilers, salt watcher, auth endpoint) on its own
// namespaces, stops it, and may start another on the same ones, as a
// restart would, against a real kube-apiserver and etcd.

var (
	suiteEnv *testenv.Env
	k8s      client.Client
	scheme   = testenv.Scheme()
)

func TestSaltLifeEnvtest(t *testing.T) {
	RegisterFailHandler(Fail)
	suiteConfig, reporterConfig := GinkgoConfiguration()
	suiteConfig.RandomizeAllSpecs = true
	RunSpecs(t, "The salt's life (operators against a real kube-apiserver and etcd)", suiteConfig, reporterConfig)
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	// Operators start and stop in every spec, on a machine shared with
	// other builds: wait for what must happen longer than Gomega's 1s.
	SetDefaultEventuallyTimeout(15 * time.Second)
	var err error
	suiteEnv, err = testenv.Start(testenv.Options{})
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(suiteEnv.Config, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
})

var _ = AfterSuite(func() {
	if suiteEnv != nil {
		Expect(suiteEnv.Stop()).To(Succeed())
	}
})

// lockedBuffer collects an operator's log lines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// operator is one running operator: its salt store, its auth endpoint's
// URL, and its log.
type operator struct {
	store   *salt.Store
	authURL string
	logs    *lockedBuffer
	stop    func()
}

type operatorOptions struct {
	operatorNS, tokenNS string
	env                 string
	overlap             time.Duration
	clock               clock.Clock
	// store, when set, is a store already loaded (a Provided one, by
	// Wait): the operator starts with it instead of loading one.
	store *salt.Store
}

// startOperator loads the salt as cmd/main.go does and runs the ApiToken
// and salt reconcilers, the salt watcher and the auth endpoint, seeing
// only the two namespaces.
func startOperator(o operatorOptions) *operator {
	ctx := context.Background()
	ref := types.NamespacedName{Namespace: o.operatorNS, Name: "apitoken-operator-salt"}
	op := &operator{store: o.store, logs: &lockedBuffer{}}
	if op.store == nil {
		op.store = salt.NewStore(ref)
		Expect(op.store.Load(ctx, k8s, o.env, true)).To(Succeed())
	}

	cacheOpts := controllers.CacheOptions(types.NamespacedName{}, op.store, nil)
	cacheOpts.DefaultNamespaces = map[string]cache.Config{o.operatorNS: {}, o.tokenNS: {}}
	logger := zap.New(zap.WriteTo(io.MultiWriter(op.logs, GinkgoWriter)), zap.UseDevMode(true))
	mgr, err := ctrl.NewManager(suiteEnv.Config, ctrl.Options{
		Scheme: scheme, Logger: logger, Cache: cacheOpts,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Each spec starts operators again in this one process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	recorder := mgr.GetEventRecorder("apitoken-operator")
	Expect((&controllers.ApiTokenReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: scheme,
		Recorder: recorder, Clock: o.clock, Salt: op.store, MaxConcurrentReconciles: 4, MaxSaltOverlap: o.overlap,
	}).SetupWithManager(mgr)).To(Succeed())
	Expect((&controllers.SaltReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Recorder: recorder, Clock: o.clock, Salt: op.store, Overlap: o.overlap,
	}).SetupWithManager(mgr)).To(Succeed())
	ix := authserver.NewIndex(op.store.Hasher).WithPrevious(op.store.PreviousHasher)
	srv := &authserver.Server{Addr: "127.0.0.1:0", Cache: mgr.GetCache(),
		Handler: &authserver.Handler{Index: ix, Clock: o.clock, Options: authserver.Options{DefaultNamespaces: []string{"*"}}}}
	addr, err := srv.Listen()
	Expect(err).NotTo(HaveOccurred())
	op.authURL = "http://" + addr.String()
	Expect(mgr.Add(srv)).To(Succeed())
	Expect(mgr.Add(&salt.Watcher{Store: op.store, Cache: mgr.GetCache()})).To(Succeed())

	mctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		Expect(mgr.Start(mctx)).To(Succeed())
	}()
	op.stop = func() { cancel(); <-done }
	Eventually(func() int { return status(op.authURL+"/readyz", "") }).Should(Equal(http.StatusOK))
	return op
}

// status sends a GET with tok as bearer and returns the status code.
func status(url, tok string) int {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// verifyPath asks the explicit endpoint for a scope every read-only token grants.
const verifyPath = "/v1/authorize?scope=articles:read"

func (op *operator) verifies(tok string) bool {
	return status(op.authURL+verifyPath, tok) == http.StatusOK
}

func newNamespace(prefix string) string {
	n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix}}
	Expect(k8s.Create(context.Background(), n)).To(Succeed())
	return n.Name
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
