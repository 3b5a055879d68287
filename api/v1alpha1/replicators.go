package v1alpha1

import "strings"

// secretReplicators are the tools that copy a Secret out of its namespace
// (or another Secret over it) when it carries a label or annotation under
// their domain. A token is delivered only into its own namespace's Secret,
// so spec.secretTemplate may carry none of their keys.
var secretReplicators = [...]struct{ domain, why string }{
	// reflection-allowed, -allowed-namespaces, -auto-enabled, -auto-namespaces, reflects.
	{"k8s.emberstack.com", "is read by Reflector, which copies Secrets between namespaces"},
	// replicate-to, replicate-to-matching, replication-allowed(-namespaces), replicate-from.
	{"replicator.v1.mittwald.de", "is read by kubernetes-replicator, which copies Secrets between namespaces"},
	// sync, sync-contexts (Kubed and its successor Config Syncer).
	{"kubed.appscode.com", "is read by Kubed (Config Syncer), which copies Secrets between namespaces"},
	// PushSecret and ClusterPushSecret select Secrets by a label of the
	// platform's choice: the domain is kept free for those selectors.
	{"external-secrets.io", "is reserved for External Secrets, whose PushSecret and ClusterPushSecret selectors push Secrets out of the cluster"},
}

// SecretReplicatorKey says why a Secret must not carry the label or
// annotation key, a key under a Secret replicator's domain (or a
// subdomain of it): "is read by Reflector, which copies Secrets between
// namespaces". It is "" for any other key.
func SecretReplicatorKey(key string) string {
	prefix, _, ok := strings.Cut(strings.ToLower(key), "/")
	if !ok {
		return ""
	}
	for _, r := range secretReplicators {
		if prefix == r.domain || strings.HasSuffix(prefix, "."+r.domain) {
			return r.why
		}
	}
	return ""
}
