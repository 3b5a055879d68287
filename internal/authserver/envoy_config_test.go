package authserver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// TestEnvoyGRPCSnippets parses the Envoy snippets of docs/auth-endpoint.md
// with Envoy's own types (an unknown or misspelt field fails), and checks
// what they say: gRPC to the cluster, fail closed, and a route policy
// that this endpoint accepts.
func TestEnvoyGRPCSnippets(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "docs", "auth-endpoint.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	start := strings.Index(doc, "### Envoy `ext_authz` (gRPC)")
	end := strings.Index(doc[start:], "**Istio**") + start
	var blocks []string
	for rest := doc[start:end]; ; {
		i := strings.Index(rest, "```yaml\n")
		if i < 0 {
			break
		}
		rest = rest[i+len("```yaml\n"):]
		j := strings.Index(rest, "```")
		blocks = append(blocks, rest[:j])
		rest = rest[j:]
	}
	if len(blocks) != 3 {
		t.Fatalf("%d yaml blocks, want the filter, the route and the cluster", len(blocks))
	}
	parse := func(y string, m proto.Message) {
		t.Helper()
		j, err := yaml.YAMLToJSON([]byte(y))
		if err != nil {
			t.Fatal(err)
		}
		if err := protojson.Unmarshal(j, m); err != nil {
			t.Fatalf("%T: %v\n%s", m, err, y)
		}
	}
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
