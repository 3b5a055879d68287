// Command release writes a release of apitoken-operator into a folder
// (`make release VERSION=v0.1.0` writes dist/), from the committed files:
//
//   - the operator's image (hack/image): a tarball for docker load and
//     crane push, an OCI image layout, and its digest;
//   - the chart package (helm package), its version and appVersion set from
//     VERSION and its image.tag and image.digest filled, so that the chart
//     pins the image it was released with;
//   - the kubectl plugin's archives (kubectl-apitoken_<version>_<os>_<arch>.tar.gz,
//     the binary and LICENSE) and the krew manifest (plugins/krew/apitoken.yaml
//     rendered with their sha256);
//   - an SPDX 2.3 SBOM of the image: the Go modules built into the
//     operator's binary, read from its build information;
//   - SHA256SUMS of every file (sha256sum -c reads it).
//
// The same commit and VERSION give the same files (the build time is the
// commit's, SOURCE_DATE_EPOCH).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// semver is a release version: vMAJOR.MINOR.PATCH with an optional
// pre-release (v0.0.0-test).
var semver = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$`)

// Platforms are the kubectl plugin's, as the krew manifest lists them.
var Platforms = []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64", "windows/amd64"}

type options struct {
	version, dist, repository, arch, root string
	platforms                             []string
}

func main() {
	var o options
	var platforms string
	flag.StringVar(&o.version, "version", "", "the release, vMAJOR.MINOR.PATCH[-PRE] (the git tag); the chart's version is it without the v")
	flag.StringVar(&o.dist, "dist", "dist", "the folder to write (emptied first)")
	flag.StringVar(&o.repository, "image-repository", "ghcr.io/apitoken-operator/apitoken-operator", "the image's repository: the chart's image.repository")
	flag.StringVar(&o.arch, "arch", "amd64", "the image's architecture")
	flag.StringVar(&platforms, "platforms", strings.Join(Platforms, ","), "the kubectl plugin's os/arch pairs")
	flag.Parse()
	o.platforms = strings.Split(platforms, ",")
	var err error
	if o.root, err = os.Getwd(); err == nil {
		err = release(o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func release(o options) error {
	if !semver.MatchString(o.version) {
		return fmt.Errorf("VERSION %q is not vMAJOR.MINOR.PATCH[-PRE] (e.g. make release VERSION=v0.1.0)", o.version)
	}
	rev, epoch, created, err := source(o)
	if err != nil {
		return err
	}
	env := []string{"SOURCE_DATE_EPOCH=" + epoch, "CGO_ENABLED=0"}

	dist, err := filepath.Abs(o.dist)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dist); err != nil {
		return err
	}
	work := filepath.Join(dist, ".work")
	if err := os.MkdirAll(work, 0o755); err != nil { //nolint:gosec // the release folder: published, world-readable
		return err
	}
	defer func() { _ = os.RemoveAll(work) }()

	digest, err := image(o, env, work, dist, rev, created)
	if err != nil {
		return err
	}

	// The chart, pinned to that image.
	chart, err := packageChart(o, work, dist, digest)
	if err != nil {
		return err
	}
	fmt.Println("chart", chart)

	// The kubectl plugin and its krew manifest.
	sums := map[string]string{}
	for _, p := range o.platforms {
		name, sum, err := pluginArchive(o, env, work, dist, p, created)
		if err != nil {
			return err
		}
		sums[name] = sum
	}
	if err := krewManifest(o, dist, sums); err != nil {
		return err
	}

	if err := os.RemoveAll(work); err != nil {
		return err
	}
	return writeSums(dist)
}

// publish writes a release file: world-readable, as it is published.
func publish(path string, data []byte) error {
	return os.WriteFile(path, data, 0o644) //nolint:gosec // published: world-readable
}

// output runs a command in dir with env added and returns its trimmed stdout.
func output(dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...) //nolint:gosec // the release's own steps (go, git, helm)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// layoutDigest returns the digest of the one image of an OCI layout.
func layoutDigest(dir string) (string, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return "", err
	}
	ix, err := p.ImageIndex()
	if err != nil {
		return "", err
	}
	m, err := ix.IndexManifest()
	if err != nil {
		return "", err
	}
	if len(m.Manifests) != 1 {
		return "", fmt.Errorf("OCI layout %s holds %d images, want 1", dir, len(m.Manifests))
	}
	return m.Manifests[0].Digest.String(), nil
}

// packageChart copies the chart, sets its version, appVersion, image.tag
// and image.digest, and runs helm package into dist.
func packageChart(o options, work, dist, digest string) (string, error) {
	src := filepath.Join(o.root, "charts", "apitoken-operator")
	dst := filepath.Join(work, "chart", "apitoken-operator")
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil { //nolint:gosec // a work folder in the release folder
		return "", err
	}
	if _, err := output(o.root, nil, "cp", "-R", src, dst); err != nil {
		return "", err
	}
	edits := []struct{ file, pattern, with string }{
		{"Chart.yaml", `(?m)^version: .*$`, "version: " + strings.TrimPrefix(o.version, "v")},
		{"Chart.yaml", `(?m)^appVersion: .*$`, "appVersion: " + strconv.Quote(o.version)},
		{"values.yaml", `(?m)^  repository: .*$`, "  repository: " + o.repository},
		{"values.yaml", `(?m)^  tag: ""$`, "  tag: " + strconv.Quote(o.version)},
		{"values.yaml", `(?m)^  digest: ""$`, "  digest: " + strconv.Quote(digest)},
	}
	for _, e := range edits {
		path := filepath.Join(dst, e.file)
		data, err := os.ReadFile(path) //nolint:gosec // the chart's copy in the work folder
		if err != nil {
			return "", err
		}
		re := regexp.MustCompile(e.pattern)
		if n := len(re.FindAllIndex(data, -1)); n != 1 {
			return "", fmt.Errorf("charts/apitoken-operator/%s: %d lines match %s, want 1", e.file, n, e.pattern)
		}
		if err := publish(path, re.ReplaceAll(data, []byte(e.with))); err != nil {
			return "", err
		}
	}
	helm, err := output(o.root, nil, "hack/tools.sh", "helm")
	if err != nil {
		return "", err
	}
	home := filepath.Join(work, "helm")
	helmEnv := []string{"HELM_CACHE_HOME=" + home + "/cache", "HELM_CONFIG_HOME=" + home + "/config", "HELM_DATA_HOME=" + home + "/data"}
	if _, err := output(o.root, helmEnv, helm, "lint", "--strict", dst); err != nil {
		return "", err
	}
	if _, err := output(o.root, helmEnv, helm, "package", dst, "--destination", dist); err != nil {
		return "", err
	}
	return filepath.Join(dist, "apitoken-operator-"+strings.TrimPrefix(o.version, "v")+".tgz"), nil
}

// source reads the commit the release is made of: its ID and time
// (SOURCE_DATE_EPOCH), warning when the tree differs from it.
func source(o options) (rev, epoch string, created time.Time, err error) {
	rev, err = output(o.root, nil, "git", "rev-parse", "HEAD")
	if err != nil {
		return "", "", time.Time{}, err
	}
	epoch, err = output(o.root, nil, "git", "log", "-1", "--format=%ct")
	if err != nil {
		return "", "", time.Time{}, err
	}
	if dirty, _ := output(o.root, nil, "git", "status", "--porcelain", "--untracked-files=no"); dirty != "" {
		fmt.Fprintln(os.Stderr, "release: warning: the tree has uncommitted changes; this release is not what commit "+rev+" holds")
	}
	sec, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return "", "", time.Time{}, err
	}
	return rev, epoch, time.Unix(sec, 0).UTC(), nil
}

// image builds the operator's image (tarball and OCI layout), its digest
// file and its SBOM into dist.
func image(o options, env []string, work, dist, rev string, created time.Time) (digest string, err error) {
	// The image.
	tag := o.repository + ":" + o.version
	manager := filepath.Join(work, "manager-linux-"+o.arch)
	if _, err := output(o.root, append(env, "GOOS=linux", "GOARCH="+o.arch), "go", "build", "-trimpath", "-ldflags=-s -w", "-o", manager, "./cmd"); err != nil {
		return "", err
	}
	imageBase := "apitoken-operator-image_" + o.version
	ociDir := filepath.Join(dist, imageBase+".oci")
	if _, err := output(o.root, env, "go", "run", "./hack/image", "-binary", manager, "-tag", tag,
		"-o", filepath.Join(dist, imageBase+"_linux_"+o.arch+".tar"), "-oci-layout", ociDir, "-version", o.version, "-revision", rev); err != nil {
		return "", err
	}
	digest, err = layoutDigest(ociDir)
	if err != nil {
		return "", err
	}
	if err := publish(filepath.Join(dist, imageBase+".digest"), []byte(digest+"\n")); err != nil {
		return "", err
	}
	fmt.Printf("image %s@%s\n", tag, digest)

	// Its SBOM.
	sbom, err := spdx(manager, o, tag, digest, created)
	if err != nil {
		return "", err
	}
	if err := publish(filepath.Join(dist, imageBase+".spdx.json"), sbom); err != nil {
		return "", err
	}

	return digest, nil
}
