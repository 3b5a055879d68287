package app_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/apitoken-operator/apitoken-operator/cmd/app"
	"github.com/apitoken-operator/apitoken-operator/controllers"
	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
	"github.com/apitoken-operator/apitoken-operator/internal/plugin"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
	_ "github.com/apitoken-operator/apitoken-operator/internal/testredact" // no token in a failure message
)

// This suite runs the operator as bin/manager does (app.Setup on a
// manager made with app.ManagerOptions) against one real kube-apiserver
// and etcd, with the garbage collector: the kubectl plugin and the auth
// endpoint against the suite's operator, and the salt's life against
// operators of its own, started and stopped in turn.

const operatorNamespace = "apitoken-system"

var (
	env *testenv.Env
	k8s client.Client
	// fakeClock drives the suite's operator (reconcilers and auth
	// endpoint); it only ever moves forward: a spec steps it past its own
	// tokens' deadlines and never back, so every spec holds in any order.
	fakeClock = clocktesting.NewFakeClock(time.Now())
	// kubeconfig is an admin's (system:masters), passed as --kubeconfig.
	kubeconfig string
	// authURL serves the suite operator's auth endpoint over HTTP (make
	// run), authTLSURL over HTTPS (config/) with the self-signed
	// certificate in caFile and an index of its own; grpcClient asks the
	// operator's gRPC ext_authz. They change when the operator restarts.
	authURL, authTLSURL, caFile string
	grpcClient                  authv3.AuthorizationClient
	// suiteOperator is the suite's operator while it runs: the salt's
	// life specs stop it (two operators on one ApiToken would fight over
	// it with their salts), and useSuiteOperator starts it again.
	suiteOperator *operator
	// suiteLogs collects the process's own log (ctrl.Log: Setup's lines,
	// the salt's loading among them); each operator's manager logs to its
	// operator's logs.
	suiteLogs = &lockedBuffer{}
)

func TestOperatorEnvtest(t *testing.T) {
	RegisterFailHandler(Fail)
	// Specs run in random order (the seed is printed as "Random Seed");
	// rerun one order with -ginkgo.seed=N.
	suiteConfig, reporterConfig := GinkgoConfiguration()
	suiteConfig.RandomizeAllSpecs = true
	RunSpecs(t, "The operator as app.Setup wires it (the plugin, the auth endpoint, the salt's life against a real kube-apiserver)", suiteConfig, reporterConfig)
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(io.MultiWriter(suiteLogs, GinkgoWriter)), zap.UseDevMode(true)))
	// The machine is shared, and operators start and stop: give them
	// time, never a sleep.
	SetDefaultEventuallyTimeout(30 * time.Second)
	SetDefaultEventuallyPollingInterval(50 * time.Millisecond)
	var err error
	env, err = testenv.Start(testenv.Options{GarbageCollector: true})
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(env.Config, client.Options{Scheme: app.Scheme()})
	Expect(err).NotTo(HaveOccurred())
	Expect(k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}})).To(Succeed())

	dir := GinkgoT().TempDir()
	caFile = filepath.Join(dir, "tls.crt")
	Expect(testenv.WriteSelfSignedCert(caFile, filepath.Join(dir, "tls.key"), 1)).To(Succeed())
	kubeconfig = filepath.Join(dir, "kubeconfig")
	Expect(env.WriteKubeconfig(kubeconfig, "plugin-admin")).To(Succeed())
	useSuiteOperator()
})

// ownOperators labels the specs that run operators of their own: the
// suite's operator is stopped before each of them, and started again
// before any other spec.
const ownOperators = "own-operators"

var _ = BeforeEach(func() {
	if slices.Contains(CurrentSpecReport().Labels(), ownOperators) {
		stopSuiteOperator()
		return
	}
	useSuiteOperator()
})

var _ = AfterSuite(func() {
	stopSuiteOperator()
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})

// operatorOptions are bin/manager's defaults for an operator of namespace
// ns in this process: no metrics, probes or webhooks (the webhooks have
// their suite in webhook/v1alpha1), the auth endpoint on loopback ports
// of the system's choosing accepting every namespace's tokens when a
// route names none, the identity labels under tokens.apitoken.dev/, four
// ApiTokens reconciled at once, no bound on cuts,
// no API_TOKEN_SALT, and clk.
func operatorOptions(ns string, clk clock.Clock) *app.Options {
	o := app.NewOptions()
	o.Namespace = ns
	o.MetricsAddr, o.ProbeAddr, o.EnableWebhooks = "0", "0", false
	o.AuthAddr, o.GRPCAuthAddr = "127.0.0.1:0", "127.0.0.1:0"
	o.AuthDefaultNamespaces = "*"
	o.AuthIdentityLabelPrefix = "tokens.apitoken.dev/"
	o.Concurrency = 4
	o.Cuts = controllers.CutGuard{}
	o.EnvSalt = ""
	o.Clock = clk
	return o
}

