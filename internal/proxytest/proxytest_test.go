package proxytest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCaddySnippet reads the page's Caddy snippet and takes its blocks out
// as the tests do.
func TestCaddySnippet(t *testing.T) {
	page, err := os.ReadFile(filepath.Join("..", "..", "docs", "auth-endpoint.md"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := CaddySnippet(page)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s, CaddySiteAddress+" {\n") || !strings.HasSuffix(s, "}\n") {
		t.Fatalf("the snippet is not one site block:\n%s", s)
	}
	plain := WithoutBlock(s, "transport http")
	if strings.Contains(plain, "transport") || strings.Contains(plain, "tls_trust_pool") || !strings.Contains(plain, "copy_headers") {
		t.Fatalf("without the transport block:\n%s", plain)
	}
	bare := CaddySite(WithoutBlock(s, "forward_auth"), "http://:8081", "", "")
	for _, gone := range []string{"forward_auth", "copy_headers", "transport", "uri "} {
		if strings.Contains(bare, gone) {
			t.Fatalf("without the forward_auth block, %q is left:\n%s", gone, bare)
		}
	}
	if !strings.HasPrefix(bare, "http://:8081 {\n") || !strings.Contains(bare, "\treverse_proxy "+CaddyUpstream+"\n") ||
		!strings.Contains(bare, "\trequest_header -Connection\n") || strings.Count(bare, "{") != strings.Count(bare, "}") {
		t.Fatalf("without the forward_auth block:\n%s", bare)
	}
	if _, err := CaddySnippet([]byte(strings.Replace(string(page), CaddyUpstream, "other:80", 1))); err == nil {
		t.Fatal("a snippet without the upstream the tests substitute was accepted")
	}
}
