package cluster

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// printMemory prints the resident memory (VmRSS) of each of the cluster's
// processes (by the pids hack/cluster.sh recorded), of the containerd
// shims, and of each pod (the processes in its cgroups), and their sum: a
// figure for docs/benchmarks.md, not an assertion.
func printMemory(t *testing.T) {
	var lines []string
	var total int64
	add := func(what string, kib int64) {
		total += kib
		lines = append(lines, fmt.Sprintf("%8.1f MiB  %s", float64(kib)/1024, what))
	}
	pidFiles, _ := filepath.Glob(filepath.Join(clusterEnv["CLUSTER_DIR"], "pids", "*"))
	sort.Strings(pidFiles)
	for _, f := range pidFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		fields := strings.Fields(string(b))
		if len(fields) == 0 {
			continue
		}
		if kib, ok := rss(fields[0]); ok {
			add(filepath.Base(f), kib)
		}
	}
	shims, n := int64(0), 0
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, c := range procs {
		b, err := os.ReadFile(c)
		if err != nil || !strings.Contains(string(b), "containerd-shim-runc-v2") || !strings.Contains(string(b), clusterEnv["CTR_ADDRESS"]) {
			continue
		}
		if kib, ok := rss(filepath.Base(filepath.Dir(c))); ok {
			shims += kib
			n++
		}
	}
	add(fmt.Sprintf("containerd shims (%d)", n), shims)
	// Pods still terminating (a rollout's last) are left out.
	out := mustKubectl(t, "", "get", "pods", "-A", "-o", `jsonpath={range .items[*]}{.metadata.uid}{" "}{.metadata.namespace}/{.metadata.name}{" "}{.metadata.deletionTimestamp}{"\n"}{end}`)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		uid, name := f[0], f[1]
		if kib, ok := podRSS(uid); ok {
			add("pod "+name, kib)
		}
	}
	s := strings.Join(lines, "\n  ") + fmt.Sprintf("\n  %8.1f MiB  in all", float64(total)/1024)
	t.Logf("the cluster's memory (VmRSS):\n  %s", s)
	note("the cluster's memory (VmRSS), after the helm checks:\n    " + strings.ReplaceAll(s, "\n  ", "\n    "))
	if total == 0 {
		t.Errorf("no process of the cluster found to measure")
	}
}

// rss returns a process's VmRSS in KiB.
func rss(pid string) (int64, bool) {
	f, err := os.Open(filepath.Join("/proc", pid, "status"))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// podRSS sums the VmRSS of the processes in a pod's cgroups (kubelet's
// cgroupfs driver names them pod<uid>, under the memory controller on
// cgroup v1 or the unified hierarchy on v2).
func podRSS(uid string) (int64, bool) {
	var dirs []string
	for _, root := range []string{"/sys/fs/cgroup/memory/kubepods", "/sys/fs/cgroup/kubepods"} {
		for _, pattern := range []string{"pod" + uid, "*/pod" + uid} {
			m, _ := filepath.Glob(filepath.Join(root, pattern))
			dirs = append(dirs, m...)
		}
	}
	if len(dirs) == 0 {
		return 0, false
	}
	seen := map[string]bool{}
	var total int64
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() || e.Name() != "cgroup.procs" {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			for _, pid := range strings.Fields(string(b)) {
				if seen[pid] {
					continue
				}
				seen[pid] = true
				if kib, ok := rss(pid); ok {
					total += kib
				}
			}
			return nil
		})
	}
	return total, true
}
