package authserver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"
)

// TestEnvoyGRPCSnippets parses the Envoy snippets of docs/auth-endpoint.md
// with Envoy's own types (an unknown or misspelt field fails), and checks
// what they say: gRPC to the cluster, fail closed, and a route policy
// that this endpoint accepts.
func TestEnvoyGRPCSnippets(t *testing.T) {
	blocks := yamlBlocks(t, "### Envoy `ext_authz` (gRPC)", "**Istio**")
	if len(blocks) != 3 {
		t.Fatalf("%d yaml blocks, want the filter, the route and the cluster", len(blocks))
	}
	parse := func(y string, m proto.Message) { t.Helper(); parseEnvoy(t, y, m) }
	var filter hcmv3.HttpFilter
	parse(blocks[0], &filter)
	var authz extauthzv3.ExtAuthz
	if err := filter.GetTypedConfig().UnmarshalTo(&authz); err != nil {
		t.Fatal(err)
	}
	if authz.GetGrpcService().GetEnvoyGrpc().GetClusterName() != "apitoken" || authz.GetFailureModeAllow() {
		t.Fatalf("filter: %v", &authz)
	}
	var route routev3.Route
	parse(blocks[1], &route)
	var per extauthzv3.ExtAuthzPerRoute
	if err := route.GetTypedPerFilterConfig()[filter.GetName()].UnmarshalTo(&per); err != nil {
		t.Fatal(err)
	}
	pol, problem := contextPolicy(per.GetCheckSettings().GetContextExtensions())
	if problem != "" || pol.Resource != "orders" || strings.Join(pol.Namespaces, ",") != "shop" {
		t.Fatalf("route policy %+v %q", pol, problem)
	}
	var cluster clusterv3.Cluster
	parse(blocks[2], &cluster)
	if cluster.GetName() != "apitoken" || cluster.GetTransportSocket().GetName() != "envoy.transport_sockets.tls" {
		t.Fatalf("cluster: %v", &cluster)
	}
}

// yamlBlocks returns the yaml code blocks of docs/auth-endpoint.md between
// the first line starting with start and the next occurrence of end.
func yamlBlocks(t *testing.T, start, end string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "docs", "auth-endpoint.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	i := strings.Index(doc, "\n"+start)
	if i < 0 {
		t.Fatalf("docs/auth-endpoint.md has no %q", start)
	}
	doc = doc[i+1:]
	if j := strings.Index(doc[len(start):], end); j >= 0 {
		doc = doc[:len(start)+j]
	}
	var blocks []string
	for rest := doc; ; {
		i := strings.Index(rest, "```yaml\n")
		if i < 0 {
			return blocks
		}
		rest = rest[i+len("```yaml\n"):]
		j := strings.Index(rest, "```")
		blocks = append(blocks, rest[:j])
		rest = rest[j:]
	}
}

// parseEnvoy reads y into m with Envoy's own types: an unknown or misspelt
// field fails.
func parseEnvoy(t *testing.T, y string, m proto.Message) {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(j, m); err != nil {
		t.Fatalf("%T: %v\n%s", m, err, y)
	}
}

// envoyHTTPSnippet is the connection manager of docs/auth-endpoint.md's
// Envoy HTTP ext_authz snippet, with its ext_authz filter's config.
func envoyHTTPSnippet(t *testing.T) (*hcmv3.HttpConnectionManager, *extauthzv3.ExtAuthz) {
	t.Helper()
	blocks := yamlBlocks(t, "### Envoy `ext_authz` (HTTP)", "\n### ")
	if len(blocks) != 1 {
		t.Fatalf("%d yaml blocks, want the connection manager's", len(blocks))
	}
	var hcm hcmv3.HttpConnectionManager
	parseEnvoy(t, blocks[0], &hcm)
	for _, f := range hcm.GetHttpFilters() {
		var authz extauthzv3.ExtAuthz
		if f.GetTypedConfig().UnmarshalTo(&authz) == nil {
			if authz.GetFailureModeAllow() || !strings.HasPrefix(authz.GetHttpService().GetPathPrefix(), "/v1/ext-authz/") {
				t.Fatalf("ext_authz: %v", &authz)
			}
			return &hcm, &authz
		}
	}
	t.Fatalf("no ext_authz filter in\n%s", blocks[0])
	return nil, nil
}

