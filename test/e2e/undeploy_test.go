package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

var _ = Describe("make undeploy after make deploy", Ordered, func() {
	var (
		cluster *testenv.Env
		kc      string
		c       client.Client
	)
	ctx := context.Background()
	// makeIn runs make in the repository against the cluster, with the
	// kubectl the suite uses first on PATH, and returns its output.
	makeIn := func(args ...string) string {
		cmd := exec.Command("make", append([]string{"-s"}, args...)...)
		cmd.Dir = testenv.RepoRoot()
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kc, "PATH="+filepath.Dir(kubectlBin)+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		ExpectWithOffset(1, err).NotTo(HaveOccurred(), string(out))
		return string(out)
	}
	kubectlTo := func(stdin string, args ...string) string {
		cmd := exec.Command(kubectlBin, append([]string{"--kubeconfig", kc}, args...)...)
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
		out, err := cmd.CombinedOutput()
		ExpectWithOffset(1, err).NotTo(HaveOccurred(), string(out))
		return string(out)
	}
	present := func(obj client.Object) bool {
		err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		if apierrors.IsNotFound(err) {
			return false
		}
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
		return true
	}
	crd := func() *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("apiextensions.k8s.io/v1")
		u.SetKind("CustomResourceDefinition")
		u.SetName("apitokens.tokens.apitoken.dev")
		return u
	}
	webhook := func() *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("admissionregistration.k8s.io/v1")
		u.SetKind("ValidatingWebhookConfiguration")
		u.SetName("apitoken-operator-validating")
		return u
	}
	namespace := func() *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apitoken-system"}}
	}
	salt := func() *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "apitoken-system", Name: "apitoken-operator-salt"}}
	}
	token := func() *tokensv1alpha1.ApiToken {
		return &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ci-reader"}}
	}
	tokenSecret := func() *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ci-reader-token"}}
	}

	BeforeAll(func() {
		var err error
		cluster, err = testenv.Start(testenv.Options{GarbageCollector: true, Namespaces: true})
		Expect(err).NotTo(HaveOccurred())
		kc = filepath.Join(workDir, "undeploy-kubeconfig")
		Expect(cluster.WriteKubeconfig(kc, "platform-admin")).To(Succeed())
		c, err = client.New(cluster.Config, client.Options{Scheme: testenv.Scheme()})
		Expect(err).NotTo(HaveOccurred())

		By("an ApiToken and its Secret (owned by it, as the operator writes it), made before the webhooks exist")
		Expect(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}})).To(Succeed())
		at := token()
		at.Spec = tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"}
		Expect(c.Create(ctx, at)).To(Succeed())
		s := tokenSecret()
		s.OwnerReferences = []metav1.OwnerReference{{
			APIVersion: tokensv1alpha1.GroupVersion.String(), Kind: "ApiToken", Name: at.Name, UID: at.UID,
			Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
		}}
		Expect(c.Create(ctx, s)).To(Succeed())

		By("make deploy's apply of config/default (cert-manager's CRDs stand in for cert-manager), and the salt Secret the operator would create")
		kubectlTo(certManagerCRDs, "apply", "-f", "-")
		Eventually(func() error {
			cmd := exec.Command(kubectlBin, "--kubeconfig", kc, "get", "issuers.cert-manager.io", "-A")
			return cmd.Run()
		}, "20s").Should(Succeed())
		kubectlTo("", "apply", "--server-side", "--force-conflicts", "-k", filepath.Join(testenv.RepoRoot(), "config", "default"))
		sec := salt()
		sec.StringData = map[string]string{"salt": "not-a-real-salt"}
		Expect(c.Create(ctx, sec)).To(Succeed())
		Expect(present(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "apitoken-system", Name: "apitoken-auth"}})).To(BeTrue())
	})
	AfterAll(func() {
		if cluster != nil {
			Expect(cluster.Stop()).To(Succeed())
		}
	})

	It("deletes the operator but keeps the CRD, every ApiToken and token Secret, and the namespace with the salt", func() {
		out := makeIn("undeploy")
		Expect(out).To(ContainSubstring("kept CustomResourceDefinition apitokens.tokens.apitoken.dev"))
		Expect(out).To(ContainSubstring("make undeploy KEEP_CRD=false"))

		for _, name := range []string{"apitoken-operator", "apitoken-auth"} {
			Expect(present(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "apitoken-system", Name: name}})).To(BeFalse(), name)
		}
		Expect(present(webhook())).To(BeFalse(), "the webhook configurations are deleted (else every ApiToken write would fail)")
		Expect(present(&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "apitoken-auth"}})).To(BeFalse())

		Expect(present(crd())).To(BeTrue())
		Expect(present(token())).To(BeTrue())
		Expect(present(tokenSecret())).To(BeTrue())
		ns := namespace()
		Expect(present(ns)).To(BeTrue())
		Expect(ns.DeletionTimestamp).To(BeNil())
		Expect(present(salt())).To(BeTrue())
	})

	It("with KEEP_CRD=false deletes the CRD, and with it every ApiToken and token Secret, and the namespace", func() {
		out := makeIn("undeploy", "KEEP_CRD=false")
		Expect(out).To(ContainSubstring("the API server deletes every ApiToken in the cluster"))
		Eventually(func() bool { return present(crd()) }, "60s").Should(BeFalse())
		Eventually(func() bool { return present(tokenSecret()) }, "60s").Should(BeFalse(), "the garbage collector deletes the token Secret")
		Eventually(func() bool { return present(namespace()) }, "60s").Should(BeFalse())
	})
})
