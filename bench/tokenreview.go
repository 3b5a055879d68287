package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/client-go/rest"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// reviewConns is how many workers send TokenReviews at once.
const reviewConns = 16

// stageTokenReview sends the same TokenReview load to kube-apiserver's own
// /apis/authentication.k8s.io/v1/tokenreviews, authenticating a token from
// a static token file (the path in-cluster proxies such as kube-rbac-proxy
// use), and to our /v1/tokenreview.
func stageTokenReview(cfg *config, r *report) error {
	dir, err := os.MkdirTemp("", "bench-tokenreview-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	const static = "bench-static-token-0123456789abcdef"
	file := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(file, []byte(static+`,bench-user,bench-uid,"bench"`+"\n"), 0o600); err != nil {
		return err
	}
	if _, err := testenv.Assets(); err != nil {
		return err
	}
	env, err := testenv.StartWith(testenv.Options{}, func(args map[string]string) { args["token-auth-file"] = file })
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	apiClient, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		return err
	}
	apiClient.Timeout = 10 * time.Second
	apiURL := strings.TrimSuffix(env.Config.Host, "/") + "/apis/authentication.k8s.io/v1/tokenreviews"
	apiReq := reviewRequest(apiURL, static, "")

	ours, err := startChild("ours", 100_000)
	if err != nil {
		return err
	}
	defer ours.stop()
	// The probe token's audience is content-api: a review that names no
	// audience is for the API server's, which it is not valid for.
	oursReq := reviewRequest("http://"+ours.addr+"/v1/tokenreview", ours.probe, "content-api")

	// Check both answer "authenticated" before measuring.
	for name, pair := range map[string]struct {
		c  *http.Client
		mk newRequest
	}{"kube-apiserver": {apiClient, apiReq}, "ours": {httpClient(1), oursReq}} {
		if err := checkAuthenticated(name, pair.c, pair.mk); err != nil {
			return err
		}
	}
	var apiRPS, ourRPS []float64
	var apiP99, ourP99 []time.Duration
	closedLoopWith(apiClient, apiReq, reviewConns, 300*time.Millisecond, 201)
	for round := 0; round < cfg.rounds; round++ {
		a := closedLoopWith(apiClient, apiReq, reviewConns, cfg.duration, 201)
		o := closedLoop(oursReq, reviewConns, cfg.duration)
		apiRPS, ourRPS = append(apiRPS, a.rps), append(ourRPS, o.rps)
		apiP99, ourP99 = append(apiP99, a.p99), append(ourP99, o.p99)
	}
	md, sum := tokenReviewReport(apiRPS, ourRPS, apiP99, ourP99)
	r.add(md, sum)
	return nil
}

// checkAuthenticated sends name's TokenReview once (c, mk) and fails unless
// it authenticates the token.
func checkAuthenticated(name string, c *http.Client, mk newRequest) error {
	resp, err := c.Do(mk())
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	var review authnv1.TokenReview
	err = json.NewDecoder(resp.Body).Decode(&review)
	_ = resp.Body.Close()
	if resp.StatusCode != 201 && resp.StatusCode != 200 {
		return fmt.Errorf("%s answered %d", name, resp.StatusCode)
	}
	if err != nil {
		return fmt.Errorf("%s answered no TokenReview: %w", name, err)
	}
	if !review.Status.Authenticated {
		// A refusal is as fast as a pass: measuring one would say nothing.
		return fmt.Errorf("%s did not authenticate the token: %q", name, review.Status.Error)
	}
	return nil
}

// tokenReviewReport is the section of docs/benchmarks.md and the summary
// line for the rounds measured.
func tokenReviewReport(apiRPS, ourRPS []float64, apiP99, ourP99 []time.Duration) (md, sum string) {
	md = fmt.Sprintf(`## 3. TokenReview: kube-apiserver's own against ours

The same TokenReview of a valid token, %d concurrent workers: kube-apiserver v1.37.2 authenticating a token from `+"`--token-auth-file`"+` (over TLS with a client certificate, as an in-cluster proxy calls it), and our `+"`/v1/tokenreview`"+` (plain HTTP on loopback, 100,000 tokens loaded).

| endpoint | req/s | p99 |
| --- | --- | --- |
| kube-apiserver `+"`/apis/authentication.k8s.io/v1/tokenreviews`"+` | %.0f | %v |
| apitoken-operator `+"`/v1/tokenreview`"+` | %.0f | %v |
| ratio | %.1fx | |

Target: ≥ 10x the API server's throughput.
`, reviewConns, median(apiRPS), medianDur(apiP99).Round(time.Microsecond), median(ourRPS), medianDur(ourP99).Round(time.Microsecond), median(ourRPS)/median(apiRPS))
	sum = fmt.Sprintf("tokenreview apiserver %6.0f/s ours %7.0f/s (%.1fx)\n", median(apiRPS), median(ourRPS), median(ourRPS)/median(apiRPS))
	return md, sum
}
