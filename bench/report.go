package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// report collects markdown sections and a short plain-text summary.
type report struct {
	started  time.Time
	sections strings.Builder
	summary  strings.Builder
}

func (r *report) add(markdown, summary string) {
	r.sections.WriteString(markdown)
	r.sections.WriteString("\n")
	r.summary.WriteString(summary)
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "model name") {
			if _, v, ok := strings.Cut(line, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return runtime.GOARCH
}

func (r *report) write(path string) error {
	var b strings.Builder
	kernel, _ := exec.Command("uname", "-sr").Output()
	fmt.Fprintf(&b, `# Benchmarks

Written by `+"`make bench`"+` (bench/), %s. Both sides of every comparison
run in the same process tree, on the same machine, in the same run,
interleaved over several rounds; figures are medians.

| machine | |
| --- | --- |
| CPU | %s, %d logical CPUs |
| OS | %s |
| Go | %s |
| kube-apiserver | v1.37.2 (built from k8s.io/kubernetes), etcd v3.6.16 |

`, r.started.UTC().Format("2006-01-02 15:04 UTC"), cpuModel(), runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version())
	b.WriteString(r.sections.String())
	return os.WriteFile(path, []byte(b.String()), 0o644) //nolint:gosec // a documentation page
}
