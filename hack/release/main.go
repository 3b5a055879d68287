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
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
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
	rev, err := output(o.root, nil, "git", "rev-parse", "HEAD")
	if err != nil {
		return err
	}
	epoch, err := output(o.root, nil, "git", "log", "-1", "--format=%ct")
	if err != nil {
		return err
	}
	if dirty, _ := output(o.root, nil, "git", "status", "--porcelain", "--untracked-files=no"); dirty != "" {
		fmt.Fprintln(os.Stderr, "release: warning: the tree has uncommitted changes; this release is not what commit "+rev+" holds")
	}
	sec, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return err
	}
	created := time.Unix(sec, 0).UTC()
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

	// The image.
	tag := o.repository + ":" + o.version
	manager := filepath.Join(work, "manager-linux-"+o.arch)
	if _, err := output(o.root, append(env, "GOOS=linux", "GOARCH="+o.arch), "go", "build", "-trimpath", "-ldflags=-s -w", "-o", manager, "./cmd"); err != nil {
		return err
	}
	imageBase := "apitoken-operator-image_" + o.version
	ociDir := filepath.Join(dist, imageBase+".oci")
	if _, err := output(o.root, env, "go", "run", "./hack/image", "-binary", manager, "-tag", tag,
		"-o", filepath.Join(dist, imageBase+"_linux_"+o.arch+".tar"), "-oci-layout", ociDir, "-version", o.version, "-revision", rev); err != nil {
		return err
	}
	digest, err := layoutDigest(ociDir)
	if err != nil {
		return err
	}
	if err := publish(filepath.Join(dist, imageBase+".digest"), []byte(digest+"\n")); err != nil {
		return err
	}
	fmt.Printf("image %s@%s\n", tag, digest)

	// Its SBOM.
	sbom, err := spdx(manager, o, tag, digest, created)
	if err != nil {
		return err
	}
	if err := publish(filepath.Join(dist, imageBase+".spdx.json"), sbom); err != nil {
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

// pluginArchive builds kubectl-apitoken for platform (os/arch) and writes
// its archive, returning the archive's name and sha256.
func pluginArchive(o options, env []string, work, dist, platform string, created time.Time) (string, string, error) {
	goos, goarch, ok := strings.Cut(platform, "/")
	if !ok {
		return "", "", fmt.Errorf("platform %q is not os/arch", platform)
	}
	bin := "kubectl-apitoken"
	if goos == "windows" {
		bin += ".exe"
	}
	out := filepath.Join(work, goos+"-"+goarch, bin)
	if _, err := output(o.root, append(env, "GOOS="+goos, "GOARCH="+goarch), "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./cmd/kubectl-apitoken"); err != nil {
		return "", "", err
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return "", "", err
	}
	zw.ModTime = created
	tw := tar.NewWriter(zw)
	for _, f := range []struct{ name, path string }{{bin, out}, {"LICENSE", filepath.Join(o.root, "LICENSE")}} {
		data, err := os.ReadFile(f.path)
		if err != nil {
			return "", "", err
		}
		mode := int64(0o644)
		if f.name == bin {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: mode, Size: int64(len(data)), ModTime: created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return "", "", err
		}
		if _, err := tw.Write(data); err != nil {
			return "", "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", "", err
	}
	if err := zw.Close(); err != nil {
		return "", "", err
	}
	name := fmt.Sprintf("kubectl-apitoken_%s_%s_%s.tar.gz", o.version, goos, goarch)
	if err := publish(filepath.Join(dist, name), buf.Bytes()); err != nil {
		return "", "", err
	}
	sum := sha256.Sum256(buf.Bytes())
	return name, hex.EncodeToString(sum[:]), nil
}

// krewManifest renders plugins/krew/apitoken.yaml as krew-release-bot does
// at the tag, with each archive's sha256, into dist/apitoken.yaml.
func krewManifest(o options, dist string, sums map[string]string) error {
	src, err := os.ReadFile(filepath.Join(o.root, "plugins", "krew", "apitoken.yaml"))
	if err != nil {
		return err
	}
	var missing []string
	tmpl, err := template.New("krew").Funcs(template.FuncMap{
		"addURIAndSha": func(uri, tag string) string {
			uri = strings.ReplaceAll(uri, "{{ .TagName }}", tag)
			sum, ok := sums[uri[strings.LastIndex(uri, "/")+1:]]
			if !ok {
				missing = append(missing, uri)
			}
			return "uri: " + uri + "\n    sha256: " + sum
		},
	}).Parse(string(src))
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, map[string]string{"TagName": o.version}); err != nil {
		return err
	}
	if len(missing) > 0 {
		return fmt.Errorf("the krew manifest names archives this release did not build: %s", strings.Join(missing, ", "))
	}
	return publish(filepath.Join(dist, "apitoken.yaml"), out.Bytes())
}

// writeSums writes dist/SHA256SUMS: every regular file of dist and of the
// OCI layout below it, sorted by name, as sha256sum prints them.
func writeSums(dist string) error {
	var names []string
	err := filepath.WalkDir(dist, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dist, path)
		if err == nil && rel != "SHA256SUMS" {
			names = append(names, filepath.ToSlash(rel))
		}
		return err
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		f, err := os.Open(filepath.Join(dist, n)) //nolint:gosec // a file this release wrote
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		_ = f.Close()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%x  %s\n", h.Sum(nil), n)
	}
	return publish(filepath.Join(dist, "SHA256SUMS"), []byte(b.String()))
}

