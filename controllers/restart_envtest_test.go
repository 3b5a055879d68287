package controllers

import (
	"context"
	"strconv"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// workloadTemplate is a pod template that reads the token from an
// environment variable, as the restart targets' workloads do.
func workloadTemplate(labels map[string]string, secret string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "localhost/app:1",
			Env: []corev1.EnvVar{{Name: "API_TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: "token",
			}}}},
		}}},
	}
}

// resourceVersion reads an object's resourceVersion as the number it is on
// an etcd-backed API server (the store's revision of its last write), so
// that two writes can be put in order. Clients must not do this; a test of
// the order of writes on a known server may.
func resourceVersion(o client.Object) int64 {
	rv, err := strconv.ParseInt(o.GetResourceVersion(), 10, 64)
	Expect(err).NotTo(HaveOccurred())
	return rv
}

var _ = Describe("Restart targets (spec.rotation.restartTargets)", func() {
	// The suite's API server runs no workload controllers: a restart is
	// seen as the pod template's annotation the operator patched.
	It("are restarted after each new token reached the Secret, not for the first token, and once per token", func() {
		ctx := context.Background()
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "restart-"}}
		Expect(k8s.Create(ctx, n)).To(Succeed())
		labels := map[string]string{"app": "api"}
		deploy := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: n.Name}, Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: workloadTemplate(labels, "svc-token"),
		}}
		agent := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: n.Name}, Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: workloadTemplate(labels, "svc-token"),
		}}
		Expect(k8s.Create(ctx, deploy)).To(Succeed())
		Expect(k8s.Create(ctx, agent)).To(Succeed())
		// A Deployment of that name in another namespace is never touched.
		other := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "restart-other-"}}
		Expect(k8s.Create(ctx, other)).To(Succeed())
		foreign := deploy.DeepCopy()
		foreign.ObjectMeta = metav1.ObjectMeta{Name: "api", Namespace: other.Name}
		Expect(k8s.Create(ctx, foreign)).To(Succeed())

		at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "svc", Namespace: n.Name}, Spec: tokensv1alpha1.ApiTokenSpec{
			Type: tokensv1alpha1.ReadOnly, Duration: "30d",
			Rotation: &tokensv1alpha1.Rotation{GracePeriod: "5m", RestartTargets: []tokensv1alpha1.RestartTarget{
				{Kind: tokensv1alpha1.RestartDeployment, Name: "api"},
				{Kind: tokensv1alpha1.RestartDaemonSet, Name: "agent"},
				{Kind: tokensv1alpha1.RestartStatefulSet, Name: "gone"},
			}},
		}}
		Expect(k8s.Create(ctx, at)).To(Succeed())
		key := client.ObjectKeyFromObject(at)
		secretKey := types.NamespacedName{Namespace: n.Name, Name: "svc-token"}
		get := func(g Gomega) *tokensv1alpha1.ApiToken {
			var cur tokensv1alpha1.ApiToken
			g.Expect(k8s.Get(ctx, key, &cur)).To(Succeed())
			return &cur
		}
		template := func(o client.Object) map[string]string {
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(o), o)).To(Succeed())
			switch w := o.(type) {
			case *appsv1.Deployment:
				return w.Spec.Template.Annotations
			case *appsv1.DaemonSet:
				return w.Spec.Template.Annotations
			}
			return nil
		}

		By("the first token restarts nothing: the workloads start with it")
		Eventually(func(g Gomega) {
			cur := get(g)
			g.Expect(cur.Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
			g.Expect(cur.Status.ObservedGeneration).To(Equal(cur.Generation))
		}).Should(Succeed())
		// The pass that issued it ran its restart step before it wrote
		// the status just read.
		Expect(get(Default).Status.Restarts).To(BeNil())
		Expect(template(deploy)).NotTo(HaveKey(tokensv1alpha1.RestartedForAnnotation))
		Expect(template(agent)).NotTo(HaveKey(tokensv1alpha1.RestartedForAnnotation))
		deployRV := resourceVersion(deploy)

		By("a regeneration: the Secret is written, then each target's pod template annotated")
		Eventually(func(g Gomega) {
			cur := get(g)
			cur.Annotations = map[string]string{tokensv1alpha1.RegenerateAnnotation: "1"}
			g.Expect(k8s.Update(ctx, cur)).To(Succeed())
		}).Should(Succeed())
		var restarts *tokensv1alpha1.Restarts
		Eventually(func(g Gomega) {
			cur := get(g)
			g.Expect(cur.Status.LastHandledRegenerate).To(Equal("1"))
			restarts = cur.Status.Restarts
			g.Expect(restarts).NotTo(BeNil())
			g.Expect(restarts.Pending).To(BeEmpty())
			c := meta.FindStatusCondition(cur.Status.Conditions, tokensv1alpha1.ConditionTargetsRestarted)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Message).To(Equal("Restarted for token " + restarts.ForToken + ": Deployment/api, DaemonSet/agent; not found, not restarted: StatefulSet/gone"))
		}).Should(Succeed())
		want := "svc/" + restarts.ForToken
		Expect(restarts.ForToken).To(HavePrefix("1@"))
		Expect(template(deploy)).To(HaveKeyWithValue(tokensv1alpha1.RestartedForAnnotation, want))
		Expect(template(agent)).To(HaveKeyWithValue(tokensv1alpha1.RestartedForAnnotation, want))
		Expect(template(foreign)).NotTo(HaveKey(tokensv1alpha1.RestartedForAnnotation))
		var secret corev1.Secret
		Expect(k8s.Get(ctx, secretKey, &secret)).To(Succeed())
		Expect(verifiesNow(Default, key, string(secret.Data["token"]))).To(BeTrue())
		Expect(resourceVersion(&secret)).To(BeNumerically("<", resourceVersion(deploy)), "the Deployment was patched before the Secret held the new token")
		Expect(resourceVersion(deploy)).To(BeNumerically(">", deployRV))
		Eventually(func(g Gomega) []string {
			return eventNotes(g, n.Name, "svc", tokensv1alpha1.ReasonRestartTargetMissing)
		}).
			Should(ConsistOf(ContainSubstring("StatefulSet/gone does not exist in namespace " + n.Name)))
		Eventually(func(g Gomega) []string { return eventNotes(g, n.Name, "svc", tokensv1alpha1.ReasonTargetsRestarted) }).
			Should(ConsistOf("Restarted Deployment/api, DaemonSet/agent after the new token reached Secret svc-token"))

		By("a pass with no new token restarts nothing again")
		restartedRV := resourceVersion(deploy)
		Eventually(func(g Gomega) {
			cur := get(g)
			cur.Spec.Description = "edited, to make a pass"
			g.Expect(k8s.Update(ctx, cur)).To(Succeed())
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			cur := get(g)
			g.Expect(cur.Status.ObservedGeneration).To(Equal(cur.Generation))
			g.Expect(cur.Spec.Description).NotTo(BeEmpty())
		}).Should(Succeed())
		Expect(resourceVersion(deploy)).To(Equal(restartedRV))
		Expect(template(deploy)).To(HaveKeyWithValue(tokensv1alpha1.RestartedForAnnotation, want))

		By("the next token restarts them again, with a value of its own")
		Eventually(func(g Gomega) {
			cur := get(g)
			cur.Annotations = map[string]string{tokensv1alpha1.RegenerateAnnotation: "2"}
			g.Expect(k8s.Update(ctx, cur)).To(Succeed())
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			cur := get(g)
			g.Expect(cur.Status.LastHandledRegenerate).To(Equal("2"))
			g.Expect(cur.Status.Restarts.Pending).To(BeEmpty())
			restarts = cur.Status.Restarts
		}).Should(Succeed())
		Expect(restarts.ForToken).To(HavePrefix("2@"))
		Expect(template(deploy)).To(HaveKeyWithValue(tokensv1alpha1.RestartedForAnnotation, "svc/"+restarts.ForToken))
	})
})
