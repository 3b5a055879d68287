package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/jsonmergepatch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// What docs/lifecycle.md ("Revoking under Flux and Argo CD") says, against
// the real API server: whether an emergency revocation made outside git
// survives the GitOps tool's next apply depends on the tool, on the field
// manager of the revocation, and on whether the manifest sets
// spec.revoked. Each tool is reproduced from its source, not guessed:

// gitopsTool applies a manifest as one GitOps tool does on every sync.
type gitopsTool struct {
	name  string
	apply func(ctx context.Context, manifest *unstructured.Unstructured)
}

var (
	// Argo CD with the ServerSideApply=true sync option: server-side apply
	// as field manager argocd-controller, forcing conflicts.
	argoCDServerSide = gitopsTool{"Argo CD, ServerSideApply=true", func(ctx context.Context, m *unstructured.Unstructured) {
		gitopsServerSideApply(ctx, m, "argocd-controller")
	}}
	// Argo CD's default: kubectl's client-side apply, a three-way JSON merge
	// patch between the last-applied-configuration annotation, the manifest
	// and the live object (for a custom resource, as kubectl's patcher does).
	argoCDClientSide = gitopsTool{"Argo CD, client-side apply (its default)", gitopsClientSideApply}
	// Flux's kustomize-controller: before each apply it hands every field
	// owned by a field manager whose name starts with "kubectl" (operation
	// Update or Apply) to itself (fluxcd/pkg/ssa PatchReplaceFieldsManagers,
	// with kustomize-controller's cleanup list "kubectl", "before-first-apply",
	// "kustomize-controller"), unless the manifest or the object is
	// annotated kustomize.toolkit.fluxcd.io/ssa: Merge (the cleanup's
	// exclusion), then applies as kustomize-controller, forcing conflicts.
	fluxKustomizeController = gitopsTool{"Flux kustomize-controller", gitopsFluxApply}
)

// fluxSSAMerge is the annotation that exempts an object from Flux's
// take-over of kubectl's fields.
const fluxSSAMerge = "kustomize.toolkit.fluxcd.io/ssa"

// gitopsManifest is the ApiToken as committed to git; revoked is left out
// when nil.
func gitopsManifest(ns string, revoked *bool, annotations map[string]any) *unstructured.Unstructured {
	spec := map[string]any{"type": "read-only", "duration": "30d"}
	if revoked != nil {
		spec["revoked"] = *revoked
	}
	meta := map[string]any{"name": "ci-reader", "namespace": ns}
	if annotations != nil {
		meta["annotations"] = annotations
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": tokensv1alpha1.GroupVersion.String(),
		"kind":       "ApiToken",
		"metadata":   meta,
		"spec":       spec,
	}}
}

func gitopsServerSideApply(ctx context.Context, m *unstructured.Unstructured, manager string) {
	ExpectWithOffset(2, k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(m.DeepCopy()),
		client.ForceOwnership, client.FieldOwner(manager))).To(Succeed())
}

const lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

func gitopsClientSideApply(ctx context.Context, m *unstructured.Unstructured) {
	modified := m.DeepCopy()
	lastApplied, err := json.Marshal(modified.Object)
	Expect(err).NotTo(HaveOccurred())
	modified.SetAnnotations(map[string]string{lastAppliedAnnotation: string(lastApplied)})
	modifiedJSON, err := json.Marshal(modified.Object)
	Expect(err).NotTo(HaveOccurred())

	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(m.GroupVersionKind())
	err = k8s.Get(ctx, client.ObjectKeyFromObject(m), live)
	if apierrors.IsNotFound(err) {
		Expect(k8s.Create(ctx, modified, client.FieldOwner("kubectl-client-side-apply"))).To(Succeed())
		return
	}
	Expect(err).NotTo(HaveOccurred())
	currentJSON, err := json.Marshal(live.Object)
	Expect(err).NotTo(HaveOccurred())
	patch, err := jsonmergepatch.CreateThreeWayJSONMergePatch([]byte(live.GetAnnotations()[lastAppliedAnnotation]), modifiedJSON, currentJSON)
	Expect(err).NotTo(HaveOccurred())
	Expect(k8s.Patch(ctx, live, client.RawPatch(types.MergePatchType, patch), client.FieldOwner("kubectl-client-side-apply"))).To(Succeed())
}

