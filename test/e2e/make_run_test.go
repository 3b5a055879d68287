package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// makeRun is hack/run-local.sh (what make run runs) as a process.
type makeRun struct {
	cmd  *exec.Cmd
	out  *gbytes.Buffer
	done chan struct{}
}

// startMakeRun runs hack/run-local.sh with KUBECONFIG pointing at another
// cluster, extra environment, on free ports and in a state folder of its
// own, in a process group of its own (as a terminal runs it).
func startMakeRun(kubeconfigPath string, env ...string) *makeRun {
	state, err := os.MkdirTemp(workDir, "make-run-")
	Expect(err).NotTo(HaveOccurred())
	cmd := exec.Command(filepath.Join(testenv.RepoRoot(), "hack", "run-local.sh"),
		"-state="+state, fmt.Sprintf("-auth-bind-address=127.0.0.1:%d", freePort()),
		"--", "--metrics-bind-address=0", "--health-probe-bind-address=127.0.0.1:0", fmt.Sprintf("--grpc-auth-bind-address=127.0.0.1:%d", freePort()))
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(append(os.Environ(), "KUBECONFIG="+kubeconfigPath, "CLUSTER="), env...)
	out := gbytes.NewBuffer()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	Expect(cmd.Start()).To(Succeed())
	r := &makeRun{cmd: cmd, out: out, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(r.done) }()
	DeferCleanup(func() {
		select {
		case <-r.done:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-r.done
		}
	})
	return r
}

func (r *makeRun) output() string { return string(r.out.Contents()) }

// waitRunning waits until make run printed its "Try" block.
func (r *makeRun) waitRunning() {
	EventuallyWithOffset(1, func() string {
		select {
		case <-r.done:
			Fail("make run exited early:\n" + r.output())
		default:
		}
		return r.output()
	}, "5m", "250ms").Should(ContainSubstring("Press Ctrl-C"))
}

// ctrlC sends SIGINT to make run's process group, as a terminal's Ctrl-C
// does, and waits for it to exit (status 0).
func (r *makeRun) ctrlC() {
	ExpectWithOffset(1, syscall.Kill(-r.cmd.Process.Pid, syscall.SIGINT)).To(Succeed())
	r.waitExit()
}

// sigterm sends SIGTERM to make run's own process only, as a process
// manager does, and waits for it to exit (status 0).
func (r *makeRun) sigterm() {
	ExpectWithOffset(1, r.cmd.Process.Signal(syscall.SIGTERM)).To(Succeed())
	r.waitExit()
}

func (r *makeRun) waitExit() {
	EventuallyWithOffset(2, r.done, "3m").Should(BeClosed(), r.output())
	ExpectWithOffset(2, r.cmd.ProcessState.ExitCode()).To(Equal(0), r.output())
}