// TestSnippetsRejectUnderscoreHeaders: Envoy lets a header spelled with
// '_' through by default, and a CGI-style upstream (PHP, WSGI, Rack) reads
// x_http_method_override as X-HTTP-Method-Override and x_auth_request_user
// as the identity header the proxy sets, while an HTTP check only sees the
// headers it allows (the '-' spellings). Every snippet that sends an HTTP
// check (Envoy, Istio, Gateway API) has the proxy reject such requests;
// the Envoy one is parsed with Envoy's types, and Istio's EnvoyFilter patch
// too.
func TestSnippetsRejectUnderscoreHeaders(t *testing.T) {
	hcm, _ := envoyHTTPSnippet(t)
	if got := hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction(); got != corev3.HttpProtocolOptions_REJECT_REQUEST {
		t.Errorf("Envoy: headers_with_underscores_action = %v, want REJECT_REQUEST", got)
	}

	docs := func(start string) []map[string]any {
		var out []map[string]any
		for _, b := range yamlBlocks(t, start, "\n### ") {
			for _, d := range strings.Split(b, "\n---\n") {
				var m map[string]any
				if err := yaml.Unmarshal([]byte(d), &m); err != nil {
					t.Fatalf("%s: %v\n%s", start, err, d)
				}
				out = append(out, m)
			}
		}
		return out
	}
	istio := false
	for _, d := range docs("### Istio") {
		if d["kind"] != "EnvoyFilter" {
			continue
		}
		patches, _ := d["spec"].(map[string]any)["configPatches"].([]any)
		for _, p := range patches {
			p := p.(map[string]any)
			value, _ := p["patch"].(map[string]any)["value"].(map[string]any)
			typed, err := yaml.Marshal(value["typed_config"])
			if err != nil || p["applyTo"] != "NETWORK_FILTER" {
				continue
			}
			var anyCfg anypb.Any
			parseEnvoy(t, string(typed), &anyCfg)
			var patched hcmv3.HttpConnectionManager
			if err := anyCfg.UnmarshalTo(&patched); err != nil {
				t.Fatalf("Istio EnvoyFilter: %v", err)
			}
			istio = istio || patched.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction() == corev3.HttpProtocolOptions_REJECT_REQUEST
		}
	}
	if !istio {
		t.Error("Istio: no EnvoyFilter that sets headers_with_underscores_action: REJECT_REQUEST on the connection manager")
	}
	gateway := false
	for _, d := range docs("### Gateway API `ExternalAuth`") {
		if d["kind"] == "ClientTrafficPolicy" {
			headers, _ := d["spec"].(map[string]any)["headers"].(map[string]any)
			gateway = gateway || headers["withUnderscoresAction"] == "RejectRequest"
		}
	}
	if !gateway {
		t.Error("Gateway API (Envoy Gateway): no ClientTrafficPolicy with headers.withUnderscoresAction: RejectRequest")
	}
}

// TestEnvoyRateLimitOnIdentityLabels parses the rate limit action of
// docs/auth-endpoint.md#identity-labels with Envoy's types: it reads the
// dynamic metadata a gRPC OK carries (checkResponse), under the filter's
// namespace, by the label's name.
func TestEnvoyRateLimitOnIdentityLabels(t *testing.T) {
	var action string
	for _, b := range yamlBlocks(t, "### Identity labels", "## Configurations") {
		if strings.HasPrefix(b, "rate_limits:") {
			action = b
		}
	}
	if action == "" {
		t.Fatal("docs/auth-endpoint.md#identity-labels has no rate_limits block")
	}
	var ra routev3.RouteAction
	parseEnvoy(t, action, &ra)
	md := ra.GetRateLimits()[0].GetActions()[0].GetMetadata()
	f := newFixture()
	id, _ := f.ix.Lookup(f.tokens["tiered"], now)
	resp := checkResponse(&Decision{Status: 200, Identity: id}, false)
	key := md.GetMetadataKey()
	if key.GetKey() != "envoy.filters.http.ext_authz" || len(key.GetPath()) != 1 ||
		resp.GetDynamicMetadata().GetFields()[key.GetPath()[0].GetKey()].GetStringValue() != "gold" {
		t.Fatalf("the documented action reads %v, the OK carries %v", key, resp.GetDynamicMetadata())
	}
}
