// Command pack packs one static binary into a single-layer image tarball
// (docker-archive, as `ctr images import` reads it) without a container
// daemon or a base image: the cluster's pause image and the suite's test
// images (hack/cluster.sh). The entrypoint is the binary at -path.
//
//	go run ./hack/cluster/pack -binary bin/pause -path /pause -tag localhost/apitoken-pause:1 -o pause.tar
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func layer(bin []byte, path string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0).UTC()
	for _, h := range []tar.Header{
		{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777, ModTime: epoch},
		{Name: strings.TrimPrefix(path, "/"), Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin)), ModTime: epoch},
	} {
		if err := tw.WriteHeader(&h); err != nil {
			return nil, err
		}
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func run() error {
	binary := flag.String("binary", "", "the static Linux binary")
	path := flag.String("path", "", "its path in the image, the entrypoint")
	tag := flag.String("tag", "", "the image's name, e.g. localhost/apitoken-pause:1")
	out := flag.String("o", "", "the tarball to write")
	flag.Parse()
	if *binary == "" || *path == "" || *tag == "" || *out == "" {
		return fmt.Errorf("-binary, -path, -tag and -o are required")
	}
	bin, err := os.ReadFile(*binary)
	if err != nil {
		return err
	}
	lt, err := layer(bin, *path)
	if err != nil {
		return err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(lt)), nil })
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	if a := os.Getenv("GOARCH"); a != "" {
		cfg.Architecture = a
	}
	cfg.Config = v1.Config{Entrypoint: []string{*path}, WorkingDir: "/"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	ref, err := name.NewTag(*tag)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(*out, ref, img)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "pack:", err)
		os.Exit(1)
	}
}