var _ = Describe("make run (hack/run-local.sh) with a kubeconfig that reaches another cluster", Ordered, func() {
	var (
		other   *testenv.Env
		otherKC string
		c       client.Client
	)
	crd := func() *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("apiextensions.k8s.io/v1")
		u.SetKind("CustomResourceDefinition")
		u.SetName("apitokens.tokens.apitoken.dev")
		return u
	}
	present := func(obj client.Object) bool {
		err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)
		if apierrors.IsNotFound(err) {
			return false
		}
		Expect(err).NotTo(HaveOccurred())
		return true
	}
	namespace := func() *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apitoken-system"}}
	}
	token := func(name string) *tokensv1alpha1.ApiToken {
		return &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}
	}
	secret := func(ns, name string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	}
	// managedSecrets lists the Secrets an operator wrote in default.
	managedSecrets := func() []corev1.Secret {
		var list corev1.SecretList
		Expect(c.List(context.Background(), &list, client.InNamespace("default"),
			client.MatchingLabels{tokensv1alpha1.ManagedByLabel: tokensv1alpha1.ManagedByValue})).To(Succeed())
		return list.Items
	}

	BeforeAll(func() {
		var err error
		By("starting another control plane, with no ApiToken CRD, that the kubeconfig points at")
		other, err = testenv.Start(testenv.Options{GarbageCollector: true, Namespaces: true})
		Expect(err).NotTo(HaveOccurred())
		otherKC = filepath.Join(workDir, "other-kubeconfig")
		Expect(other.WriteKubeconfig(otherKC, "someone")).To(Succeed())
		c, err = client.New(other.Config, client.Options{Scheme: testenv.Scheme()})
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Delete(context.Background(), crd())).To(Succeed())
		Eventually(func() bool { return present(crd()) }, "30s").Should(BeFalse())
	})
	AfterAll(func() {
		if other != nil {
			Expect(other.Stop()).To(Succeed())
		}
	})

	It("without CLUSTER=current runs its own control plane, says why, and creates nothing in the kubeconfig's cluster", func() {
		r := startMakeRun(otherKC)
		r.waitRunning()
		out := r.output()
		Expect(out).To(MatchRegexp(`your kubeconfig reaches context "\S+" \(https://127\.0\.0\.1:\d+\); not using it: make run CLUSTER=current to use it`))
		Expect(out).To(ContainSubstring("apitoken-operator is running against a local control plane"))
		Expect(out).To(ContainSubstring("listening on   127.0.0.1 only"), "every port of make run's operator is on loopback unless widened")
		Consistently(func() bool { return present(crd()) || present(namespace()) }, "2s").Should(BeFalse())
		r.ctrlC()
		Expect(r.output()).To(ContainSubstring("stopping the control plane"))

		Expect(present(crd())).To(BeFalse(), "no CRD in the kubeconfig's cluster")
		Expect(present(namespace())).To(BeFalse(), "no apitoken-system namespace in the kubeconfig's cluster")
		Expect(managedSecrets()).To(BeEmpty(), "no token Secret in the kubeconfig's cluster")
	})

	It("with CLUSTER=current says what it will create, creates it, and removes it all on Ctrl-C", func() {
		r := startMakeRun(otherKC, "CLUSTER=current")
		r.waitRunning()
		out := r.output()
		plan := strings.Index(out, "this run creates, and removes when it stops:")
		Expect(plan).To(BeNumerically(">=", 0), out)
		for _, line := range []string{
			"  CustomResourceDefinition apitokens.tokens.apitoken.dev",
			"  Namespace apitoken-system (with the salt Secret apitoken-operator-salt the operator creates in it)",
			"  ApiToken default/full-access and its Secret default/full-access-token",
			"  ApiToken default/read-only and its Secret default/read-only-token",
		} {
			Expect(out[plan:]).To(ContainSubstring(line))
		}
		Expect(strings.Index(out, "created CustomResourceDefinition")).To(BeNumerically(">", plan), "the plan is printed before anything is created")
		Expect(out).To(MatchRegexp(`in context "\S+" this run creates`))

		Expect(present(crd())).To(BeTrue())
		Expect(present(namespace())).To(BeTrue())
		Expect(present(secret("apitoken-system", "apitoken-operator-salt"))).To(BeTrue())
		var tokens []string
		for _, name := range []string{"full-access", "read-only"} {
			Expect(present(token(name))).To(BeTrue())
			s := secret("default", name+"-token")
			Eventually(func() int { present(s); return len(s.Data["token"]) }, "30s").ShouldNot(BeZero())
			tokens = append(tokens, string(s.Data["token"]))
		}

		r.ctrlC()
		out = r.output()
		for _, line := range []string{
			"deleted ApiToken default/full-access and its Secret",
			"deleted ApiToken default/read-only and its Secret",
			"deleted Namespace apitoken-system",
			"deleted CustomResourceDefinition apitokens.tokens.apitoken.dev",
		} {
			Expect(out).To(ContainSubstring(line))
		}
		Expect(out).NotTo(ContainSubstring("make run: left: ApiToken"))
		Expect(out).NotTo(ContainSubstring("the operator stopped:"), "one SIGTERM stops the operator cleanly")
		for _, tok := range tokens {
			Expect(strings.Contains(out, tok)).To(BeFalse(), "make run printed a token")
		}
		Expect(present(crd())).To(BeFalse())
		Expect(present(namespace())).To(BeFalse())
		Expect(managedSecrets()).To(BeEmpty())
	})

	It("with CLUSTER=current keeps a namespace that was there before, and cleans up on SIGTERM", func() {
		ns := namespace()
		ns.Labels = map[string]string{"kept": "yes"}
		Expect(c.Create(context.Background(), ns)).To(Succeed())

		r := startMakeRun(otherKC, "CLUSTER=current")
		r.waitRunning()
		out := r.output()
		Expect(out).To(ContainSubstring("already there, used and left as they are:\nmake run:   Namespace apitoken-system\n"))
		Expect(out).To(ContainSubstring("  Secret apitoken-system/apitoken-operator-salt (the operator creates it when it starts)"))
		Expect(present(crd())).To(BeTrue())
		Expect(present(token("read-only"))).To(BeTrue())

		r.sigterm()
		out = r.output()
		Expect(out).To(ContainSubstring("deleted Secret apitoken-system/apitoken-operator-salt"))
		Expect(out).To(ContainSubstring("left as it was: Namespace apitoken-system (it existed before this run)"))
		Expect(out).NotTo(ContainSubstring("deleted Namespace"))
		Expect(present(crd())).To(BeFalse())
		Expect(managedSecrets()).To(BeEmpty())
		kept := namespace()
		Expect(present(kept)).To(BeTrue())
		Expect(kept.DeletionTimestamp).To(BeNil())
		Expect(kept.Labels).To(HaveKeyWithValue("kept", "yes"))
		Expect(present(secret("apitoken-system", "apitoken-operator-salt"))).To(BeFalse())
	})
})