// operator is one running operator: its salt store, its auth endpoint's
// URLs, and its log.
type operator struct {
	store             *salt.Store
	authURL, grpcAddr string
	logs              *lockedBuffer
	stop              func()
}

// startOperator runs the operator app.Setup wires with o, on a manager
// made with app.ManagerOptions and then changed by tweak (nil: none), and
// returns once its auth endpoint is ready. extra, when set, adds what the
// spec needs beside it to the manager before it starts.
func startOperator(o *app.Options, tweak func(*ctrl.Options), extra func(manager.Manager, *app.Operator)) *operator {
	op, setup := beginOperator(o, tweak, extra)
	Expect(<-setup).To(Succeed())
	Eventually(func() int { return status(op.authURL+"/readyz", "") }).Should(Equal(http.StatusOK))
	return op
}

// beginOperator makes the manager as startOperator does and runs app.Setup
// in a goroutine, as bin/manager would, since Setup waits there until the
// salt can be loaded (a Secret someone else provides, --salt-create=false).
// setup receives Setup's error; once it is nil, the auth endpoint listens
// (op.authURL is set) and the manager runs. op.stop ends either.
func beginOperator(o *app.Options, tweak func(*ctrl.Options), extra func(manager.Manager, *app.Operator)) (op *operator, setup <-chan error) {
	op = &operator{store: app.NewSaltStore(o), logs: &lockedBuffer{}}
	mo := app.ManagerOptions(o, op.store)
	mo.Logger = zap.New(zap.WriteTo(io.MultiWriter(op.logs, GinkgoWriter)), zap.UseDevMode(true))
	// Operators start again in this one process.
	mo.Controller = config.Controller{SkipNameValidation: ptr.To(true)}
	if tweak != nil {
		tweak(&mo)
	}
	mgr, err := ctrl.NewManager(env.Config, mo)
	Expect(err).NotTo(HaveOccurred())
	mctx, cancel := context.WithCancel(context.Background())
	setupErr := make(chan error, 1)
	done := make(chan struct{})
	var wired *app.Operator
	go func() {
		defer GinkgoRecover()
		defer close(done)
		var err error
		if wired, err = app.Setup(mctx, mgr, o, op.store); err != nil {
			setupErr <- err
			return
		}
		addr, err := wired.HTTP.Listen()
		Expect(err).NotTo(HaveOccurred())
		op.authURL = "http://" + addr.String()
		if wired.GRPC != nil {
			gaddr, err := wired.GRPC.Listen()
			Expect(err).NotTo(HaveOccurred())
			op.grpcAddr = gaddr.String()
		}
		if extra != nil {
			extra(mgr, wired)
		}
		setupErr <- nil
		Expect(mgr.Start(mctx)).To(Succeed())
	}()
	op.stop = func() {
		cancel()
		<-done
		if wired != nil {
			wired.Close()
		}
	}
	return op, setupErr
}

// useSuiteOperator starts the suite's operator unless it runs, and points
// authURL, authTLSURL and grpcClient at it.
func useSuiteOperator() {
	if suiteOperator != nil {
		return
	}
	o := operatorOptions(operatorNamespace, fakeClock)
	// status.lastUsedAt is written within a spec.
	o.LastUsedInterval = 200 * time.Millisecond
	var tlsSrv *authserver.Server
	suiteOperator = startOperator(o, nil, func(mgr manager.Manager, wired *app.Operator) {
		// ... and over HTTPS (config/), with its own index.
		tlsSrv = &authserver.Server{
			Addr: "127.0.0.1:0", CertFile: caFile, KeyFile: filepath.Join(filepath.Dir(caFile), "tls.key"),
			Handler: &authserver.Handler{Index: authserver.NewIndex(wired.Salt.Hasher), Clock: fakeClock, Options: wired.HTTP.Handler.Options},
			Cache:   mgr.GetCache(),
		}
		tlsAddr, err := tlsSrv.Listen()
		Expect(err).NotTo(HaveOccurred())
		authTLSURL = "https://" + tlsAddr.String()
		Expect(mgr.Add(tlsSrv)).To(Succeed())
	})
	authURL = suiteOperator.authURL
	Eventually(func() int { return httpStatus(authTLSURL + "/readyz") }).Should(Equal(http.StatusOK))
	conn, err := grpc.NewClient(suiteOperator.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	Expect(err).NotTo(HaveOccurred())
	grpcClient = authv3.NewAuthorizationClient(conn)
}

// stopSuiteOperator stops the suite's operator if it runs.
func stopSuiteOperator() {
	if suiteOperator != nil {
		suiteOperator.stop()
		suiteOperator = nil
	}
}

// verifies reports whether op's auth endpoint accepts tok.
func (op *operator) verifies(tok string) bool {
	return status(op.authURL+verifyPath, tok) == http.StatusOK
}

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

// verifyPath asks the explicit endpoint for a scope every read-only token grants.
const verifyPath = "/v1/authorize?scope=articles:read"

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
