package controllers

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
	_ "github.com/apitoken-operator/apitoken-operator/internal/testredact" // no token in a failure message
)

const operatorNamespace = "apitoken-system"

var (
	env    *testenv.Env
	k8s    client.Client
	scheme = testenv.Scheme()
	// fakeClock only ever moves forward: a spec steps it past its own
	// tokens' deadlines and never back, so every spec holds in any order.
	fakeClock = clocktesting.NewFakeClock(time.Now())
	saltStore = salt.NewStore(types.NamespacedName{Namespace: operatorNamespace, Name: "apitoken-operator-salt"})
	cancelMgr context.CancelFunc
	// suiteCuts is the suite operator's cut guard: no bound, but for the
	// spec that sets one.
	suiteCuts = &CutGuard{}
	// suiteCache is the suite operator's cache, for the specs that measure
	// what it holds.
	suiteCache cache.Cache
)

func TestControllersEnvtest(t *testing.T) {
	RegisterFailHandler(Fail)
	// Specs run in random order (the seed is printed as "Random Seed");
	// rerun one order with -ginkgo.seed=N.
	suiteConfig, reporterConfig := GinkgoConfiguration()
	suiteConfig.RandomizeAllSpecs = true
	RunSpecs(t, "Controllers suite (real kube-apiserver and etcd)", suiteConfig, reporterConfig)
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))

	var err error
	env, err = testenv.Start(testenv.Options{GarbageCollector: true})
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(env.Config, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	ctx := context.Background()
	Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}})).To(Succeed())
	Expect(saltStore.Load(ctx, k8s, "", true)).To(Succeed())

	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:   CacheOptions(types.NamespacedName{}, saltStore, nil),
	})
	Expect(err).NotTo(HaveOccurred())
	suiteCache = mgr.GetCache()
	Expect((&ApiTokenReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: scheme,
		Recorder: mgr.GetEventRecorder("apitoken-operator"), Clock: fakeClock, Salt: saltStore,
		MaxConcurrentReconciles: 4, Cuts: suiteCuts, Policies: true,
	}).SetupWithManager(mgr)).To(Succeed())
	Expect((&ApiTokenPolicyReconciler{Client: mgr.GetClient(), Clock: fakeClock}).SetupWithManager(mgr)).To(Succeed())

	var mgrCtx context.Context
	mgrCtx, cancelMgr = context.WithCancel(context.Background())
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(mgrCtx)).To(Succeed())
	}()
})

var _ = AfterSuite(func() {
	if cancelMgr != nil {
		cancelMgr()
	}
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})
