package helm

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// TestReleaseInstallsFromAnOCIRegistry runs `make release
// VERSION=v0.0.0-test` into a temporary folder and checks what it wrote
// (SHA256SUMS, the image's digest in its tarball, layout and chart, the
// SBOM, the plugin archives against the krew manifest), then runs the
// commands docs/releases.md gives a maintainer and a user against a
// registry served in this process on 127.0.0.1: the image pushed from its
// OCI layout (what crane push does), `helm push` of the chart, and `helm
// install oci://` of it into a real API server, the Deployments pinned to
// the image's digest.
func TestReleaseInstallsFromAnOCIRegistry(t *testing.T) {
	const version, chartVersion = "v0.0.0-test", "0.0.0-test"
	dist := t.TempDir()
	cmd := exec.Command("make", "release", "VERSION="+version, "DIST="+dist)
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make release VERSION=%s: %v\n%s", version, err, out)
	}
	file := func(n string) string { return filepath.Join(dist, n) }

	// Every file is in SHA256SUMS, as sha256sum -c checks it.
	sums := readSums(t, file("SHA256SUMS"))
	var files []string
	if err := filepath.WalkDir(dist, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() != "SHA256SUMS" {
			rel, _ := filepath.Rel(dist, p)
			files = append(files, rel)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(files) != len(sums) {
		t.Errorf("SHA256SUMS lists %d files, dist holds %d: %v", len(sums), len(files), files)
	}
	for _, f := range files {
		if got := sha256File(t, file(f)); sums[f] != got {
			t.Errorf("SHA256SUMS: %s is %q, the file's sha256 is %s", f, sums[f], got)
		}
	}
	wantFiles := []string{"apitoken-operator-" + chartVersion + ".tgz", "apitoken-operator-image_" + version + "_linux_amd64.tar",
		"apitoken-operator-image_" + version + ".digest", "apitoken-operator-image_" + version + ".spdx.json", "apitoken.yaml",
		"apitoken-operator-image_" + version + ".oci/index.json"}
	for _, p := range []string{"linux_amd64", "linux_arm64", "darwin_amd64", "darwin_arm64", "windows_amd64"} {
		wantFiles = append(wantFiles, "kubectl-apitoken_"+version+"_"+p+".tar.gz")
	}
	for _, f := range wantFiles {
		if _, ok := sums[f]; !ok {
			t.Errorf("the release lacks %s", f)
		}
	}

	// One digest: the digest file's, the OCI layout's, the tarball's.
	raw, err := os.ReadFile(file("apitoken-operator-image_" + version + ".digest"))
	if err != nil {
		t.Fatal(err)
	}
	digest := strings.TrimSpace(string(raw))
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(digest) {
		t.Fatalf("the digest file holds %q", digest)
	}
	lp, err := layout.FromPath(file("apitoken-operator-image_" + version + ".oci"))
	if err != nil {
		t.Fatal(err)
	}
	ix, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := ix.IndexManifest()
	if err != nil || len(im.Manifests) != 1 || im.Manifests[0].Digest.String() != digest {
		t.Fatalf("the OCI layout's image is not %s: %v %+v", digest, err, im)
	}
	img, err := ix.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	tagged := "ghcr.io/apitoken-operator/apitoken-operator:" + version
	tag, _ := name.NewTag(tagged)
	fromTar, err := tarball.ImageFromPath(file("apitoken-operator-image_"+version+"_linux_amd64.tar"), &tag)
	if err != nil {
		t.Fatalf("the image tarball holds no %s: %v", tagged, err)
	}
	// docker load keeps the image's config and layers (its image ID), not
	// the layout's manifest: only a push of the layout keeps the digest.
	tarID, err := fromTar.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if id, err := img.ConfigName(); err != nil || id != tarID {
		t.Errorf("the image tarball's image ID is %s, the layout's %v (%v)", tarID, id, err)
	}

	// The SBOM names the image by its digest and the modules of go.mod.
	var sbom struct {
		SPDXVersion string `json:"spdxVersion"`
		Packages    []struct {
			Name        string `json:"name"`
			SPDXID      string `json:"SPDXID"`
			VersionInfo string `json:"versionInfo"`
			Checksums   []struct {
				Value string `json:"checksumValue"`
			} `json:"checksums"`
		} `json:"packages"`
		Relationships []struct {
			Type string `json:"relationshipType"`
		} `json:"relationships"`
	}
	raw, err = os.ReadFile(file("apitoken-operator-image_" + version + ".spdx.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &sbom); err != nil || sbom.SPDXVersion != "SPDX-2.3" || len(sbom.Packages) < 50 || len(sbom.Relationships) != len(sbom.Packages) {
		t.Fatalf("the SBOM: %v, %s with %d packages and %d relationships", err, sbom.SPDXVersion, len(sbom.Packages), len(sbom.Relationships))
	}
	pkgs := map[string]string{}
	for _, p := range sbom.Packages {
		pkgs[p.Name] = p.VersionInfo
	}
	if len(sbom.Packages[0].Checksums) != 1 || "sha256:"+sbom.Packages[0].Checksums[0].Value != digest {
		t.Errorf("the SBOM's first package does not name the image %s: %+v", digest, sbom.Packages[0])
	}
	gomod, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, mod := range []string{"sigs.k8s.io/controller-runtime", "k8s.io/client-go", "google.golang.org/grpc"} {
		m := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(mod) + ` (v\S+)`).FindStringSubmatch(string(gomod))
		if m == nil || pkgs[mod] != m[1] {
			t.Errorf("the SBOM: %s %q, go.mod requires %v", mod, pkgs[mod], m)
		}
	}
	if pkgs["github.com/apitoken-operator/apitoken-operator"] != version {
		t.Errorf("the SBOM's main module: %q", pkgs["github.com/apitoken-operator/apitoken-operator"])
	}

	// The krew manifest's sha256 are the archives', each holding the
	// plugin and LICENSE.
	raw, err = os.ReadFile(file("apitoken.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var krew struct {
		Spec struct {
			Version   string `json:"version"`
			Platforms []struct {
				URI    string `json:"uri"`
				Sha256 string `json:"sha256"`
				Bin    string `json:"bin"`
			} `json:"platforms"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &krew); err != nil || krew.Spec.Version != version || len(krew.Spec.Platforms) != 5 {
		t.Fatalf("the krew manifest: %v %+v", err, krew)
	}
	for _, p := range krew.Spec.Platforms {
		archive := p.URI[strings.LastIndex(p.URI, "/")+1:]
		if sums[archive] != p.Sha256 || !strings.HasSuffix(p.URI, "/releases/download/"+version+"/"+archive) {
			t.Errorf("krew: %s sha256 %s, SHA256SUMS says %s", p.URI, p.Sha256, sums[archive])
		}
		if got := archiveNames(t, file(archive)); strings.Join(got, ",") != "LICENSE,"+p.Bin {
			t.Errorf("%s holds %v, want %s and LICENSE", archive, got, p.Bin)
		}
	}

	// A registry on 127.0.0.1, served by this process.
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")

	// What a maintainer and a user run (docs/releases.md), against it.
	commands := releaseCommands(t)
	run := func(name string) string {
		t.Helper()
		for _, c := range commands {
			if strings.HasPrefix(c, name+" ") {
				return c
			}
		}
		t.Fatalf("docs/releases.md gives no %s command", name)
		return ""
	}
	// crane push of the layout, with the library crane is built on.
	if !strings.Contains(run("crane push"), "dist/apitoken-operator-image_${VERSION}.oci") {
		t.Errorf("docs/releases.md's crane push does not push the OCI layout make release writes: %s", run("crane push"))
	}
	pushImage(t, reg.URL, "apitoken-operator/apitoken-operator", version, img)
	subst := func(c string) []string {
		c = strings.NewReplacer("${VERSION#v}", chartVersion, "$CHART_VERSION", chartVersion, "${VERSION}", version, "$VERSION", version, "--version 0.1.0", "--version "+chartVersion,
			"dist/", dist+"/", "oci://ghcr.io/apitoken-operator", "oci://"+host).Replace(c)
		return strings.Fields(c)
	}
	push := subst(run("helm push"))
	helm(t, append(push[1:], "--plain-http")...)
	chartRef := "oci://" + host + "/charts/apitoken-operator"
	show := helm(t, "show", "chart", chartRef, "--version", chartVersion, "--plain-http")
	if !strings.Contains(show, "version: "+chartVersion) || !strings.Contains(show, "appVersion: "+version) {
		t.Errorf("helm show chart: %s", show)
	}

	kc := cluster(t)
	const ns = "apitoken-release"
	install := subst(run("helm install"))
	if !contains(install, chartRef) || !contains(install, "--version") || !contains(install, chartVersion) {
		t.Fatalf("docs/releases.md's helm install does not install the chart by version from the registry: %v", install)
	}
	if i := indexOf(install, "-n"); i < 0 || install[i+1] != namespace || !contains(install, "--create-namespace") {
		t.Fatalf("docs/releases.md's helm install names no namespace %s to create: %v", namespace, install)
	} else {
		install[i+1] = ns // a namespace of its own on the suite's API server
	}
	install = append(install[1:], "--plain-http", "--kubeconfig", kc, "--values", filepath.Join(chartDir, "ci", "self-managed-certs-values.yaml"))
	if out := helm(t, install...); !strings.Contains(out, "STATUS: deployed") {
		t.Fatalf("helm install: %s", out)
	}
	t.Cleanup(func() {
		helm(t, "uninstall", release, "--kubeconfig", kc, "--namespace", ns)
		deleteCRD(t, kc)
	})
	want := tagged + "@" + digest
	for _, d := range []string{"apitoken-operator", "apitoken-auth"} {
		dep := parse(t, kubectl(t, "", "--kubeconfig", kc, "-n", ns, "get", "deployment", d, "-o", "yaml"))[0]
		containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
		if got := containers[0].(map[string]any)["image"]; got != want {
			t.Errorf("Deployment %s runs %v, want the released image pinned: %s", d, got, want)
		}
	}
	// The digest the chart pins is the one the registry serves for the tag.
	req, _ := http.NewRequest(http.MethodHead, reg.URL+"/v2/apitoken-operator/apitoken-operator/manifests/"+version, nil)
	req.Header.Set("Accept", string(im.Manifests[0].MediaType))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if got := resp.Header.Get("Docker-Content-Digest"); got != digest {
		t.Errorf("the registry serves %s:%s as %q, the chart pins %s", host+"/apitoken-operator/apitoken-operator", version, got, digest)
	}
}

// pushImage pushes img as repo:tag to the registry at base, as crane push
// does (the distribution API: each blob, then the manifest). The
// go-containerregistry client package is not used: it pulls in Docker's
// credential helpers, which this module does not depend on.
func pushImage(t *testing.T, base, repo, tag string, img v1.Image) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	type blob struct {
		digest v1.Hash
		open   func() (io.ReadCloser, error)
	}
	var blobs []blob
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, blob{d, l.Compressed})
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfgDigest, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	blobs = append(blobs, blob{cfgDigest, func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(string(cfg))), nil }})
	do := func(method, url, contentType string, body io.Reader, want int) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, url, body)
		if err != nil {
			t.Fatal(err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %s, want %d", method, url, resp.Status, want)
		}
		return resp
	}
	for _, b := range blobs {
		loc := do(http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", "", nil, http.StatusAccepted).Header.Get("Location")
		if !strings.HasPrefix(loc, "http") {
			loc = base + loc
		}
		rc, err := b.open()
		if err != nil {
			t.Fatal(err)
		}
		sep := "?"
		if strings.Contains(loc, "?") {
			sep = "&"
		}
		do(http.MethodPut, fmt.Sprintf("%s%sdigest=%s", loc, sep, b.digest), "application/octet-stream", rc, http.StatusCreated)
		_ = rc.Close()
	}
	manifest, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	do(http.MethodPut, base+"/v2/"+repo+"/manifests/"+tag, string(mt), strings.NewReader(string(manifest)), http.StatusCreated)
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

// releaseCommands returns the command lines of docs/releases.md's shell
// blocks (comments dropped).
func releaseCommands(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "releases.md"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	in := false
	for _, l := range strings.Split(string(data), "\n") {
		switch {
		case l == "```sh":
			in = true
		case l == "```":
			in = false
		case in:
			if i := strings.Index(l, "  #"); i >= 0 {
				l = l[:i]
			}
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				out = append(out, l)
			}
		}
	}
	return out
}

// readSums reads a SHA256SUMS file: name to hex sha256.
func readSums(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 {
			t.Fatalf("SHA256SUMS: line %q", sc.Text())
		}
		out[name] = sum
	}
	return out
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// archiveNames returns the sorted names of a .tar.gz's entries.
func archiveNames(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	sort.Strings(names)
	return names
}
