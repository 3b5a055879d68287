package authserver

import (
	"context"
	"net/http"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/apitoken-operator/apitoken-operator/controllers"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

var (
	suiteEnv *testenv.Env
	k8s      client.Client
	// suiteClock only ever moves forward (see controllers' fakeClock).
	suiteClock = clocktesting.NewFakeClock(time.Now())
	authURL    string
	// grpcClient asks the same index through gRPC ext_authz.
	grpcClient authv3.AuthorizationClient
	cancelMgr  context.CancelFunc
)

func TestAuthEndpointEnvtest(t *testing.T) {
	RegisterFailHandler(Fail)
	// Specs run in random order (the seed is printed as "Random Seed");
	// rerun one order with -ginkgo.seed=N.
	suiteConfig, reporterConfig := GinkgoConfiguration()
	suiteConfig.RandomizeAllSpecs = true
	RunSpecs(t, "Auth endpoint suite (operator and endpoint against a real kube-apiserver)", suiteConfig, reporterConfig)
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	scheme := testenv.Scheme()
	var err error
	suiteEnv, err = testenv.Start(testenv.Options{GarbageCollector: true})
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(suiteEnv.Config, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	ctx := context.Background()
	Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apitoken-system"}})).To(Succeed())
	store := salt.NewStore(types.NamespacedName{Namespace: "apitoken-system", Name: "salt"})
	Expect(store.Load(ctx, k8s, "", true)).To(Succeed())

	mgr, err := ctrl.NewManager(suiteEnv.Config, ctrl.Options{
		Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		Cache: controllers.CacheOptions(types.NamespacedName{}, store, nil),
	})
	Expect(err).NotTo(HaveOccurred())
	Expect((&controllers.ApiTokenReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: scheme,
		Recorder: mgr.GetEventRecorder("apitoken-operator"), Clock: suiteClock, Salt: store,
	}).SetupWithManager(mgr)).To(Succeed())
	ix := NewIndex(store.Hasher)
	srv := &Server{Addr: "127.0.0.1:0", Handler: &Handler{Index: ix, Clock: suiteClock, Options: Options{DefaultNamespaces: []string{"*"}}}, Cache: mgr.GetCache()}
	addr, err := srv.Listen()
	Expect(err).NotTo(HaveOccurred())
	authURL = "http://" + addr.String()
	Expect(mgr.Add(srv)).To(Succeed())
	gsrv := &GRPCServer{Addr: "127.0.0.1:0", Handler: srv.Handler, Ready: srv.Ready}
	gaddr, err := gsrv.Listen()
	Expect(err).NotTo(HaveOccurred())
	Expect(mgr.Add(gsrv)).To(Succeed())
	conn, err := grpc.NewClient(gaddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	Expect(err).NotTo(HaveOccurred())
	grpcClient = authv3.NewAuthorizationClient(conn)

	var mctx context.Context
	mctx, cancelMgr = context.WithCancel(context.Background())
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(mctx)).To(Succeed())
	}()
	Eventually(func() int { return status(authURL+"/readyz", "") }).Should(Equal(http.StatusOK))
})

var _ = AfterSuite(func() {
	if cancelMgr != nil {
		cancelMgr()
	}
	if suiteEnv != nil {
		Expect(suiteEnv.Stop()).To(Succeed())
	}
})

// verifyPath asks the explicit endpoint for a scope every read-only token grants.
const verifyPath = "/v1/authorize?scope=articles:read"

// status sends a forward-auth GET with tok as bearer and returns the code.
func status(url, tok string) int {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}