func gitopsFluxApply(ctx context.Context, m *unstructured.Unstructured) {
	const manager = "kustomize-controller"
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(m.GroupVersionKind())
	err := k8s.Get(ctx, client.ObjectKeyFromObject(m), live)
	excluded := m.GetAnnotations()[fluxSSAMerge] == "Merge" || live.GetAnnotations()[fluxSSAMerge] == "Merge"
	if err == nil && !excluded {
		if entries, changed := fluxTakeOver(live.GetManagedFields(), manager); changed {
			patch, err := json.Marshal([]map[string]any{{"op": "replace", "path": "/metadata/managedFields", "value": entries}})
			Expect(err).NotTo(HaveOccurred())
			Expect(k8s.Patch(ctx, live, client.RawPatch(types.JSONPatchType, patch), client.FieldOwner(manager))).To(Succeed())
		}
	} else if err != nil {
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "%v", err)
	}
	gitopsServerSideApply(ctx, m, manager)
}

// fluxTakeOver is fluxcd/pkg/ssa's PatchReplaceFieldsManagers with
// kustomize-controller's cleanup list: every entry of the main resource
// whose manager starts with "kubectl" or "before-first-apply" (Update or
// Apply), or is kustomize-controller's own Update, is merged into
// kustomize-controller's Apply entry.
func fluxTakeOver(entries []metav1.ManagedFieldsEntry, manager string) ([]metav1.ManagedFieldsEntry, bool) {
	matches := func(e metav1.ManagedFieldsEntry) bool {
		if e.Subresource != "" {
			return false
		}
		switch {
		case strings.HasPrefix(e.Manager, "kubectl"):
			return e.Operation == metav1.ManagedFieldsOperationUpdate || e.Operation == metav1.ManagedFieldsOperationApply
		case strings.HasPrefix(e.Manager, "before-first-apply"), strings.HasPrefix(e.Manager, manager):
			return e.Operation == metav1.ManagedFieldsOperationUpdate
		}
		return false
	}
	var own *metav1.ManagedFieldsEntry
	var out []metav1.ManagedFieldsEntry
	var taken []metav1.ManagedFieldsEntry
	for _, e := range entries {
		switch {
		case e.Manager == manager && e.Operation == metav1.ManagedFieldsOperationApply:
			own = e.DeepCopy()
		case matches(e):
			taken = append(taken, e)
		default:
			out = append(out, e)
		}
	}
	if len(taken) == 0 {
		return entries, false
	}
	for _, e := range taken {
		if own == nil {
			own = e.DeepCopy()
			own.Manager, own.Operation = manager, metav1.ManagedFieldsOperationApply
			continue
		}
		own.FieldsV1 = mergeFieldsV1(own.FieldsV1, e.FieldsV1)
	}
	return append(out, *own), true
}

// mergeFieldsV1 is the union of two managed field sets (their JSON trees).
func mergeFieldsV1(a, b *metav1.FieldsV1) *metav1.FieldsV1 {
	var ma, mb map[string]any
	Expect(json.Unmarshal(a.GetRawBytes(), &ma)).To(Succeed())
	Expect(json.Unmarshal(b.GetRawBytes(), &mb)).To(Succeed())
	var merge func(x, y map[string]any)
	merge = func(x, y map[string]any) {
		for k, v := range y {
			if sub, ok := v.(map[string]any); ok {
				if have, ok := x[k].(map[string]any); ok {
					merge(have, sub)
					continue
				}
			}
			x[k] = v
		}
	}
	merge(ma, mb)
	raw, err := json.Marshal(ma)
	Expect(err).NotTo(HaveOccurred())
	return metav1.NewFieldsV1(string(raw))
}

