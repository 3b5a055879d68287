package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// TestImageRunsTheOperator builds the operator as make image does (a
// static binary, then the image), reads the tarball back as docker load
// would, unpacks its layers into a directory and runs the entrypoint from
// there with --help.
func TestImageRunsTheOperator(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "manager")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./cmd")
	build.Dir = testenv.RepoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd: %v\n%s", err, out)
	}

	tarPath, ociDir := filepath.Join(dir, "image.tar"), filepath.Join(dir, "oci")
	var stdout bytes.Buffer
	if err := run([]string{"-binary", bin, "-tag", "registry.example.com/apitoken-operator:v9.9.9", "-o", tarPath,
		"-oci-layout", ociDir, "-created", "2026-01-02T03:04:05Z", "-version", "v9.9.9", "-revision", "0123abc"}, &stdout); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "docker load -i "+tarPath) {
		t.Errorf("output: %s", stdout.String())
	}

	tag, err := name.NewTag("registry.example.com/apitoken-operator:v9.9.9")
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(tarPath, &tag)
	if err != nil {
		t.Fatalf("reading the tarball back: %v", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Config.Entrypoint; len(got) != 1 || got[0] != "/manager" {
		t.Errorf("entrypoint %v", got)
	}
	if cfg.Config.User != "65532:65532" || cfg.OS != "linux" || cfg.Architecture == "" {
		t.Errorf("user %q, platform %s/%s", cfg.Config.User, cfg.OS, cfg.Architecture)
	}
	for k, v := range map[string]string{
		"org.opencontainers.image.title":    "apitoken-operator",
		"org.opencontainers.image.version":  "v9.9.9",
		"org.opencontainers.image.revision": "0123abc",
		"org.opencontainers.image.created":  "2026-01-02T03:04:05Z",
		"org.opencontainers.image.source":   "https://github.com/apitoken-operator/apitoken-operator",
	} {
		if cfg.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, cfg.Config.Labels[k], v)
		}
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers (%v), want one", len(layers), err)
	}

	t.Log("unpacking the layer")
	root := filepath.Join(dir, "rootfs")
	files := unpack(t, img, root)
	if h := files["manager"]; h == nil || h.Mode != 0o755 || h.Uid != 0 {
		t.Errorf("/manager: %+v", h)
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc", "passwd"))
	if err != nil || !strings.Contains(string(passwd), "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd: %q %v", passwd, err)
	}

	t.Log("running the entrypoint from the unpacked filesystem with --help")
	cmd := exec.Command(filepath.Join(root, "manager"), "--help")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("/manager --help: %v\n%s", err, out)
	}
	for _, flag := range []string{"-leader-elect", "-auth-bind-address", "-webhook-cert-dir", "-salt-secret", "-report-usage-to"} {
		if !strings.Contains(string(out), flag) {
			t.Errorf("/manager --help does not print %s:\n%s", flag, out)
		}
	}

	t.Log("the OCI layout holds the same image")
	index, err := layout.ImageIndexFromPath(ociDir)
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := index.IndexManifest()
	if err != nil || len(manifest.Manifests) != 1 {
		t.Fatalf("OCI layout index: %v %v", manifest, err)
	}
	if manifest.Manifests[0].MediaType != types.OCIManifestSchema1 || manifest.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != tag.String() {
		t.Errorf("OCI layout index entry %+v", manifest.Manifests[0])
	}
	ociImg, err := index.Image(manifest.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	// A docker load tarball keeps the config and the layers (its manifest
	// is Docker's), so the config names the image in both.
	if got, want := configName(t, ociImg), configName(t, img); got != want {
		t.Errorf("OCI layout image config %s, tarball's %s", got, want)
	}
	ociLayers, err := ociImg.Layers()
	if err != nil || len(ociLayers) != 1 {
		t.Fatalf("OCI layout: %d layers (%v)", len(ociLayers), err)
	}
	if mt, _ := ociLayers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %s", mt)
	}
	want, err := ociImg.Digest()
	if err != nil {
		t.Fatal(err)
	}

	t.Log("the same inputs give the same image")
	again, err := Build(Options{Binary: bin, Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Version: "v9.9.9", Revision: "0123abc",
		Source: "https://github.com/apitoken-operator/apitoken-operator"})
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := again.Digest(); d != want {
		t.Errorf("rebuilt image %s, first %s", d, want)
	}
}

func configName(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// unpack writes the image's filesystem into dir and returns its headers by path.
func unpack(t *testing.T, img v1.Image, dir string) map[string]*tar.Header {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	headers := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return headers
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		headers[strings.TrimSuffix(h.Name, "/")] = h
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected entry %s (type %c)", h.Name, h.Typeflag)
		}
	}
}

// TestBuildRefusesWhatCannotRun: a binary that is not a static Linux
// executable is refused with the reason.
func TestBuildRefusesWhatCannotRun(t *testing.T) {
	script := filepath.Join(t.TempDir(), "manager")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(Options{Binary: script}); err == nil || !strings.Contains(err.Error(), "not an ELF executable") {
		t.Errorf("a shell script: %v", err)
	}
	if err := run([]string{"-binary", script}, io.Discard); err == nil || !strings.Contains(err.Error(), "-o and -oci-layout") {
		t.Errorf("no output: %v", err)
	}
}
