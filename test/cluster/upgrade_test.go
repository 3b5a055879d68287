package cluster

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// nextImageTag is the second name of the image of `make image`: the
// release is upgraded to it.
const nextImageTag = "e2e-next"

// helmUpgradeUnderLoad imports the image the release runs under a second
// name (importNextImage) and runs `helm upgrade --reuse-values --set
// image.tag=e2e-next` under load (underLoad): both Deployments roll, no
// valid request of any loop is refused or answered 5xx, no token is
// re-issued, and every pod of both runs the new image (its name and its
// ID in the pods' status).
func helmUpgradeUnderLoad(t *testing.T, tenant string) {
	next := imageRepo + ":" + nextImageTag
	nextID := importNextImage(t, next)
	deployments := []string{"apitoken-operator", "apitoken-auth"}
	generations := map[string]string{}
	for _, d := range deployments {
		generations[d] = mustKubectl(t, "", "-n", namespace, "get", "deployment", d, "-o", "jsonpath={.metadata.generation}")
	}
	underLoad(t, tenant, loadScenario{
		name: "helm upgrade --reuse-values --set image.tag=" + nextImageTag,
		act: func() error {
			out, err := helm("upgrade", release, "charts/apitoken-operator", "-n", namespace, "--reuse-values", "--set", "image.tag="+nextImageTag)
			if err == nil {
				t.Log(strings.SplitN(strings.TrimSpace(out), "\n", 2)[0])
			}
			return err
		},
		deployments: deployments,
	})
	if t.Failed() {
		return
	}
	out, err := helm("history", release, "-n", namespace, "--max", "1", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var revisions []struct {
		Revision    int    `json:"revision"`
		Status      string `json:"status"`
		Description string `json:"description"`
	}
	if err := json.Unmarshal([]byte(out), &revisions); err != nil || len(revisions) != 1 {
		t.Fatalf("helm history -o json printed %q (%v)", out, err)
	}
	last := revisions[0]
	if last.Revision < 2 || last.Status != "deployed" {
		t.Errorf("helm history: the last revision is %d, %s (%s), want an upgrade deployed", last.Revision, last.Status, last.Description)
	}
	history := fmt.Sprintf("revision %d %s", last.Revision, last.Status)
	for _, d := range deployments {
		gen := mustKubectl(t, "", "-n", namespace, "get", "deployment", d, "-o", "jsonpath={.metadata.generation}")
		if gen == generations[d] {
			t.Errorf("deployment/%s was not changed by the upgrade (generation %s)", d, gen)
		}
		image := mustKubectl(t, "", "-n", namespace, "get", "deployment", d, "-o", "jsonpath={.spec.template.spec.containers[0].image}")
		if image != next {
			t.Errorf("deployment/%s runs %s, want %s", d, image, next)
		}
	}
	// The old pods may still be terminating (the auth replicas' shutdown
	// delay): wait until only the new ones are left.
	err = eventually(time.Minute, time.Second, func() error {
		out = mustKubectl(t, "", "-n", namespace, "get", "pods", "-o",
			`jsonpath={range .items[*]}{.metadata.name}{" "}{.spec.containers[0].image}{" "}{.status.containerStatuses[0].image}{" "}{.status.containerStatuses[0].imageID}{" "}{.metadata.deletionTimestamp}{"\n"}{end}`)
		n := 0
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(l)
			if len(f) != 4 {
				return fmt.Errorf("pod line %q: want name, spec image, status image, image ID and no deletionTimestamp", l)
			}
			if f[1] != next || f[2] != next || !strings.HasSuffix(f[3], nextID) {
				return fmt.Errorf("pod %s: spec image %s, status image %s, image ID %s; want %s, %s", f[0], f[1], f[2], f[3], next, nextID)
			}
			n++
		}
		if n != 4 {
			return fmt.Errorf("%d pods after the upgrade, want 4 (2 operator, 2 auth)", n)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("every pod runs %s (%s):\n%s", next, nextID, out)
	note(fmt.Sprintf("helm upgrade --reuse-values --set image.tag=%s: both Deployments rolled, every pod on %s (%s), helm %s", nextImageTag, next, nextID, history))
}

// importNextImage writes the image of `make image` again as ref, with one
// label more: the same layers (the same binary) under another config, so
// another image ID, which the pods' status then names (a second tag of the
// very same image would be reported under whichever name containerd lists
// first). It imports it into containerd and returns its ID.
func importNextImage(t *testing.T, ref string) string {
	t.Helper()
	img, err := tarball.ImageFromPath(filepath.Join(repo, "bin", "apitoken-operator-image.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	if cfg.Config.Labels == nil {
		cfg.Config.Labels = map[string]string{}
	}
	cfg.Config.Labels["dev.apitoken.e2e/tag"] = nextImageTag
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	id, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	tar := filepath.Join(scratch, "image-"+nextImageTag+".tar")
	if err := tarball.WriteToFile(tar, tag, img); err != nil {
		t.Fatal(err)
	}
	if out, err := script(2*time.Minute, "ctr", "--address", clusterEnv["CTR_ADDRESS"], "-n", "k8s.io", "images", "import", tar); err != nil {
		t.Fatalf("ctr images import %s: %v\n%s", tar, err, out)
	}
	out, err := script(time.Minute, "ctr", "--address", clusterEnv["CTR_ADDRESS"], "-n", "k8s.io", "images", "ls", "-q")
	if err != nil || !strings.Contains(out, ref) {
		t.Fatalf("containerd does not list %s (%v):\n%s", ref, err, out)
	}
	return id.String()
}
