package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// What kubelet sees of a replica's life: probes from the first moment.

// newSaltSecret creates a salt Secret of a name no other spec uses, and
// returns its name; delete it with the returned func.
func newSaltSecret(create bool) (string, func()) {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	name := "salt-" + hex.EncodeToString(b[:4])
	if create {
		createSalt(name, hex.EncodeToString(b))
	}
	return name, func() { _, _ = kubectlErr("-n", "apitoken-system", "delete", "secret", name, "--ignore-not-found") }
}

func createSalt(name, salt string) {
	kubectl("-n", "apitoken-system", "create", "secret", "generic", name, "--from-literal=salt="+salt)
}

var _ = Describe("probes", func() {
	It("answer liveness from the start, and readiness only once the salt is loaded and the cache has synced", func() {
		name, cleanup := newSaltSecret(false)
		DeferCleanup(cleanup)
		By("starting an auth-only replica whose salt Secret does not exist yet (a fresh install, or an existingSecret not yet synced)")
		o := launchOperator("salt-waiter", kubeconfig, "--enable-controller=false", "--salt-secret="+name)
		DeferCleanup(o.stop)
		started := time.Now()
		Eventually(func() int { return get(o.probeURL+"/healthz", "") }, "5s", "50ms").Should(Equal(200),
			"liveness does not answer while the salt is missing: kubelet would restart the pod into CrashLoopBackOff; see %s", o.log)
		GinkgoWriter.Printf("/healthz answered 200 %v after start\n", time.Since(started).Round(time.Millisecond))
		Consistently(func(g Gomega) {
			g.Expect(o.alive()).To(BeTrue(), "the replica exited while waiting for its salt; see %s", o.log)
			g.Expect(get(o.probeURL+"/healthz", "")).To(Equal(200))
			g.Expect(get(o.probeURL+"/readyz", "")).To(Equal(http.StatusServiceUnavailable), "readiness on the probe port")
			g.Expect(get(o.authURL+"/readyz", "")).NotTo(Equal(200), "readiness on the auth port")
		}, "4s", "200ms").Should(Succeed())

		By("creating the salt Secret")
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		createSalt(name, hex.EncodeToString(b))
		Eventually(func() int { return get(o.probeURL+"/readyz", "") }, "30s", "100ms").Should(Equal(200), "see %s", o.log)
		Eventually(func() int { return get(o.authURL+"/readyz", "") }, "10s", "100ms").Should(Equal(200), "see %s", o.log)
		Expect(get(o.probeURL+"/healthz", "")).To(Equal(200))
	})
})
