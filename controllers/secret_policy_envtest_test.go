package controllers

import (
	"context"
	"os"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// The ValidatingAdmissionPolicy of config/rbac, applied to the real API
// server: the operator's ServiceAccount writes only its own Secrets.
var _ = Describe("The operator's Secret policy (config/rbac/secret_policy.yaml)", func() {
	const sa = "system:serviceaccount:apitoken-system:apitoken-operator"
	const refused = "apitoken-operator may write only its own Secrets"
	ctx := context.Background()

	It("refuses the operator's identity any Secret it does not own, and lets it write its own", func() {
		data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "secret_policy.yaml"))
		Expect(err).NotTo(HaveOccurred())
		created, err := testenv.CreateYAML(ctx, k8s, data)
		Expect(err).NotTo(HaveOccurred())
		for _, o := range created {
			DeferCleanup(func() { Expect(client.IgnoreNotFound(k8s.Delete(ctx, o))).To(Succeed()) })
		}

		// The operator's ServiceAccount, impersonated; system:masters so that
		// only the policy, not RBAC, can refuse.
		cfg := rest.CopyConfig(env.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: sa, Groups: []string{"system:masters", "system:serviceaccounts"}}
		op, err := client.New(cfg, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())

		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "policy-"}}
		Expect(k8s.Create(ctx, ns)).To(Succeed())
		foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db-password", Namespace: ns.Name}, StringData: map[string]string{"password": "x"}}
		Expect(k8s.Create(ctx, foreign)).To(Succeed())

		By("updating a foreign Secret as the operator: refused by the API server (once the policy is loaded)")
		Eventually(func() error {
			var s corev1.Secret
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(foreign), &s)).To(Succeed())
			s.Labels = map[string]string{tokensv1alpha1.ManagedByLabel: tokensv1alpha1.ManagedByValue}
			return op.Update(ctx, &s)
		}).Should(MatchError(And(ContainSubstring(refused), ContainSubstring("not "+ns.Name+"/db-password"))))

		By("creating a labelled Secret without an ApiToken owner: refused")
		Expect(op.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "planted", Namespace: ns.Name,
			Labels: map[string]string{tokensv1alpha1.ManagedByLabel: tokensv1alpha1.ManagedByValue}}})).To(MatchError(ContainSubstring(refused)))

		By("writing a token Secret the operator owns: allowed")
		at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "owned", Namespace: ns.Name}, Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"}}
		Expect(k8s.Create(ctx, at)).To(Succeed())
		var ours corev1.Secret
		Eventually(func() error { return k8s.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: "owned-token"}, &ours) }).Should(Succeed())
		ours.Annotations["touched-by"] = "the operator's identity"
		Expect(op.Update(ctx, &ours)).To(Succeed())

		By("a service-account-token Secret, even labelled and owned: refused")
		sat := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sa-token", Namespace: ns.Name,
			Labels:          map[string]string{tokensv1alpha1.ManagedByLabel: tokensv1alpha1.ManagedByValue},
			Annotations:     map[string]string{corev1.ServiceAccountNameKey: "default"},
			OwnerReferences: ours.OwnerReferences}, Type: corev1.SecretTypeServiceAccountToken}
		Expect(op.Create(ctx, sat)).To(MatchError(ContainSubstring(refused)))

		By("an owner reference to another version of the group (the garbage collector cannot resolve it): refused")
		fake := ours.OwnerReferences[0]
		fake.APIVersion = "tokens.apitoken.dev/v1"
		Expect(op.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bad-owner", Namespace: ns.Name,
			Labels:          map[string]string{tokensv1alpha1.ManagedByLabel: tokensv1alpha1.ManagedByValue},
			OwnerReferences: []metav1.OwnerReference{fake}}})).To(MatchError(ContainSubstring(refused)))

		By("taking over a foreign Secret by adding an owner reference: refused (it was not owned before)")
		var s corev1.Secret
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(foreign), &s)).To(Succeed())
		s.Labels = map[string]string{tokensv1alpha1.ManagedByLabel: tokensv1alpha1.ManagedByValue}
		s.OwnerReferences = ours.OwnerReferences
		Expect(op.Update(ctx, &s)).To(MatchError(ContainSubstring(refused)))

		By("the salt Secret: allowed")
		var saltSecret corev1.Secret
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: "apitoken-operator-salt"}, &saltSecret)).To(Succeed())
		if saltSecret.Annotations == nil {
			saltSecret.Annotations = map[string]string{}
		}
		saltSecret.Annotations["touched-by"] = "the operator's identity"
		Expect(op.Update(ctx, &saltSecret)).To(Succeed())

		By("anyone else is not concerned")
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(foreign), &s)).To(Succeed())
		s.Labels = map[string]string{"team": "a"}
		Expect(k8s.Update(ctx, &s)).To(Succeed())
	})
})
