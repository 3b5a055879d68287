package e2e

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

var _ = Describe("apitoken-operator as a user runs it", Ordered, func() {
	const ns = "e2e"
	var (
		leader, follower *operator
		restarted        *operator
		authOnly         *operator
		authn            *operator // the API server's webhook token authenticator
		issued           []string  // every token seen, to look for in logs
		salts            []string  // every salt seen (base64 and raw), likewise
	)

	secretToken := func(name string) string {
		out := kubectl("-n", ns, "get", "secret", name, "-o", "jsonpath={.data.token}")
		raw, err := base64.StdEncoding.DecodeString(out)
		Expect(err).NotTo(HaveOccurred())
		tok := string(raw)
		if tok != "" {
			issued = append(issued, tok)
		}
		return tok
	}
	waitToken := func(name, not string) string {
		var tok string
		Eventually(func() string {
			tok = secretToken(name)
			return tok
		}, "60s", "200ms").ShouldNot(Or(BeEmpty(), Equal(not)))
		return tok
	}
	// authorize asks the explicit endpoint; a query without a scope asks for
	// articles:read, which every token of this suite grants.
	authorize := func(o *operator, tok, query string) int {
		if !strings.Contains(query, "scope=") {
			query = strings.TrimPrefix(query+"&scope=articles:read", "&")
			if !strings.HasPrefix(query, "?") {
				query = "?" + query
			}
		}
		return get(o.authURL+"/v1/authorize"+query, tok)
	}

	BeforeAll(func() {
		// The leader (started first) serves no webhooks; the follower does,
		// so the webhooks stay up when the leader is killed.
		leader = startOperator("leader", false)
		Eventually(func() string {
			out, _ := kubectlErr("-n", "apitoken-system", "get", "lease", "apitoken-operator.tokens.apitoken.dev", "-o", "jsonpath={.spec.holderIdentity}")
			return out
		}, "30s").ShouldNot(BeEmpty())
		follower = startOperator("follower", true)
		kubectl("create", "namespace", ns)
	})
	AfterAll(func() {
		for _, o := range []*operator{leader, follower, restarted, authOnly} {
			if o != nil {
				o.stop()
			}
		}
	})

	It("applies the samples with kubectl and lists them with the printer columns", func() {
		samples := filepath.Join(testenv.RepoRoot(), "config", "samples")
		args := []string{"-n", ns, "apply"}
		for _, f := range []string{"full_access", "read_only", "custom"} {
			args = append(args, "-f", filepath.Join(samples, "tokens_v1alpha1_apitoken_"+f+".yaml"))
		}
		Eventually(func() error {
			out, err := kubectlErr(args...)
			if err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			return nil
		}, "30s", "500ms").Should(Succeed())
		Eventually(func() string { return kubectl("-n", ns, "get", "apitokens") }, "60s", "250ms").Should(And(
			MatchRegexp(`NAME\s+TYPE\s+PHASE\s+EXPIRES\s+LAST USED\s+AGE`),
			MatchRegexp(`full-access\s+full-access\s+Active\s+\d{4}-`),
			MatchRegexp(`read-only\s+read-only\s+Active\s+\d{4}-`),
			MatchRegexp(`orders-writer\s+custom\s+Active\s+\d{4}-`),
		))
		Expect(kubectl("-n", ns, "get", "apitokens", "-o", "wide")).To(ContainSubstring("Read access for the CI pipeline"))
		Expect(kubectl("-n", ns, "get", "apitoken", "read-only", "-o", "jsonpath={.metadata.annotations.tokens\\.apitoken\\.dev/created-by}")).To(Equal("e2e-admin"))
	})

	It("verifies the tokens read from the Secrets at both replicas", func() {
		ro := waitToken("read-only-token", "")
		ow := waitToken("orders-writer-credentials", "")
		for _, o := range []*operator{leader, follower} {
			Eventually(func() int { return authorize(o, ro, "?scope=articles:read") }, "5s").Should(Equal(200))
			Expect(authorize(o, ro, "?scope=articles:create")).To(Equal(403))
			Expect(authorize(o, ow, "?audience=admin&scope=orders:delete")).To(Equal(200))
			Expect(authorize(o, ow, "?scope=orders:delete")).To(Equal(403), "an admin token is refused for content-api")
			Expect(authorize(o, "", "")).To(Equal(401))
		}
		By("recording the last use")
		Eventually(func() string {
			return kubectl("-n", ns, "get", "apitoken", "read-only", "-o", "jsonpath={.status.lastUsedAt}")
		}, "30s", "500ms").ShouldNot(BeEmpty())
	})

	It("applies the bkend and Strapi samples, and verifies them as docs/scopes.md says", func() {
		samples := filepath.Join(testenv.RepoRoot(), "config", "samples")
		kubectl("-n", ns, "apply", "-f", filepath.Join(samples, "tokens_v1alpha1_apitoken_bkend.yaml"),
			"-f", filepath.Join(samples, "tokens_v1alpha1_apitoken_strapi.yaml"), "-f", filepath.Join(samples, "tokens_v1alpha1_apitoken_billing.yaml"))
		Eventually(func() string { return kubectl("-n", ns, "get", "apitokens", "-o", "wide") }, "60s", "250ms").Should(And(
			MatchRegexp(`NAME\s+TYPE\s+PHASE\s+EXPIRES\s+LAST USED\s+AGE\s+PRESENTATION\s+AUDIENCE\s+CREATED BY\s+DESCRIPTION`),
			MatchRegexp(`table-data-reader\s+custom\s+Active\s+\d{4}-.*\s+bearer\s+content-api\s+e2e-admin\s+Reads and adds`),
			MatchRegexp(`articles-browser\s+custom\s+Active\s+\d{4}-.*\s+api-key\s+content-api\s+e2e-admin\s+Lists and reads`),
		))
		Expect(kubectl("-n", ns, "describe", "apitoken", "articles-browser")).To(And(
			ContainSubstring("tokens.apitoken.dev/created-by: e2e-admin"),
			MatchRegexp(`tokens.apitoken.dev/created-by-groups: \[.*"system:masters"`),
		))
		Expect(kubectl("-n", ns, "get", "apitoken", "billing-reader", "-o", "jsonpath={.spec.duration}")).To(Equal("2160h"))
		billing := waitToken("billing-reader-token", "")
		Eventually(func(g Gomega) {
			at := kubectl("-n", ns, "get", "apitoken", "billing-reader", "-o", "jsonpath={.status.issuedAt} {.status.expiresAt}")
			f := strings.Fields(at)
			g.Expect(f).To(HaveLen(2))
			issuedAt, err1 := time.Parse(time.RFC3339, f[0])
			expiresAt, err2 := time.Parse(time.RFC3339, f[1])
			g.Expect(err1).NotTo(HaveOccurred())
			g.Expect(err2).NotTo(HaveOccurred())
			g.Expect(expiresAt.Sub(issuedAt)).To(Equal(90*24*time.Hour), "2160h is 90d")
		}, "30s", "250ms").Should(Succeed())
		bkend := waitToken("table-data-reader-token", "")
		strapi := waitToken("articles-browser-token", "")
		o := follower
		bearerOf := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
		apiKeyOf := func(tok string) map[string]string { return map[string]string{"X-API-Key": tok} }
		for _, r := range []struct {
			method, path string
			headers      map[string]string
			want         int
		}{
			{"GET", "/v1/ext-authz/segments=2/table/data/7", bearerOf(bkend), 200},
			{"GET", "/v1/ext-authz/segments=2/table/data", bearerOf(bkend), 200},
			{"POST", "/v1/ext-authz/segments=2/table/data", bearerOf(bkend), 200},
			{"DELETE", "/v1/ext-authz/segments=2/table/data/7", bearerOf(bkend), 403},
			{"GET", "/v1/ext-authz/-/table/7", bearerOf(bkend), 403},
			{"GET", "/v1/ext-authz/segments=2/table/data/7", apiKeyOf(bkend), 400},
			{"GET", "/v1/ext-authz/-/articles", apiKeyOf(strapi), 200},
			{"GET", "/v1/ext-authz/-/articles/7", apiKeyOf(strapi), 200},
			{"GET", "/v1/ext-authz/-/categories", apiKeyOf(strapi), 200},
			{"GET", "/v1/ext-authz/-/categories/3", apiKeyOf(strapi), 403},
			{"POST", "/v1/ext-authz/-/articles", apiKeyOf(strapi), 403},
			{"GET", "/v1/ext-authz/-/articles", bearerOf(strapi), 400},
			{"GET", "/v1/ext-authz/audience=billing-api/invoices/7", bearerOf(billing), 200},
			{"GET", "/v1/ext-authz/-/invoices/7", bearerOf(billing), 403},
			{"GET", "/v1/ext-authz/audience=orders-api/invoices/7", bearerOf(billing), 403},
		} {
			Eventually(func() int { return send(r.method, o.authURL+r.path, r.headers) }, "5s", "100ms").Should(Equal(r.want), "%s %s", r.method, r.path)
		}
	})

	It("verifies them at an auth-only replica whose identity can write nothing, and records their use through the operator", func() {
		By("checking what each identity of config/ can and cannot do (kubectl auth can-i)")
		kubectlIn(kubectl("kustomize", filepath.Join(testenv.RepoRoot(), "config", "rbac")), "apply", "--server-side", "-f", "-")
		kubectl("apply", "-f", filepath.Join(testenv.RepoRoot(), "config", "auth", "rbac.yaml"))
		canI := func(sa string, args ...string) string {
			out, _ := kubectlErr(append([]string{"auth", "can-i"}, append(args, "--as", "system:serviceaccount:apitoken-system:"+sa)...)...) // exits 1 for "no"
			answer, _, _ := strings.Cut(strings.TrimSpace(out), "\n")                                                                        // a warning may follow
			return answer
		}
		matrix := []struct {
			sa   string
			args []string
			want string
		}{
			// The auth endpoint's identity reads what it verifies against and writes nothing.
			{"apitoken-auth", []string{"watch", "apitokens.tokens.apitoken.dev", "-A"}, "yes"},
			{"apitoken-auth", []string{"patch", "apitokens.tokens.apitoken.dev", "--subresource=status", "-A"}, "no"},
			{"apitoken-auth", []string{"update", "apitokens.tokens.apitoken.dev", "-A"}, "no"},
			{"apitoken-auth", []string{"get", "secrets/apitoken-operator-salt", "-n", "apitoken-system"}, "yes"},
			{"apitoken-auth", []string{"get", "secrets/apitoken-operator-webhook-cert", "-n", "apitoken-system"}, "no"},
			{"apitoken-auth", []string{"list", "secrets", "-n", "apitoken-system"}, "no"},
			{"apitoken-auth", []string{"get", "secrets", "-n", ns}, "no"},
			{"apitoken-auth", []string{"update", "secrets", "-n", "apitoken-system"}, "no"},
			{"apitoken-auth", []string{"create", "secrets", "-n", ns}, "no"},
			// The reconciler's identity writes status and Secrets (its own only:
			// the Secret policy, tested in controllers/), never an ApiToken's spec.
			{"apitoken-operator", []string{"patch", "apitokens.tokens.apitoken.dev", "--subresource=status", "-A"}, "yes"},
			{"apitoken-operator", []string{"update", "apitokens.tokens.apitoken.dev", "-A"}, "no"},
			{"apitoken-operator", []string{"create", "secrets", "-n", ns}, "yes"},
			{"apitoken-operator", []string{"delete", "secrets", "-n", ns}, "no"},
			{"apitoken-operator", []string{"create", "tokenreviews.authentication.k8s.io"}, "yes"},
			{"apitoken-operator", []string{"create", "subjectaccessreviews.authorization.k8s.io"}, "yes"},
			{"apitoken-auth", []string{"create", "subjectaccessreviews.authorization.k8s.io"}, "no"},
		}
		for _, m := range matrix {
			Expect(canI(m.sa, m.args...)).To(Equal(m.want), "%s: can-i %v", m.sa, m.args)
		}

		saToken := strings.TrimSpace(kubectl("-n", "apitoken-system", "create", "token", "apitoken-auth"))
		tokenFile := filepath.Join(workDir, "auth-sa-token")
		Expect(os.WriteFile(tokenFile, []byte(saToken), 0o600)).To(Succeed())
		authOnly = startOperatorWith("auth-only", tokenKubeconfig(saToken), "--enable-controller=false",
			"--report-usage-to="+follower.authURL+"/v1/usage", "--report-usage-token-file="+tokenFile)
		ro := secretToken("read-only-token")
		Eventually(func() int { return authorize(authOnly, ro, "?scope=articles:read") }, "5s").Should(Equal(200))
		Expect(authorize(authOnly, ro, "?scope=articles:create")).To(Equal(403))
		Expect(authorize(authOnly, "atk_x", "")).To(Equal(401))

		By("recording a use seen only by the auth-only replica: reported to an operator replica, which writes lastUsedAt")
		kubectlIn(`apiVersion: tokens.apitoken.dev/v1alpha1
kind: ApiToken
metadata: {name: auth-only-user}
spec: {type: read-only, duration: 30d}
`, "-n", ns, "apply", "-f", "-")
		tok := waitToken("auth-only-user-token", "")
		Eventually(func() int { return authorize(authOnly, tok, "?scope=articles:read") }, "5s").Should(Equal(200))
		Eventually(func() string {
			return kubectl("-n", ns, "get", "apitoken", "auth-only-user", "-o", "jsonpath={.status.lastUsedAt}")
		}, "30s", "500ms").ShouldNot(BeEmpty())
	})

	It("refuses bad manifests through the served webhook", func() {
		out, err := kubectlIn(`apiVersion: tokens.apitoken.dev/v1alpha1
kind: ApiToken
metadata: {name: bad}
spec: {type: full-access, duration: 7d, rotation: {gracePeriod: 8d}}
`, "-n", ns, "apply", "-f", "-")
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring(`spec.rotation.gracePeriod: Invalid value: "8d": must not be longer than spec.duration (7d)`))
	})

	It("authenticates kubectl at a real kube-apiserver through webhook token authentication", func() {
		kubectlIn(`apiVersion: tokens.apitoken.dev/v1alpha1
kind: ApiToken
metadata: {name: kube-reader}
spec: {type: read-only, duration: 30d, audience: kubernetes}
`, "-n", ns, "apply", "-f", "-")
		// A token whose audience is named like one of the API server's,
		// issued by an operator not told that name (the leader runs with
		// the default --kube-api-audiences, so its webhook lets it in).
		kubectlIn(`apiVersion: tokens.apitoken.dev/v1alpha1
kind: ApiToken
metadata: {name: k3s-named}
spec: {type: full-access, duration: 30d, audience: k3s}
`, "-n", ns, "apply", "-f", "-")
		tok := waitToken("kube-reader-token", "")
		named := waitToken("k3s-named-token", "")
		// The API server runs with k3s's --api-audiences (k3sAudiences);
		// the auth endpoint is told them.
		authn = startOperatorWith("authn", kubeconfig, "--enable-controller=false", "--kube-api-audiences="+strings.Join(k3sAudiences, ","),
			fmt.Sprintf("--auth-bind-address=127.0.0.1:%d", authnPort), "--auth-tls-cert-file="+authnCert, "--auth-tls-key-file="+authnKey)
		defer authn.stop()
		whoami := func(tok string) (string, error) {
			cmd := exec.Command(kubectlBin, "--kubeconfig", tokenKubeconfig(tok), "auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}")
			out, err := cmd.CombinedOutput()
			return strings.TrimSpace(string(out)), err
		}
		var out string
		Eventually(func() error {
			var err error
			out, err = whoami(tok)
			return err
		}, "10s", "200ms").Should(Succeed(), "kubectl auth whoami: %s", out)
		GinkgoWriter.Printf("kubectl --token=<kube-reader> auth whoami: %s\n", out)
		Expect(out).To(HavePrefix("apitoken:e2e:kube-reader "))
		Expect(out).To(ContainSubstring(`"apitoken:e2e:authenticated"`))
		Expect(out).To(ContainSubstring(`"apitoken:e2e:type:read-only"`))
		Expect(out).To(ContainSubstring(`"apitoken:e2e:scope:*:read"`))

		By("refusing a token of another audience, also one named like the API server's (k3s), and a revoked one once the API server's caches have passed")
		ro := secretToken("read-only-token")
		out, err := whoami(ro)
		Expect(err).To(HaveOccurred(), "a content-api token must not authenticate at the API server: %s", out)
		out, err = whoami(named)
		Expect(err).To(HaveOccurred(), "a token of audience k3s must not authenticate at an API server whose audiences include k3s: %s", out)
		Expect(out).To(ContainSubstring("Unauthorized"))
		kubectl("-n", ns, "patch", "apitoken", "kube-reader", "--type=merge", "-p", `{"spec":{"revoked":true}}`)
		// The endpoint refuses it within a second; kube-apiserver keeps a
		// success in its webhook cache (1s here) and in its overall token
		// cache, which holds successes for 10s and has no flag.
		start := time.Now()
		Eventually(func() int {
			return get(authn.authURL+"/v1/authorize?scope=articles:read&audience=kubernetes&namespace=e2e", tok)
		}, "1s", "20ms").Should(Equal(401))
		Eventually(func() string { out, _ := whoami(tok); return out }, "20s", "500ms").Should(ContainSubstring("Unauthorized"))
		GinkgoWriter.Printf("kube-apiserver refused the revoked token after %s\n", time.Since(start).Round(100*time.Millisecond))
	})

	It("regenerates on kubectl annotate, keeping the old token for its grace period", func() {
		old := secretToken("read-only-token")
		kubectl("-n", ns, "annotate", "apitoken", "read-only", "tokens.apitoken.dev/regenerate="+time.Now().Format("150405.000"), "--overwrite")
		fresh := waitToken("read-only-token", old)
		for _, o := range []*operator{leader, follower} {
			Eventually(func() int { return authorize(o, fresh, "") }, "5s").Should(Equal(200))
			Expect(authorize(o, old, "")).To(Equal(200), "inside the 5m grace period")
		}
	})

	It("revokes on kubectl patch, at every replica within a second", func() {
		tok := secretToken("orders-writer-credentials")
		kubectl("-n", ns, "patch", "apitoken", "orders-writer", "--type=merge", "-p", `{"spec":{"revoked":true}}`)
		for _, o := range []*operator{leader, follower} {
			Eventually(func() int { return authorize(o, tok, "?audience=admin") }, "1s", "20ms").Should(Equal(401))
		}
		Eventually(func() string { return kubectl("-n", ns, "get", "apitokens") }, "10s").Should(MatchRegexp(`orders-writer\s+custom\s+Revoked`))
		Expect(secretToken("orders-writer-credentials")).To(BeEmpty())
	})

	It("keeps the salt through a deletion of its Secret, and rotates it with no refusal at any replica", func() {
		saltOf := func() string {
			b64 := kubectl("-n", "apitoken-system", "get", "secret", "apitoken-operator-salt", "-o", "jsonpath={.data.salt}")
			raw, err := base64.StdEncoding.DecodeString(b64)
			Expect(err).NotTo(HaveOccurred())
			salts = append(salts, b64, string(raw))
			return b64
		}
		replicas := []*operator{leader, follower, authOnly}
		before, tok := saltOf(), secretToken("read-only-token")
		uid := kubectl("-n", "apitoken-system", "get", "secret", "apitoken-operator-salt", "-o", "jsonpath={.metadata.uid}")
		kubectl("-n", "apitoken-system", "delete", "secret", "apitoken-operator-salt")
		Eventually(func() string {
			out, _ := kubectlErr("-n", "apitoken-system", "get", "secret", "apitoken-operator-salt", "-o", "jsonpath={.metadata.uid}")
			return out
		}, "20s", "100ms").ShouldNot(Or(BeEmpty(), Equal(uid)))
		Expect(saltOf()).To(Equal(before), "the salt Secret came back with another salt")
		Expect(secretToken("read-only-token")).To(Equal(tok), "a token was re-issued")
		for _, o := range replicas {
			Expect(authorize(o, tok, "")).To(Equal(200))
		}

		By("a planned rotation: old and new tokens verify at every replica during the overlap")
		kubectl("-n", "apitoken-system", "annotate", "secret", "apitoken-operator-salt", "tokens.apitoken.dev/rotate-salt=e2e", "--overwrite")
		fresh := waitToken("read-only-token", tok)
		Expect(saltOf()).NotTo(Equal(before))
		for _, o := range replicas {
			Eventually(func() int { return authorize(o, fresh, "") }, "5s", "50ms").Should(Equal(200))
			Expect(authorize(o, tok, "")).To(Equal(200), "%s refused the replaced token inside the overlap", o.name)
		}
	})

	It("deletes the Secret with the ApiToken (garbage collector)", func() {
		kubectl("-n", ns, "delete", "apitoken", "orders-writer")
		Eventually(func() string {
			out, _ := kubectlErr("-n", ns, "get", "secret", "orders-writer-credentials")
			return out
		}, "30s", "250ms").Should(ContainSubstring("NotFound"))
	})

	It("keeps verifying from memory while the API server restarts, then resumes reconciling", func() {
		tok := secretToken("read-only-token")
		Expect(env.StopAPIServer()).To(Succeed())
		for _, o := range []*operator{leader, follower} {
			Consistently(func() int { return authorize(o, tok, "?scope=articles:read") }, "3s", "100ms").Should(Equal(200))
		}
		Expect(env.StartAPIServer()).To(Succeed())
		Eventually(func() error { _, err := kubectlErr("get", "--raw", "/readyz"); return err }, "60s", "250ms").Should(Succeed())
		// Allow the webhook's and the operator's watches to reconnect.
		Eventually(func() error {
			_, err := kubectlErr("-n", ns, "annotate", "apitoken", "read-only", "tokens.apitoken.dev/regenerate=after-restart", "--overwrite")
			return err
		}, "60s", "500ms").Should(Succeed())
		fresh := waitToken("read-only-token", tok)
		for _, o := range []*operator{leader, follower} {
			if !o.alive() {
				// A leader cut off from the API server longer than its renew
				// deadline gives up its lease and exits; the follower leads.
				GinkgoWriter.Printf("%s exited while the API server was down\n", o.name)
				continue
			}
			Eventually(func() int { return authorize(o, fresh, "") }, "20s", "100ms").Should(Equal(200))
		}
	})

	It("keeps reconciling after the leader is killed", func() {
		old := secretToken("full-access-token")
		leader.kill()
		kubectl("-n", ns, "annotate", "apitoken", "full-access", "tokens.apitoken.dev/regenerate=after-failover", "--overwrite")
		fresh := waitToken("full-access-token", old) // the follower takes the lease (about 15s)
		Eventually(func() int { return authorize(follower, fresh, "?scope=users:delete") }, "5s").Should(Equal(200))
		ro := secretToken("read-only-token")
		Expect(authorize(follower, ro, "")).To(Equal(200), "no token lost in the failover")
	})

	It("leaves a verifying token in every Secret when the operator is killed during a burst of regenerations", func() {
		var manifests strings.Builder
		const n = 20
		for i := 0; i < n; i++ {
			fmt.Fprintf(&manifests, "---\napiVersion: tokens.apitoken.dev/v1alpha1\nkind: ApiToken\nmetadata: {name: burst-%d, labels: {burst: \"yes\"}}\nspec: {type: read-only, duration: 30d}\n", i)
		}
		_, err := kubectlIn(manifests.String(), "-n", ns, "apply", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() int {
			return strings.Count(kubectl("-n", ns, "get", "apitokens", "-l", "burst=yes"), " Active ")
		}, "60s", "250ms").Should(Equal(n))
		kubectl("-n", ns, "annotate", "apitoken", "-l", "burst=yes", "tokens.apitoken.dev/regenerate=burst", "--overwrite")
		follower.kill() // the leader now, in the middle of the burst
		restarted = startOperator("restarted", true)
		for i := 0; i < n; i++ {
			name := fmt.Sprintf("burst-%d", i)
			Eventually(func(g Gomega) {
				handled, _ := kubectlErr("-n", ns, "get", "apitoken", name, "-o", "jsonpath={.status.lastHandledRegenerate}")
				g.Expect(handled).To(Equal("burst"))
				tok := secretToken(name + "-token")
				g.Expect(authorize(restarted, tok, "")).To(Equal(200))
			}, "60s", "250ms").Should(Succeed())
		}
	})

	It("runs every kubectl command of docs/troubleshooting.md and docs/operations.md that a cluster without a kubelet can run", func() {
		runDocCommands("read-only", ns, "troubleshooting.md", "operations.md")
	})

	It("never writes a token, a hash or the salt to a log, an Event or the audit log, which records every decision", func() {
		secrets := append([]string{}, issued...)
		saltB64 := kubectl("-n", "apitoken-system", "get", "secret", "apitoken-operator-salt", "-o", "jsonpath={.data.salt}")
		salt, err := base64.StdEncoding.DecodeString(saltB64)
		Expect(err).NotTo(HaveOccurred())
		secrets = append(secrets, saltB64, string(salt))
		secrets = append(secrets, salts...)
		hashes := kubectl("get", "apitokens", "-A", "-o", `jsonpath={range .items[*]}{.status.verification.hash} {.status.verification.previousHash} {end}`)
		secrets = append(secrets, strings.Fields(hashes)...)
		Expect(len(issued)).To(BeNumerically(">=", 4))

		var corpus strings.Builder
		corpus.WriteString(kubectl("get", "events", "-A", "-o", "yaml"))
		corpus.WriteString(kubectl("get", "events.events.k8s.io", "-A", "-o", "yaml"))
		By("stopping every operator, so that each audit log is flushed")
		records, reviews := 0, 0
		var audits strings.Builder
		for _, o := range []*operator{leader, follower, restarted, authOnly, authn} {
			o.stop()
			data, err := os.ReadFile(o.log)
			Expect(err).NotTo(HaveOccurred())
			Expect(data).NotTo(BeEmpty())
			corpus.Write(data)
			audit, err := os.ReadFile(o.audit)
			Expect(err).NotTo(HaveOccurred())
			corpus.Write(audit)
			audits.Write(audit)
			answered := 0
			for _, line := range strings.Split(strings.TrimSpace(string(audit)), "\n") {
				if line == "" {
					continue
				}
				var rec map[string]any
				Expect(json.Unmarshal([]byte(line), &rec)).To(Succeed(), line)
				if rec["endpoint"] == "tokenreview" {
					reviews++
				} else {
					answered++
				}
			}
			records += answered
			decisions.Lock()
			sent := decisions.sent[strings.TrimPrefix(strings.TrimPrefix(o.authURL, "http://"), "https://")]
			decisions.Unlock()
			if o.killed {
				Expect(answered).To(BeNumerically("<=", sent), "%s was killed: at most what it answered", o.name)
			} else {
				Expect(answered).To(Equal(sent), "%s: one audit record per decision it answered", o.name)
			}
		}
		AddReportEntry("audit records", fmt.Sprintf("%d decisions, %d TokenReviews", records, reviews))
		Expect(records).To(BeNumerically(">", 20))
		Expect(reviews).To(BeNumerically(">", 0), "the API server's TokenReviews are audited too")
		Expect(strings.ToLower(audits.String())).NotTo(ContainSubstring("atk_"), "nothing token-shaped in the audit logs")
		text := corpus.String()
		Expect(text).To(ContainSubstring("Regenerated"), "the Events were collected")
		for _, s := range secrets {
			if s == "" {
				continue
			}
			Expect(strings.Contains(text, s)).To(BeFalse(), "a secret value (%d chars) leaked into a log or Event", len(s))
		}
	})
})

