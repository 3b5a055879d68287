package plugin_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/apitoken-operator/apitoken-operator/controllers"
	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
	"github.com/apitoken-operator/apitoken-operator/internal/plugin"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

var (
	env *testenv.Env
	k8s client.Client
	// fakeClock drives the reconciler and the auth endpoint; it only
	// moves forward (see controllers' suite).
	fakeClock = clocktesting.NewFakeClock(time.Now())
	// kubeconfig is an admin's (system:masters), passed as --kubeconfig.
	kubeconfig string
	// authURL serves the auth endpoint over HTTP, authTLSURL over HTTPS
	// with the self-signed certificate in caFile.
	authURL, authTLSURL, caFile string
	cancelMgr                   context.CancelFunc
)

func TestPluginEnvtest(t *testing.T) {
	RegisterFailHandler(Fail)
	suiteConfig, reporterConfig := GinkgoConfiguration()
	suiteConfig.RandomizeAllSpecs = true
	RunSpecs(t, "kubectl-apitoken suite (the plugin against a real kube-apiserver, the operator and its auth endpoint)", suiteConfig, reporterConfig)
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	// The machine is shared: give the operator time, never a sleep.
	SetDefaultEventuallyTimeout(30 * time.Second)
	SetDefaultEventuallyPollingInterval(50 * time.Millisecond)
	scheme := testenv.Scheme()
	var err error
	env, err = testenv.Start(testenv.Options{})
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(env.Config, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	ctx := context.Background()
	Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apitoken-system"}})).To(Succeed())
	store := salt.NewStore(types.NamespacedName{Namespace: "apitoken-system", Name: "apitoken-operator-salt"})
	Expect(store.Load(ctx, k8s, "", true)).To(Succeed())

	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		Cache: controllers.CacheOptions(types.NamespacedName{}, store, nil),
	})
	Expect(err).NotTo(HaveOccurred())
	Expect((&controllers.ApiTokenReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: scheme,
		Recorder: mgr.GetEventRecorder("apitoken-operator"), Clock: fakeClock, Salt: store,
		MaxConcurrentReconciles: 2,
	}).SetupWithManager(mgr)).To(Succeed())

	// The auth endpoint as cmd/main.go wires it: over HTTP (make run) ...
	ix := authserver.NewIndex(store.Hasher)
	handler := &authserver.Handler{Index: ix, Clock: fakeClock, Options: authserver.Options{DefaultNamespaces: []string{"*"}}}
	srv := &authserver.Server{Addr: "127.0.0.1:0", Handler: handler, Cache: mgr.GetCache()}
	addr, err := srv.Listen()
	Expect(err).NotTo(HaveOccurred())
	authURL = "http://" + addr.String()
	Expect(mgr.Add(srv)).To(Succeed())
	Expect(mgr.Add(&authserver.LastUsedWriter{Index: ix, Client: mgr.GetClient(), Clock: fakeClock, Interval: 200 * time.Millisecond})).To(Succeed())
	// ... and over HTTPS (config/), with its own index.
	dir := GinkgoT().TempDir()
	caFile = filepath.Join(dir, "tls.crt")
	Expect(testenv.WriteSelfSignedCert(caFile, filepath.Join(dir, "tls.key"), 1)).To(Succeed())
	tlsSrv := &authserver.Server{
		Addr: "127.0.0.1:0", CertFile: caFile, KeyFile: filepath.Join(dir, "tls.key"),
		Handler: &authserver.Handler{Index: authserver.NewIndex(store.Hasher), Clock: fakeClock, Options: handler.Options},
		Cache:   mgr.GetCache(),
	}
	tlsAddr, err := tlsSrv.Listen()
	Expect(err).NotTo(HaveOccurred())
	authTLSURL = "https://" + tlsAddr.String()
	Expect(mgr.Add(tlsSrv)).To(Succeed())

	var mctx context.Context
	mctx, cancelMgr = context.WithCancel(context.Background())
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(mctx)).To(Succeed())
	}()
	Eventually(func() int { return httpStatus(authURL + "/readyz") }).Should(Equal(http.StatusOK))
	Eventually(func() int { return httpStatus(authTLSURL + "/readyz") }).Should(Equal(http.StatusOK))

	kubeconfig = filepath.Join(dir, "kubeconfig")
	Expect(env.WriteKubeconfig(kubeconfig, "plugin-admin")).To(Succeed())
})

var _ = AfterSuite(func() {
	if cancelMgr != nil {
		cancelMgr()
	}
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})

func httpStatus(url string) int {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// result is what one in-process run of kubectl-apitoken wrote.
type result struct {
	out, errOut string
	err         error
}

// kubectlApitoken runs the plugin in-process as an admin with args, stdin
// empty.
func kubectlApitoken(args ...string) result { return kubectlApitokenIn("", args...) }

// kubectlApitokenIn runs the plugin with stdin holding in.
func kubectlApitokenIn(in string, args ...string) result {
	streams, stdin, out, errOut := genericiooptions.NewTestIOStreams()
	stdin.WriteString(in)
	cmd := plugin.NewRootCommand(streams)
	cmd.SetArgs(append([]string{"--kubeconfig", kubeconfig}, args...))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	GinkgoWriter.Printf("kubectl apitoken %s\n  err: %v\n  stderr: %s\n", strings.Join(args, " "), err, errOut.String())
	return result{out: out.String(), errOut: errOut.String(), err: err}
}

// newNamespace creates a namespace of its own for a spec.
func newNamespace(prefix string) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	Expect(k8s.Create(context.Background(), ns)).To(Succeed())
	return ns.Name
}

// secretToken reads the token from a Secret, as the test's ground truth.
func secretToken(ns, name string) string {
	sec := &corev1.Secret{}
	Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, sec)).To(Succeed())
	return string(sec.Data["token"])
}

// writeFile writes data to a new file in a temporary folder.
func writeFile(name string, data []byte) string {
	p := filepath.Join(GinkgoT().TempDir(), name)
	Expect(os.WriteFile(p, data, 0o600)).To(Succeed())
	return p
}
