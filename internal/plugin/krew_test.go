package plugin

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"

	"sigs.k8s.io/yaml"
)

// krewPlugin is the part of krew's Plugin manifest (v1alpha2) checked here.
type krewPlugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		Homepage         string `json:"homepage"`
		ShortDescription string `json:"shortDescription"`
		Description      string `json:"description"`
		Caveats          string `json:"caveats"`
		Platforms        []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			Sha256 string `json:"sha256"`
			Files  []struct {
				From string `json:"from"`
				To   string `json:"to"`
			} `json:"files"`
			Bin string `json:"bin"`
		} `json:"platforms"`
	} `json:"spec"`
}

// TestKrewManifest renders plugins/krew/apitoken.yaml as krew-release-bot
// does at a tag and checks the manifest krew would receive.
func TestKrewManifest(t *testing.T) {
	const tag = "v1.2.3"
	src, err := os.ReadFile(filepath.Join("..", "..", "plugins", "krew", "apitoken.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := template.New("krew").Funcs(template.FuncMap{
		// The bot downloads the archive to compute its sha256.
		"addURIAndSha": func(uri, tag string) string {
			return fmt.Sprintf("uri: %s\n    sha256: %s", strings.ReplaceAll(uri, "{{ .TagName }}", tag), strings.Repeat("5e", 32))
		},
	}).Parse(string(src))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, map[string]string{"TagName": tag}); err != nil {
		t.Fatal(err)
	}
	var p krewPlugin
	if err := yaml.UnmarshalStrict(out.Bytes(), &p); err != nil {
		t.Fatalf("the rendered manifest is not a krew Plugin: %v\n%s", err, out.String())
	}
	if p.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || p.Kind != "Plugin" || p.Metadata.Name != "apitoken" ||
		p.Spec.Version != tag || p.Spec.Homepage == "" || p.Spec.ShortDescription == "" || p.Spec.Description == "" || p.Spec.Caveats == "" {
		t.Fatalf("manifest header: %+v", p)
	}
	seen := map[string]bool{}
	for _, pl := range p.Spec.Platforms {
		osName, arch := pl.Selector.MatchLabels["os"], pl.Selector.MatchLabels["arch"]
		seen[osName+"/"+arch] = true
		bin := "kubectl-apitoken"
		if osName == "windows" {
			bin += ".exe"
		}
		wantURI := fmt.Sprintf("https://github.com/apitoken-operator/apitoken-operator/releases/download/%s/kubectl-apitoken_%s_%s_%s.tar.gz", tag, tag, osName, arch)
		if pl.URI != wantURI || len(pl.Sha256) != 64 || pl.Bin != bin {
			t.Errorf("%s/%s: uri %s, bin %s; want %s, %s", osName, arch, pl.URI, pl.Bin, wantURI, bin)
		}
		files := map[string]string{}
		for _, f := range pl.Files {
			files[f.From] = f.To
		}
		if files[bin] != "." || files["LICENSE"] != "." || len(files) != 2 {
			t.Errorf("%s/%s: files %v, want %s and LICENSE", osName, arch, files, bin)
		}
	}
	for _, want := range []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64", "windows/amd64"} {
		if !seen[want] {
			t.Errorf("no platform %s", want)
		}
	}
}