// SPDX 2.3 JSON, the fields written here.
type spdxDocument struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	CreationInfo      spdxCreationInfo   `json:"creationInfo"`
	DocumentDescribes []string           `json:"documentDescribes"`
	Packages          []spdxPackage      `json:"packages"`
	Relationships     []spdxRelationship `json:"relationships"`
}

type spdxCreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type spdxPackage struct {
	Name             string            `json:"name"`
	SPDXID           string            `json:"SPDXID"`
	VersionInfo      string            `json:"versionInfo,omitempty"`
	DownloadLocation string            `json:"downloadLocation"`
	FilesAnalyzed    bool              `json:"filesAnalyzed"`
	PrimaryPurpose   string            `json:"primaryPackagePurpose,omitempty"`
	Checksums        []spdxChecksum    `json:"checksums,omitempty"`
	ExternalRefs     []spdxExternalRef `json:"externalRefs,omitempty"`
}

type spdxChecksum struct {
	Algorithm string `json:"algorithm"`
	Value     string `json:"checksumValue"`
}

type spdxExternalRef struct {
	Category string `json:"referenceCategory"`
	Type     string `json:"referenceType"`
	Locator  string `json:"referenceLocator"`
}

type spdxRelationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

// spdx returns the SBOM of the image tag@digest: the image, the operator's
// main module and every module its binary was built with (with the Go
// toolchain), read from the binary's build information.
func spdx(binary string, o options, tag, digest string, created time.Time) ([]byte, error) {
	bi, err := buildinfo.ReadFile(binary)
	if err != nil {
		return nil, fmt.Errorf("reading the build information of %s: %w", binary, err)
	}
	if bi.Main.Path == "" {
		return nil, errors.New("the operator's binary records no main module")
	}
	hexDigest := strings.TrimPrefix(digest, "sha256:")
	repoName := o.repository[strings.LastIndex(o.repository, "/")+1:]
	image := spdxPackage{
		Name: o.repository, SPDXID: "SPDXRef-Image", VersionInfo: o.version, DownloadLocation: "NOASSERTION",
		PrimaryPurpose: "CONTAINER",
		Checksums:      []spdxChecksum{{Algorithm: "SHA256", Value: hexDigest}},
		ExternalRefs: []spdxExternalRef{{Category: "PACKAGE-MANAGER", Type: "purl",
			Locator: "pkg:oci/" + repoName + "@sha256%3A" + hexDigest + "?arch=" + o.arch + "&repository_url=" + o.repository + "&tag=" + o.version}},
	}
	doc := spdxDocument{
		SPDXVersion: "SPDX-2.3", DataLicense: "CC0-1.0", SPDXID: "SPDXRef-DOCUMENT",
		Name:              tag,
		DocumentNamespace: "https://github.com/apitoken-operator/apitoken-operator/releases/" + o.version + "/sbom/" + hexDigest,
		CreationInfo:      spdxCreationInfo{Created: created.Format(time.RFC3339), Creators: []string{"Tool: apitoken-operator-hack-release"}},
		DocumentDescribes: []string{image.SPDXID},
		Packages:          []spdxPackage{image},
	}
	goPkg := func(id, path, version string) spdxPackage {
		p := spdxPackage{Name: path, SPDXID: id, VersionInfo: version, DownloadLocation: "NOASSERTION"}
		if version != "" && version != "(devel)" {
			p.ExternalRefs = []spdxExternalRef{{Category: "PACKAGE-MANAGER", Type: "purl", Locator: "pkg:golang/" + path + "@" + version}}
		}
		return p
	}
	mod := goPkg("SPDXRef-Module-main", bi.Main.Path, o.version)
	mod.PrimaryPurpose = "APPLICATION"
	toolchain := goPkg("SPDXRef-Go", "stdlib", bi.GoVersion)
	doc.Packages = append(doc.Packages, mod, toolchain)
	doc.Relationships = append(doc.Relationships,
		spdxRelationship{"SPDXRef-DOCUMENT", "DESCRIBES", image.SPDXID},
		spdxRelationship{image.SPDXID, "CONTAINS", mod.SPDXID},
		spdxRelationship{mod.SPDXID, "DEPENDS_ON", toolchain.SPDXID})
	for i, d := range bi.Deps {
		m := d
		if d.Replace != nil {
			m = d.Replace
		}
		p := goPkg(fmt.Sprintf("SPDXRef-Module-%d", i+1), m.Path, m.Version)
		doc.Packages = append(doc.Packages, p)
		doc.Relationships = append(doc.Relationships, spdxRelationship{mod.SPDXID, "DEPENDS_ON", p.SPDXID})
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}
