package e2e

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// What kubelet sees of a replica's life: probes from the first moment,
// and a shutdown that routes nothing to a closed port.

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

var _ = Describe("SIGTERM", func() {
	It("turns readiness off at once, serves on for --shutdown-delay, then drains the requests in flight", func() {
		name, cleanup := newSaltSecret(true)
		DeferCleanup(cleanup)
		const delay = 3 * time.Second
		o := startOperatorWith("drain", kubeconfig, "--enable-controller=false", "--salt-secret="+name,
			fmt.Sprintf("--shutdown-delay=%s", delay))
		DeferCleanup(o.stop)
		decision := o.authURL + "/v1/authorize?scope=articles:read&namespace=e2e"
		Expect(get(decision, "")).To(Equal(http.StatusUnauthorized))

		By("starting a TokenReview whose body is still being sent")
		u, err := url.Parse(o.authURL)
		Expect(err).NotTo(HaveOccurred())
		conn, err := net.Dial("tcp", u.Host)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(conn.Close)
		body := `{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"not-a-token"}}`
		half := len(body) / 2
		_, err = fmt.Fprintf(conn, "POST /v1/tokenreview HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", u.Host, len(body), body[:half])
		Expect(err).NotTo(HaveOccurred())

		By("sending SIGTERM")
		Expect(o.cmd.Process.Signal(syscall.SIGTERM)).To(Succeed())
		signalled := time.Now()
		Eventually(func() int { return get(o.probeURL+"/readyz", "") }, "1s", "20ms").Should(Equal(http.StatusServiceUnavailable))
		Eventually(func() int { return get(o.authURL+"/readyz", "") }, "1s", "20ms").Should(Equal(http.StatusServiceUnavailable))
		notReady := time.Since(signalled)

		By("the auth port still answering decisions during the delay")
		answered := 0
		for time.Since(signalled) < delay-500*time.Millisecond {
			Expect(get(decision, "")).To(Equal(http.StatusUnauthorized), "a request %v after SIGTERM, within the %v delay", time.Since(signalled), delay)
			Expect(get(o.probeURL+"/healthz", "")).To(Equal(200))
			answered++
			time.Sleep(100 * time.Millisecond)
		}
		GinkgoWriter.Printf("not ready %v after SIGTERM; %d decisions answered during the delay\n", notReady.Round(time.Millisecond), answered)

		By("after the delay: no new connection, and the request in flight completes")
		Eventually(func() int { return get(decision, "") }, "3s", "50ms").Should(Equal(0), "the listener is still open after the delay")
		Expect(o.alive()).To(BeTrue(), "the process exited with a request in flight; see %s", o.log)
		_, err = conn.Write([]byte(body[half:]))
		Expect(err).NotTo(HaveOccurred())
		Expect(conn.SetReadDeadline(time.Now().Add(5 * time.Second))).To(Succeed())
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		Expect(err).NotTo(HaveOccurred(), "the request in flight was cut; see %s", o.log)
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		var sb strings.Builder
		_, _ = bufio.NewReader(resp.Body).WriteTo(&sb)
		Expect(sb.String()).To(ContainSubstring(`"kind":"TokenReview"`))
		Eventually(o.done, "15s").Should(BeClosed())
		Expect(o.cmd.ProcessState.ExitCode()).To(Equal(0), "see %s", o.log)
	})
})