var _ = Describe("Revoking a token that a GitOps tool applies (docs/lifecycle.md)", func() {
	var (
		ctx context.Context
		key types.NamespacedName
	)
	BeforeEach(func() {
		ctx = context.Background()
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "gitops-"}}
		Expect(k8s.Create(ctx, n)).To(Succeed())
		key = types.NamespacedName{Namespace: n.Name, Name: "ci-reader"}
	})
	token := func(g Gomega) *tokensv1alpha1.ApiToken {
		var at tokensv1alpha1.ApiToken
		g.Expect(k8s.Get(ctx, key, &at)).To(Succeed())
		return &at
	}
	phaseIs := func(p tokensv1alpha1.Phase) {
		EventuallyWithOffset(1, func(g Gomega) { g.Expect(token(g).Status.Phase).To(Equal(p)) }).Should(Succeed())
	}
	// kubectlPatchRevoke is `kubectl patch apitoken ci-reader --type=merge
	// -p '{"spec":{"revoked":true}}' [--field-manager=manager]`: a merge
	// patch, recorded as an Update by manager (kubectl's default is
	// kubectl-patch).
	kubectlPatchRevoke := func(manager string) {
		at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
		ExpectWithOffset(1, k8s.Patch(ctx, at, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"revoked":true}}`)),
			client.FieldOwner(manager))).To(Succeed())
	}
	revoked := func() bool {
		var at tokensv1alpha1.ApiToken
		ExpectWithOffset(1, k8s.Get(ctx, key, &at)).To(Succeed())
		return at.Spec.Revoked
	}
	f := false

	DescribeTable("an emergency revocation with kubectl patch, when the manifest in git does not set spec.revoked",
		func(tool gitopsTool, annotations map[string]any, patchManager string, survives bool) {
			manifest := gitopsManifest(key.Namespace, nil, annotations)
			tool.apply(ctx, manifest)
			phaseIs(tokensv1alpha1.PhaseActive)

			kubectlPatchRevoke(patchManager)
			phaseIs(tokensv1alpha1.PhaseRevoked)

			By(fmt.Sprintf("%s applies the same manifest again (the next sync, or self-heal)", tool.name))
			tool.apply(ctx, manifest)
			if survives {
				Expect(revoked()).To(BeTrue())
				Consistently(func(g Gomega) { g.Expect(token(g).Status.Phase).To(Equal(tokensv1alpha1.PhaseRevoked)) }, "1s").Should(Succeed())
				return
			}
			Expect(revoked()).To(BeFalse(), "the tool took spec.revoked over and dropped it")
			phaseIs(tokensv1alpha1.PhaseActive) // a new token is issued (Unrevoked)
		},
		Entry("survives Argo CD with server-side apply", argoCDServerSide, nil, "kubectl-patch", true),
		Entry("survives Argo CD with client-side apply", argoCDClientSide, nil, "kubectl-patch", true),
		Entry("is undone by Flux when made by kubectl's default field manager (kubectl-patch)", fluxKustomizeController, nil, "kubectl-patch", false),
		Entry("survives Flux when made with --field-manager=incident-response", fluxKustomizeController, nil, "incident-response", true),
		Entry("survives Flux when the manifest is annotated kustomize.toolkit.fluxcd.io/ssa: Merge", fluxKustomizeController,
			map[string]any{fluxSSAMerge: "Merge"}, "kubectl-patch", true),
	)

	DescribeTable("an emergency revocation, when the manifest in git sets revoked: false, is undone by the next apply",
		func(tool gitopsTool) {
			manifest := gitopsManifest(key.Namespace, &f, nil)
			tool.apply(ctx, manifest)
			phaseIs(tokensv1alpha1.PhaseActive)

			kubectlPatchRevoke("incident-response")
			phaseIs(tokensv1alpha1.PhaseRevoked)

			tool.apply(ctx, manifest)
			Expect(revoked()).To(BeFalse())
			phaseIs(tokensv1alpha1.PhaseActive)
		},
		Entry("Argo CD with server-side apply", argoCDServerSide),
		Entry("Argo CD with client-side apply", argoCDClientSide),
		Entry("Flux", fluxKustomizeController),
	)

	DescribeTable("revoking in git (revoked: true in the manifest) revokes it and keeps it revoked",
		func(tool gitopsTool) {
			tool.apply(ctx, gitopsManifest(key.Namespace, nil, nil))
			phaseIs(tokensv1alpha1.PhaseActive)

			t := true
			tool.apply(ctx, gitopsManifest(key.Namespace, &t, nil))
			phaseIs(tokensv1alpha1.PhaseRevoked)
			tool.apply(ctx, gitopsManifest(key.Namespace, &t, nil))
			Expect(revoked()).To(BeTrue())
		},
		Entry("Argo CD with server-side apply", argoCDServerSide),
		Entry("Argo CD with client-side apply", argoCDClientSide),
		Entry("Flux", fluxKustomizeController),
	)
})
