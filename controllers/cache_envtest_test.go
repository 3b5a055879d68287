package controllers

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// The operator caches every Secret labelled managed-by apitoken-operator
// (a label selector is all the API server can filter a watch on), so
// anyone who may create a Secret anywhere can put one in its cache. What
// it holds of a Secret it does not own must not be what the tenant put in
// it.
var _ = Describe("The operator's Secret cache", func() {
	It("holds only the metadata of labelled Secrets no ApiToken owns, and still reports them as conflicts", func() {
		ctx := context.Background()
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "tenant-"}}
		Expect(k8s.Create(ctx, n)).To(Succeed())
		ns := n.Name
		managed := map[string]string{tokensv1alpha1.ManagedByLabel: tokensv1alpha1.ManagedByValue}
		DeferCleanup(func() {
			Expect(k8s.DeleteAllOf(ctx, &corev1.Secret{}, client.InNamespace(ns), client.MatchingLabels(managed))).To(Succeed())
		})

		const (
			blobs      = 200
			blobSize   = 500 << 10
			copies     = 20
			annotation = 200 << 10
			labelCount = 1500
		)
		payload := make([]byte, blobSize)
		for i := range payload {
			payload[i] = byte('a' + i%26)
		}
		// Labels of the longest legal key (prefix/name) and value.
		bulkLabels := func() map[string]string {
			l := map[string]string{tokensv1alpha1.ManagedByLabel: tokensv1alpha1.ManagedByValue}
			for i := range labelCount {
				l[fmt.Sprintf("%s.example.com/%s%05d", strings.Repeat("p", 40), strings.Repeat("k", 58), i)] = strings.Repeat("v", 63)
			}
			return l
		}()

		// cachedBytes is the size of what the cache holds of the
		// namespace's Secrets (their protobuf encoding), and of the copies.
		cachedBytes := func(g Gomega) (count, size, copySize int) {
			var list corev1.SecretList
			g.Expect(suiteCache.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
			for i := range list.Items {
				size += list.Items[i].Size()
				if strings.HasPrefix(list.Items[i].Name, "copy-") {
					copySize += list.Items[i].Size()
				}
			}
			return len(list.Items), size, copySize
		}
		before := liveHeap()

		By(fmt.Sprintf("planting %d labelled Secrets of %d KiB that no ApiToken owns, one named as an ApiToken's Secret", blobs, blobSize>>10))
		for i := range blobs {
			name := fmt.Sprintf("blob-%03d", i)
			if i == 0 {
				name = "conflict-token"
			}
			Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: managed},
				Data: map[string][]byte{"token": payload}})).To(Succeed())
		}
		// A tenant's own ApiToken: the garbage collector deletes a Secret
		// whose owner does not exist, so a tenant names one that does.
		mine := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "mine", Namespace: ns},
			Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"}}
		Expect(k8s.Create(ctx, mine)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(mine), mine)).To(Succeed())
			g.Expect(mine.Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
		}).WithTimeout(time.Minute).Should(Succeed())
		By(fmt.Sprintf("planting %d Secrets controlled by that ApiToken under other names, with %d KiB of annotations and %d labels each", copies, annotation>>10, labelCount))
		for i := range copies {
			Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("copy-%03d-token", i), Namespace: ns, Labels: bulkLabels,
				Annotations:     map[string]string{"example.com/blob": string(payload[:annotation])},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: tokensv1alpha1.GroupVersion.String(), Kind: "ApiToken", Name: mine.Name, UID: mine.UID, Controller: ptr.To(true)}}},
				Data: map[string][]byte{"token": payload}})).To(Succeed())
		}
		var count, size, copySize int
		Eventually(func(g Gomega) {
			count, size, copySize = cachedBytes(g)
			g.Expect(count).To(Equal(blobs + copies + 1)) // and mine's own
		}).WithTimeout(time.Minute).Should(Succeed())
		after := liveHeap()
		grew := int64(after) - int64(before)
		figures := fmt.Sprintf("%d B for %d Secrets (%d B each; the %d copies %d B each); heap %+d MiB", size, count, size/count, copies, copySize/copies, grew>>20)
		GinkgoWriter.Println("The cache holds " + figures)
		AddReportEntry("planted Secrets in the cache", figures)

		// A few KiB each, however much the tenant put in them: 100+ MiB
		// planted; the budget is ~1% of it.
		Expect(size/count).To(BeNumerically("<", 2<<10), "bytes cached per planted Secret")
		Expect(copySize/copies).To(BeNumerically("<", 2<<10), "bytes cached per copy")
		Expect(grew).To(BeNumerically("<", 16<<20), "heap growth (bytes) after planting %d MiB", (blobs*blobSize+copies*(annotation+blobSize+labelCount*180))>>20)

		By("reporting the planted Secrets that carry ApiTokens' Secret names as conflicts")
		for _, name := range []string{"conflict", "copy-000"} {
			at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
				Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"}}
			Expect(k8s.Create(ctx, at)).To(Succeed())
			Eventually(func(g Gomega) {
				var got tokensv1alpha1.ApiToken
				g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(at), &got)).To(Succeed())
				g.Expect(got.Status.Phase).To(Equal(tokensv1alpha1.PhaseFailed))
				g.Expect(got.Status.Conditions).To(ContainElement(HaveField("Reason", tokensv1alpha1.ReasonSecretConflict)))
			}).WithTimeout(time.Minute).Should(Succeed())
			var s corev1.Secret
			Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name + "-token"}, &s)).To(Succeed())
			Expect(s.Data["token"]).To(Equal(payload), "the planted Secret %s was written", s.Name)
		}
	})

	// A Secret writer can grow a token Secret past what the cache keeps
	// of it (maxCachedMetadata); the operator then writes it from the
	// Secret read live, keeping what others added.
	It("writes an owned Secret whose metadata outgrew the cache from the live Secret, keeping what others added", func() {
		ctx := context.Background()
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "tenant-"}}
		Expect(k8s.Create(ctx, n)).To(Succeed())
		at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "grown", Namespace: n.Name},
			Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d",
				SecretTemplate: &tokensv1alpha1.SecretTemplate{Labels: map[string]string{"team": "a"}}}}
		Expect(k8s.Create(ctx, at)).To(Succeed())
		key := types.NamespacedName{Namespace: n.Name, Name: "grown-token"}
		var first string
		Eventually(func(g Gomega) {
			var s corev1.Secret
			g.Expect(k8s.Get(ctx, key, &s)).To(Succeed())
			first = string(s.Data["token"])
			g.Expect(first).NotTo(BeEmpty())
		}).WithTimeout(time.Minute).Should(Succeed())

		big := strings.Repeat("x", maxCachedMetadata)
		Eventually(func(g Gomega) {
			var s corev1.Secret
			g.Expect(k8s.Get(ctx, key, &s)).To(Succeed())
			s.Annotations["example.com/theirs"] = big
			g.Expect(k8s.Update(ctx, &s)).To(Succeed())
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			var cached corev1.Secret
			g.Expect(suiteCache.Get(ctx, key, &cached)).To(Succeed())
			g.Expect(trimmed(&cached)).To(BeTrue())
			g.Expect(cached.Size()).To(BeNumerically("<", 2<<10))
		}).Should(Succeed())

		By("regenerating and changing the template: both written, their annotation kept")
		Eventually(func(g Gomega) {
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(at), at)).To(Succeed())
			at.Annotations = map[string]string{tokensv1alpha1.RegenerateAnnotation: "1"}
			at.Spec.SecretTemplate.Labels["tier"] = "gold"
			g.Expect(k8s.Update(ctx, at)).To(Succeed())
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			var s corev1.Secret
			g.Expect(k8s.Get(ctx, key, &s)).To(Succeed())
			g.Expect(string(s.Data["token"])).NotTo(Or(BeEmpty(), Equal(first)))
			g.Expect(s.Labels).To(HaveKeyWithValue("tier", "gold"))
			g.Expect(s.Annotations).To(HaveKeyWithValue("example.com/theirs", big))
			g.Expect(verifiesNow(g, client.ObjectKeyFromObject(at), string(s.Data["token"]))).To(BeTrue())
		}).WithTimeout(time.Minute).Should(Succeed())
	})
})
