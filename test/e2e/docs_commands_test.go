package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/gomega"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// docCommands returns every kubectl command a page under docs/ gives: the
// lines of its shell blocks that start with kubectl (a trailing \ joins
// the next line) and its inline `kubectl ...` code.
func docCommands(page string) []string {
	f, err := os.Open(filepath.Join(testenv.RepoRoot(), "docs", page))
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	defer f.Close()
	var out []string
	inline := regexp.MustCompile("`(kubectl [^`]+)`")
	inBlock, cont := false, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			inBlock = !inBlock
			continue
		}
		if inBlock {
			l := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "$ "))
			if cont != "" {
				l, cont = cont+" "+l, ""
			}
			if strings.HasSuffix(l, `\`) {
				cont = strings.TrimSuffix(l, `\`)
				continue
			}
			if strings.HasPrefix(l, "kubectl ") {
				out = append(out, l)
			}
			continue
		}
		for _, m := range inline.FindAllStringSubmatch(line, -1) {
			out = append(out, strings.ReplaceAll(m[1], `\|`, "|"))
		}
	}
	return out
}

// docCommandsNotRun are the commands of docs/troubleshooting.md and
// docs/operations.md that this cluster cannot run, each with why: there is
// no kubelet (no pods, logs, port-forwards), no ingress controller or
// cert-manager, or the command ends the cluster's salt for every later
// spec. Every entry must match a command of the pages.
var docCommandsNotRun = map[string]string{
	" logs ":                          "no kubelet: no pods, no logs",
	"port-forward":                    "no kubelet: no pods to forward to",
	"rollout restart":                 "no kubelet: no Deployment runs here",
	"get pods":                        "no kubelet: no pods",
	"get ingress":                     "no ingress controller here",
	"get certificate":                 "no cert-manager here",
	"apitoken-operator-auth-cert":     "no cert-manager here to issue the auth endpoint's certificate",
	"networkpolicy apitoken-operator": "config/networkpolicy is not applied here (dry run only)",
	"mutatingwebhookconfiguration apitoken-operator-mutating": "the webhooks here are envtest's, under its own name",
	"endpointslices":                               "the webhook runs on this machine, not behind a Service",
	"create namespace apitoken-system":             "restores into a new cluster; this one has the namespace",
	"create secret generic apitoken-operator-salt": "restores into a new cluster; this one has its salt",
	"patch secret apitoken-operator-salt":          "sets a salt from stdin: cmd/app's envtest suite (the salt's life) sets the same keys through the API",
	"rotate-salt":                                  "rotates the salt of every later spec: cmd/app's envtest suite (the salt's life) sets the same annotations",
	"replaces-salt-ids=":                           "acknowledges a lost salt ($ids from the lines before): cmd/app's envtest suite (the salt's life) sets the same annotation",
	"secret salt-from-vault":                       "a salt Secret someone else provides (--salt-create=false): cmd/app's envtest suite runs these commands against an operator started so",
	"kubectl apply":                                "a reference in a sentence, not a command",
	"kubectl describe apitoken":                    "a reference in a sentence (describe prints hashes: the page says not to paste it)",
}

// runDocCommands runs every kubectl command of the pages against this
// cluster, with NAME and NS naming a live ApiToken, and fails on any that
// does not exit 0, unless docCommandsNotRun says why it cannot run here.
func runDocCommands(name, ns string, pages ...string) {
	used := map[string]bool{}
	ran := 0
	for _, page := range pages {
		for _, c := range docCommands(page) {
			skip := ""
			for k := range docCommandsNotRun {
				if strings.Contains(c, k) {
					skip, used[k] = k, true
				}
			}
			if skip != "" {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", c)
			cmd.Dir = workDir
			cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "NAME="+name, "NS="+ns,
				"PATH="+filepath.Dir(kubectlBin)+string(os.PathListSeparator)+os.Getenv("PATH"))
			out, err := cmd.CombinedOutput()
			cancel()
			ExpectWithOffset(1, err).NotTo(HaveOccurred(), "docs/%s: %s\n%s", page, c, out)
			ran++
		}
	}
	for k := range docCommandsNotRun {
		ExpectWithOffset(1, used[k]).To(BeTrue(), "docCommandsNotRun[%q] matches no command of the pages any more", k)
	}
	ExpectWithOffset(1, ran).To(BeNumerically(">=", 25))
}
