// Command image builds the operator's container image from its static
// binary, without a container daemon and without pulling a base image:
// one layer holding the binary as /manager, /etc/passwd and /etc/group
// naming the non-root user 65532 (as distroless's nonroot), and /tmp; the
// entrypoint /manager, user 65532:65532 and the OCI labels. It writes a
// tarball that `docker load`, `podman load` and `crane push` accept, an
// OCI image layout, or both. The same inputs give the same image digest.
//
//	CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o bin/manager-linux-amd64 ./cmd
//	go run ./hack/image -binary bin/manager-linux-amd64 -tag apitoken-operator:dev -o bin/apitoken-operator-image.tar
//
// `make image` runs both.
package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Options say what goes into the image.
type Options struct {
	// Binary is the path of a static Linux executable (CGO_ENABLED=0).
	Binary string
	// Created is the time recorded in the image and its files.
	Created time.Time
	// Version, Revision and Source fill the OCI labels of the same name.
	Version, Revision, Source string
}

// User is the image's user and group: distroless's nonroot.
const User = "65532:65532"

// Build returns the image of the binary. It refuses a binary that is not a
// static Linux executable: the image has no C library to load.
func Build(o Options) (v1.Image, error) {
	arch, err := staticLinuxArch(o.Binary)
	if err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, err
	}
	layerTar, err := rootFS(bin, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: o.Created}, CreatedBy: "hack/image: /manager, /etc/passwd, /etc/group, /tmp", Comment: "no base image"},
	})
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", arch
	cfg.Created = v1.Time{Time: o.Created}
	labels := map[string]string{
		"org.opencontainers.image.title":       "apitoken-operator",
		"org.opencontainers.image.description": "API tokens as Kubernetes custom resources: the operator, its webhooks and its auth endpoint",
		"org.opencontainers.image.licenses":    "Apache-2.0",
		"org.opencontainers.image.created":     o.Created.UTC().Format(time.RFC3339),
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.revision":    o.Revision,
		"org.opencontainers.image.source":      o.Source,
	}
	for k, v := range labels {
		if v == "" {
			delete(labels, k)
		}
	}
	cfg.Config = v1.Config{
		Entrypoint: []string{"/manager"},
		User:       User,
		WorkingDir: "/",
		Labels:     labels,
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, err
	}
	annotated, ok := mutate.Annotations(img, labels).(v1.Image)
	if !ok {
		return nil, errors.New("annotating the manifest did not return an image")
	}
	return annotated, nil
}

// staticLinuxArch returns the GOARCH of a static Linux ELF executable, or
// an error saying why path is not one.
func staticLinuxArch(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s is not an ELF executable (build it with GOOS=linux): %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", fmt.Errorf("%s is dynamically linked: build it with CGO_ENABLED=0, the image has no C library", path)
		}
	}
	switch f.Machine {
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	case elf.EM_PPC64:
		return "ppc64le", nil
	case elf.EM_S390:
		return "s390x", nil
	}
	return "", fmt.Errorf("%s: unsupported machine %v", path, f.Machine)
}

// rootFS returns the layer's tar: the binary as /manager (0755, root's, so
// the user cannot replace it), the nonroot user and group, and /tmp.
func rootFS(bin []byte, created time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	uid := 65532
	entries := []struct {
		hdr  tar.Header
		data []byte
	}{
		{tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}, nil},
		{tar.Header{Name: "etc/group", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("root:x:0:\nnonroot:x:" + strconv.Itoa(uid) + ":\n")},
		{tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:" + strconv.Itoa(uid) + ":" + strconv.Itoa(uid) + ":nonroot:/home/nonroot:/sbin/nologin\n")},
		{tar.Header{Name: "home/", Typeflag: tar.TypeDir, Mode: 0o755}, nil},
		{tar.Header{Name: "home/nonroot/", Typeflag: tar.TypeDir, Mode: 0o700, Uid: uid, Gid: uid}, nil},
		{tar.Header{Name: "manager", Typeflag: tar.TypeReg, Mode: 0o755}, bin},
		{tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}, nil},
	}
	for _, e := range entries {
		h := e.hdr
		h.ModTime = created
		h.Size = int64(len(e.data))
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteTarball writes img, tagged tag, as a tarball for docker load and crane push.
func WriteTarball(path, tag string, img v1.Image) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(path, ref, img)
}

// WriteLayout writes img, named tag, as an OCI image layout in dir (a new index).
func WriteLayout(dir, tag string, img v1.Image) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag}))
}

// created returns the build time: SOURCE_DATE_EPOCH's when set (a
// reproducible build), otherwise value (RFC 3339), otherwise the Unix epoch.
func created(value string) (time.Time, error) {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
		}
		return time.Unix(sec, 0).UTC(), nil
	}
	if value == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	return time.Parse(time.RFC3339, value)
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	var o Options
	var tag, out, ociLayout, createdAt string
	fs.StringVar(&o.Binary, "binary", "", "the static Linux binary (CGO_ENABLED=0 GOOS=linux go build ./cmd)")
	fs.StringVar(&tag, "tag", "apitoken-operator:dev", "the image's name and tag")
	fs.StringVar(&out, "o", "", "write a tarball for docker load and crane push here")
	fs.StringVar(&ociLayout, "oci-layout", "", "write an OCI image layout into this directory (replaced)")
	fs.StringVar(&createdAt, "created", "", "the image's creation time, RFC 3339 (default: SOURCE_DATE_EPOCH, else 1970-01-01)")
	fs.StringVar(&o.Version, "version", "", "org.opencontainers.image.version")
	fs.StringVar(&o.Revision, "revision", "", "org.opencontainers.image.revision (the git commit)")
	fs.StringVar(&o.Source, "source", "https://github.com/apitoken-operator/apitoken-operator", "org.opencontainers.image.source")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.Binary == "" || (out == "" && ociLayout == "") {
		return errors.New("-binary and at least one of -o and -oci-layout are required")
	}
	var err error
	if o.Created, err = created(createdAt); err != nil {
		return err
	}
	img, err := Build(o)
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	if out != "" {
		if err := WriteTarball(out, tag, img); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s (%s, %s): docker load -i %s, or crane push %s <registry>/<name>:<tag>\n", out, tag, digest, out, out)
	}
	if ociLayout != "" {
		if err := os.RemoveAll(ociLayout); err != nil {
			return err
		}
		if err := WriteLayout(ociLayout, tag, img); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote OCI layout %s (%s, %s)\n", ociLayout, tag, digest)
	}
	return nil
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}