var _ = Describe("config/default and config/networkpolicy", func() {
	It("build with kustomize and apply cleanly with a server-side dry run", func() {
		// cert-manager's CRDs stand in for cert-manager, which is not installed here.
		_, err := kubectlIn(certManagerCRDs, "apply", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() error {
			_, err := kubectlErr("get", "certificates.cert-manager.io", "-A")
			return err
		}, "20s").Should(Succeed())
		manifests := kubectl("kustomize", filepath.Join(testenv.RepoRoot(), "config", "default"))
		// Both Deployments take their image from config/default's images:.
		Expect(regexp.MustCompile(`image: \S+`).FindAllString(manifests, -1)).To(HaveEach("image: ghcr.io/apitoken-operator/apitoken-operator:v0.1.0"))
		Expect(strings.Count(manifests, "image: ghcr.io/apitoken-operator/apitoken-operator:v0.1.0")).To(Equal(2))
		By("one images: entry sets the image of both Deployments")
		overlay, err := os.MkdirTemp(workDir, "image-overlay-")
		Expect(err).NotTo(HaveOccurred())
		base, err := filepath.Rel(overlay, filepath.Join(testenv.RepoRoot(), "config", "default"))
		Expect(err).NotTo(HaveOccurred())
		Expect(os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte("resources: ["+base+"]\n"+
			"images: [{name: ghcr.io/apitoken-operator/apitoken-operator, newName: registry.example.com/apitoken-operator, newTag: v9.9.9}]\n"), 0o600)).To(Succeed())
		Expect(regexp.MustCompile(`image: \S+`).FindAllString(kubectl("kustomize", overlay), -1)).To(
			Equal([]string{"image: registry.example.com/apitoken-operator:v9.9.9", "image: registry.example.com/apitoken-operator:v9.9.9"}))

		By("the auth replicas: spread over zones, a PodDisruptionBudget, a Service for their metrics")
		objs := renderedObjects(manifests)
		var auth appsv1.Deployment
		Expect(objs.decode("Deployment", "apitoken-auth", &auth)).To(Succeed())
		Expect(auth.Spec.Template.Spec.TopologySpreadConstraints).To(ContainElement(And(
			HaveField("TopologyKey", "topology.kubernetes.io/zone"),
			HaveField("WhenUnsatisfiable", corev1.ScheduleAnyway),
			HaveField("MaxSkew", BeEquivalentTo(1)),
			HaveField("LabelSelector.MatchLabels", Equal(auth.Spec.Selector.MatchLabels)),
		)))
		container := auth.Spec.Template.Spec.Containers[0]
		Expect(container.Args).To(ContainElement("--metrics-bind-address=:8080"))
		Expect(container.Ports).To(ContainElement(And(HaveField("Name", "metrics"), HaveField("ContainerPort", BeEquivalentTo(8080)))))
		var pdb policyv1.PodDisruptionBudget
		Expect(objs.decode("PodDisruptionBudget", "apitoken-auth", &pdb)).To(Succeed())
		Expect(pdb.Namespace).To(Equal("apitoken-system"))
		Expect(pdb.Spec.MinAvailable).To(HaveValue(Equal(intstr.FromInt32(1))))
		Expect(pdb.Spec.Selector.MatchLabels).To(Equal(auth.Spec.Selector.MatchLabels))
		var metrics corev1.Service
		Expect(objs.decode("Service", "apitoken-auth-metrics", &metrics)).To(Succeed())
		Expect(metrics.Spec.Selector).To(Equal(auth.Spec.Selector.MatchLabels))
		Expect(metrics.Spec.Ports).To(ConsistOf(And(
			HaveField("Name", "http-metrics"), HaveField("Port", BeEquivalentTo(8080)), HaveField("TargetPort", intstr.FromString("metrics")))))

		By("the auth replicas' usage reports go to a name the serving certificate holds")
		var reportTo *url.URL
		for _, a := range container.Args {
			if v, ok := strings.CutPrefix(a, "--report-usage-to="); ok {
				reportTo, err = url.Parse(v)
				Expect(err).NotTo(HaveOccurred())
			}
		}
		Expect(reportTo).NotTo(BeNil())
		var dnsNames []string
		for _, o := range objs {
			if o.GetKind() == "Certificate" && o.GetName() == "apitoken-operator-auth-cert" {
				dnsNames, _, _ = unstructured.NestedStringSlice(o.Object, "spec", "dnsNames")
			}
		}
		Expect(dnsNames).To(ContainElement(reportTo.Hostname()), "--report-usage-to is verified against the certificate the operator's replicas serve")

		By("each ServiceMonitor of config/prometheus finds a Service of config/default with its port")
		var monitors []unstructured.Unstructured
		var alerts string
		for _, o := range renderedObjects(kubectl("kustomize", filepath.Join(testenv.RepoRoot(), "config", "prometheus"))) {
			switch o.GetKind() {
			case "ServiceMonitor":
				monitors = append(monitors, o)
			case "PrometheusRule":
				data, err := json.Marshal(o.Object)
				Expect(err).NotTo(HaveOccurred())
				alerts = string(data)
			}
		}
		Expect(monitors).To(HaveLen(2))
		Expect(alerts).NotTo(BeEmpty(), "config/prometheus ships its alerts")
		for _, m := range monitors {
			labels, _, _ := unstructured.NestedStringMap(m.Object, "spec", "selector", "matchLabels")
			endpoints, _, _ := unstructured.NestedSlice(m.Object, "spec", "endpoints")
			Expect(endpoints).To(HaveLen(1))
			port := endpoints[0].(map[string]any)["port"]
			var found []string
			for _, o := range objs {
				if o.GetKind() != "Service" || !labelsMatch(o.GetLabels(), labels) {
					continue
				}
				var svc corev1.Service
				Expect(runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &svc)).To(Succeed())
				for _, p := range svc.Spec.Ports {
					if p.Name == port {
						found = append(found, svc.Name)
					}
				}
			}
			Expect(found).To(HaveLen(1), "ServiceMonitor %s: one Service labelled %v with port %v", m.GetName(), labels, port)
			Expect(alerts).To(ContainSubstring(found[0]), "an alert (ApiTokenAuthEndpointDown, ApiTokenOperatorDown) watches the job (Service) %s scrapes", m.GetName())
		}

		out, err := kubectlIn(manifests, "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-")
		Expect(err).NotTo(HaveOccurred(), out)
		for _, deployment := range []string{"apitoken-operator", "apitoken-auth"} {
			Expect(out).To(ContainSubstring("deployment.apps/" + deployment + " serverside-applied (server dry run)"))
		}
		Expect(out).To(ContainSubstring("poddisruptionbudget.policy/apitoken-auth serverside-applied (server dry run)"))
		Expect(out).To(ContainSubstring("service/apitoken-auth-metrics serverside-applied (server dry run)"))
		Expect(out).To(ContainSubstring("validatingadmissionpolicy.admissionregistration.k8s.io/apitoken-operator-own-secrets serverside-applied (server dry run)"))
		out, err = kubectlIn(kubectl("kustomize", filepath.Join(testenv.RepoRoot(), "config", "networkpolicy")), "apply", "--server-side", "--dry-run=server", "-f", "-")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("networkpolicy.networking.k8s.io/apitoken-operator serverside-applied (server dry run)"))
	})
})

// rendered is the objects of a multi-document YAML (kustomize output).
type rendered []unstructured.Unstructured

func renderedObjects(manifests string) rendered {
	var out rendered
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifests), 4096)
	for {
		var u unstructured.Unstructured
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return out
		}
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}

// decode converts the object of that kind and name into into.
func (r rendered) decode(kind, name string, into any) error {
	for _, u := range r {
		if u.GetKind() == kind && u.GetName() == name {
			return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into)
		}
	}
	return fmt.Errorf("no %s %s in the manifests", kind, name)
}

// labelsMatch reports whether labels has every key and value of selector.
func labelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return len(selector) > 0
}

// certManagerCRDs stands in for cert-manager's CRDs: the kinds exist and
// accept any object, which is what a server-side dry run needs.
var certManagerCRDs = stubCRD("Certificate", "certificates") + "---\n" + stubCRD("Issuer", "issuers")

func stubCRD(kind, plural string) string {
	return fmt.Sprintf(`apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: %[2]s.cert-manager.io}
spec:
  group: cert-manager.io
  names: {kind: %[1]s, plural: %[2]s, singular: %[3]s, listKind: %[1]sList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`, kind, plural, strings.ToLower(kind))
}
