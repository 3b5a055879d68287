package helm

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// configImage returns the image of config/'s Deployment manifest (before
// config/default's images:, which must not change it).
func configImage(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), file))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s+image: (\S+)$`).FindAllStringSubmatch(string(data), -1)
	if len(m) != 1 {
		t.Fatalf("%s: %d images", file, len(m))
	}
	return m[0][1]
}

// TestDefaultImageIsFullyQualifiedAndMadeByMakeImage: the image both
// Deployments run by default (chart, config/manager, config/auth,
// config/default's images:) is one fully qualified reference (a registry
// host, a repository, a tag; never Docker Hub's implicit library/), and
// `make image` tags what it builds with exactly that reference, so an
// image built here and imported into a node's container runtime is the one
// the defaults run, with no pull.
func TestDefaultImageIsFullyQualifiedAndMadeByMakeImage(t *testing.T) {
	objs := render(t)
	var chartImages []string
	for _, d := range []string{"apitoken-operator", "apitoken-auth"} {
		containers, _, _ := unstructured.NestedSlice(objs.get("Deployment", d).Object, "spec", "template", "spec", "containers")
		chartImages = append(chartImages, containers[0].(map[string]any)["image"].(string))
	}
	want := chartImages[0]
	ref := regexp.MustCompile(`^([a-z0-9-]+(\.[a-z0-9-]+)+(:[0-9]+)?)/([a-z0-9._-]+/)*[a-z0-9._-]+:v[0-9][0-9A-Za-z.+-]*$`)
	if !ref.MatchString(want) {
		t.Errorf("the chart's default image %q is not a fully qualified reference registry.host/repository:vX.Y.Z", want)
	}
	got := map[string]string{
		"chart apitoken-auth":    chartImages[1],
		"config/manager":         configImage(t, "config/manager/manager.yaml"),
		"config/auth":            configImage(t, "config/auth/deployment.yaml"),
		"config/default images:": kustomizeImage(t),
		"make image":             makeVariable(t, "IMG"),
	}
	for what, image := range got {
		if image != want {
			t.Errorf("%s: image %q, the chart's default is %q", what, image, want)
		}
	}
}

// kustomizeImage returns what config/default's images: entry sets.
func kustomizeImage(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "default", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`(?m)^  newName: (\S+)$`).FindStringSubmatch(string(data))
	tag := regexp.MustCompile(`(?m)^  newTag: (\S+)$`).FindStringSubmatch(string(data))
	if name == nil || tag == nil {
		t.Fatalf("config/default/kustomization.yaml has no images: newName and newTag")
	}
	return name[1] + ":" + tag[1]
}

// makeVariable returns the value of a Makefile variable as make sees it.
func makeVariable(t *testing.T, v string) string {
	t.Helper()
	cmd := exec.Command("make", "--no-print-directory", "-s", "--eval=print-"+v+": ; @echo $("+v+")", "print-"+v)
	cmd.Dir = testenv.RepoRoot()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}
