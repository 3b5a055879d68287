package e2e

import (
	"context"
	"os"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// A salt chosen by a person can be guessed offline from the salt ID that
// every ApiToken's status publishes: the binary refuses to start with one
// unless it is told to (--allow-weak-salt). Auth-only replicas in a
// namespace of their own, so that the suite's operators and their salt
// are not touched (a refused start writes nothing).
var _ = Describe("A weak salt", func() {
	It("stops the operator at start with the Secret key and the minimum named, unless --allow-weak-salt", func() {
		const weak = "correct horse battery staple" // 28 bytes
		ctx := context.Background()
		c, err := client.New(env.Config, client.Options{Scheme: testenv.Scheme()})
		Expect(err).NotTo(HaveOccurred())
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weak-salt"}}
		Expect(c.Create(ctx, ns)).To(Succeed())
		DeferCleanup(func() { _ = c.Delete(context.Background(), ns) })
		Expect(c.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "apitoken-operator-salt"},
			Data:       map[string][]byte{"salt": []byte(weak)},
		})).To(Succeed())
		flags := []string{"--namespace=" + ns.Name, "--enable-controller=false"}

		refused := launchOperator("weak-salt-refused", kubeconfig, flags...)
		DeferCleanup(refused.stop)
		Eventually(refused.done, "60s").Should(BeClosed(), "the operator started with a weak salt; see %s", refused.log)
		Expect(refused.cmd.ProcessState.ExitCode()).NotTo(BeZero())
		out, err := os.ReadFile(refused.log)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(out)).To(ContainSubstring(`Secret weak-salt/apitoken-operator-salt key \"salt\" holds a salt of 28 bytes; a salt must be at least 32 bytes`))
		Expect(string(out)).To(ContainSubstring("--allow-weak-salt"))
		Expect(strings.Contains(string(out), weak)).To(BeFalse(), "the log shows the salt")

		allowed := startOperatorWith("weak-salt-allowed", kubeconfig, append(flags, "--allow-weak-salt")...)
		allowed.stop()
		out, err = os.ReadFile(allowed.log)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(out)).To(ContainSubstring("The salt is short (started with --allow-weak-salt)"))
		Expect(strings.Contains(string(out), weak)).To(BeFalse(), "the log shows the salt")
	})
})
