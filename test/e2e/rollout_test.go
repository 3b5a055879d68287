package e2e

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// replicaSet is the routing a Service does: requests go to the replicas
// whose readiness probe answers 200, as kubelet and the endpoints
// controller see it, so a replica leaves the set when its /readyz turns
// (at SIGTERM) while it still serves for --shutdown-delay.
type replicaSet struct {
	mu    sync.Mutex
	all   []*operator
	ready []*operator
	next  int
}

func (s *replicaSet) add(o *operator) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all = append(s.all, o)
}

// probe refreshes the ready set from every replica's /readyz.
func (s *replicaSet) probe() {
	s.mu.Lock()
	all := append([]*operator(nil), s.all...)
	s.mu.Unlock()
	var ready []*operator
	for _, o := range all {
		if o.alive() && getPlain(o.probeURL+"/readyz") == http.StatusOK {
			ready = append(ready, o)
		}
	}
	s.mu.Lock()
	s.ready = ready
	s.mu.Unlock()
}

// pick returns the next ready replica other than not, round robin; nil
// when there is none.
func (s *replicaSet) pick(not *operator) *operator {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range len(s.ready) {
		s.next++
		if o := s.ready[s.next%len(s.ready)]; o != not {
			return o
		}
	}
	return nil
}

// getPlain is get without counting a decision (for probes and metrics).
func getPlain(url string) int {
	resp, err := (&http.Client{Timeout: time.Second}).Get(url)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// regenerations sums apitoken_regenerations_total over its reasons, from
// the replica's metrics endpoint.
func regenerations(metricsURL string) (float64, error) {
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(metricsURL + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apitoken_regenerations_total") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("%q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// isLeader reads leader_election_master_status from the replica's metrics.
func isLeader(metricsURL string) bool {
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(metricsURL + "/metrics")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "leader_election_master_status") && strings.HasSuffix(line, " 1") {
			return true
		}
	}
	return false
}

// reissueReasons are the Events of a token replaced (any reason).
var reissueReasons = []string{"Regenerated", "Rotated", "SaltRotated", "SecretMissing", "SecretTampered", "SecretUntrusted", "CutHeld"}

var _ = Describe("Rollouts of the operator (issue 30: an upgrade never logs clients out)", func() {
	It("rolls three leader-electing replicas twice, one SIGTERM at a time, then SIGKILLs the leader, under steady traffic with usage reports: no token re-issued, no valid request refused", func() {
		const ns, tokens = "e2e-rollout", 8
		kubectl("create", "namespace", ns)

		metricsPort := map[*operator]int{}
		start := func(name string, webhooks bool) *operator {
			port := freePort()
			o := startOperatorWith(name, kubeconfig, "--leader-elect", fmt.Sprintf("--enable-webhooks=%t", webhooks),
				"--usage-reporters=system:serviceaccount:apitoken-system:apitoken-auth",
				fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", port),
				// As config/ and the chart: readiness off at SIGTERM, serve on
				// while the endpoints follow, then drain.
				"--shutdown-delay=1s")
			metricsPort[o] = port
			return o
		}
		metricsURL := func(o *operator) string { return fmt.Sprintf("http://127.0.0.1:%d", metricsPort[o]) }

		By("three replicas, the first serving the webhooks, and the tokens")
		set := &replicaSet{}
		gen := []*operator{start("roll-1", true), start("roll-2", false), start("roll-3", false)}
		for _, o := range gen {
			set.add(o)
		}
		DeferCleanup(func() {
			set.mu.Lock()
			defer set.mu.Unlock()
			for _, o := range set.all {
				o.stop()
			}
		})
		var manifests strings.Builder
		for i := range tokens {
			fmt.Fprintf(&manifests, "---\napiVersion: tokens.apitoken.dev/v1alpha1\nkind: ApiToken\nmetadata: {name: client-%d, namespace: %s}\nspec: {type: read-only, duration: 30d, rotation: {gracePeriod: 5m}}\n", i, ns)
		}
		_, err := kubectlIn(manifests.String(), "apply", "-f", "-")
		Expect(err).NotTo(HaveOccurred())

		type record struct{ token, hash, secret string }
		before := map[string]record{}
		Eventually(func(g Gomega) {
			for i := range tokens {
				name := fmt.Sprintf("client-%d", i)
				out, err := kubectlErr("-n", ns, "get", "apitoken", name, "-o", "jsonpath={.status.phase} {.status.verification.hash}")
				g.Expect(err).NotTo(HaveOccurred())
				f := strings.Fields(out)
				g.Expect(f).To(HaveLen(2))
				g.Expect(f[0]).To(Equal("Active"))
				raw, err := kubectlErr("-n", ns, "get", "secret", name+"-token", "-o", "jsonpath={.data.token}")
				g.Expect(err).NotTo(HaveOccurred())
				tok, err := base64.StdEncoding.DecodeString(raw)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(tok).NotTo(BeEmpty())
				before[name] = record{string(tok), f[1], name + "-token"}
			}
		}, "60s", "500ms").Should(Succeed())
		// What the first generation counted so far (roll-1's first tokens).
		baseline := 0.0
		for _, o := range gen {
			v, err := regenerations(metricsURL(o))
			Expect(err).NotTo(HaveOccurred())
			baseline += v
		}

		By("clients calling every token in a loop, routed to the ready replicas")
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var sent, refused, retried atomic.Int64
		var refusalsMu sync.Mutex
		refusals := map[string]int{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				set.probe()
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
		set.probe()
		names := make([]string, 0, tokens)
		for n := range before {
			names = append(names, n)
		}
		sort.Strings(names)
		for c := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer GinkgoRecover()
				for i := c; ; i++ {
					select {
					case <-stop:
						return
					case <-time.After(10 * time.Millisecond):
					}
					o := set.pick(nil)
					if o == nil {
						refused.Add(1)
						refusalsMu.Lock()
						refusals["no ready replica"]++
						refusalsMu.Unlock()
						continue
					}
					tok := before[names[i%len(names)]].token
					code := get(o.authURL+"/v1/authorize?scope=articles:read&namespace="+ns, tok)
					if code == 0 {
						// No answer (a killed replica the probes have not
						// seen yet): the next upstream, once, as nginx's
						// proxy_next_upstream error and Envoy's connect-failure
						// retry do: never the one that gave none, which the
						// probes may not have dropped yet. A refusal is never
						// retried.
						retried.Add(1)
						if o = set.pick(o); o != nil {
							code = get(o.authURL+"/v1/authorize?scope=articles:read&namespace="+ns, tok)
						}
					}
					sent.Add(1)
					if code != http.StatusOK {
						who := "no other ready replica"
						if o != nil {
							who = o.name
						}
						refused.Add(1)
						refusalsMu.Lock()
						refusals[fmt.Sprintf("%s answered %d", who, code)]++
						refusalsMu.Unlock()
					}
				}
			}()
		}
		holder := func() string {
			out, _ := kubectlErr("-n", "apitoken-system", "get", "lease", "apitoken-operator.tokens.apitoken.dev", "-o", "jsonpath={.spec.holderIdentity}")
			return out
		}
		time.Sleep(2 * time.Second)
		usedBefore := kubectl("-n", ns, "get", "apitoken", names[0], "-o", "jsonpath={.status.lastUsedAt}")

		By("rolling every replica twice: a new one starts and is ready, then an old one gets SIGTERM and exits on its own")
		leaders := map[string]bool{holder(): true}
		stopped := 0.0
		n := len(gen)
		for round := range 2 {
			for i := range gen {
				n++
				fresh := start(fmt.Sprintf("roll-%d", n), false)
				set.add(fresh)
				old := gen[i]
				v, err := regenerations(metricsURL(old))
				Expect(err).NotTo(HaveOccurred())
				stopped += v
				Expect(old.cmd.Process.Signal(syscall.SIGTERM)).To(Succeed())
				Eventually(old.done, "20s").Should(BeClosed(), "%s did not exit on SIGTERM; see %s", old.name, old.log)
				Expect(old.killed).To(BeFalse())
				gen[i] = fresh
				// Time for the lease to move and the new leader to resync.
				Eventually(func() string { h := holder(); leaders[h] = true; return h }, "20s", "200ms").ShouldNot(BeEmpty())
				time.Sleep(1500 * time.Millisecond)
				GinkgoWriter.Printf("round %d: %s replaced %s; lease holder %s; %d requests, %d refused\n", round+1, fresh.name, old.name, holder(), sent.Load(), refused.Load())
			}
		}

		By("a SIGKILL of the leader: the lease expires, another replica takes over")
		var leader *operator
		Eventually(func() *operator {
			for _, o := range gen {
				if isLeader(metricsURL(o)) {
					leader = o
				}
			}
			return leader
		}, "20s", "200ms").ShouldNot(BeNil())
		v, err := regenerations(metricsURL(leader))
		Expect(err).NotTo(HaveOccurred())
		stopped += v
		leader.kill()
		survivors := []*operator{}
		for _, o := range gen {
			if o != leader {
				survivors = append(survivors, o)
			}
		}
		gen = survivors
		// The killed leader does not release its lease: it expires (15s).
		Eventually(func() bool {
			for _, o := range gen {
				if isLeader(metricsURL(o)) {
					return true
				}
			}
			return false
		}, "40s", "500ms").Should(BeTrue(), "no replica took the lease after the leader was killed")
		time.Sleep(3 * time.Second)
		close(stop)
		wg.Wait()

		By("nothing re-issued, nothing refused")
		after := 0.0
		for _, o := range gen {
			v, err := regenerations(metricsURL(o))
			Expect(err).NotTo(HaveOccurred())
			after += v
		}
		GinkgoWriter.Printf("rollout: %d requests, %d refused %v, %d retried on no answer; lease holders %d; regenerations counted %v (baseline %v)\n",
			sent.Load(), refused.Load(), refusals, retried.Load(), len(leaders), stopped+after, baseline)
		Expect(refused.Load()).To(BeZero(), "valid requests refused during the rollout: %v", refusals)
		Expect(sent.Load()).To(BeNumerically(">", 500))
		Expect(len(leaders)).To(BeNumerically(">=", 3), "the lease moved at least twice: %v", leaders)
		Expect(stopped+after).To(Equal(baseline), "apitoken_regenerations_total grew during the rollout")
		for _, name := range names {
			r := before[name]
			out := kubectl("-n", ns, "get", "apitoken", name, "-o", "jsonpath={.status.phase} {.status.verification.hash}")
			Expect(out == "Active "+r.hash).To(BeTrue(), "ApiToken %s is no longer Active with the hash it had", name)
			raw := kubectl("-n", ns, "get", "secret", r.secret, "-o", "jsonpath={.data.token}")
			Expect(raw == base64.StdEncoding.EncodeToString([]byte(r.token))).To(BeTrue(), "Secret %s holds another token", r.secret)
		}
		reasons := kubectl("-n", ns, "get", "events", "-o", "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}")
		for _, r := range reissueReasons {
			Expect(strings.Fields(reasons)).NotTo(ContainElement(r), "an Event of a re-issue")
		}
		By("and the uses were recorded throughout")
		Eventually(func() string {
			return kubectl("-n", ns, "get", "apitoken", names[0], "-o", "jsonpath={.status.lastUsedAt}")
		}, "30s", "500ms").ShouldNot(Or(BeEmpty(), Equal(usedBefore)))
	})
})
