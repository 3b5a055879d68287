// The release's files after the image: the chart, the plugin's archives,
// the krew manifest, SHA256SUMS and the SBOM.

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
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
	"time"
)

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
