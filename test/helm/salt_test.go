package helm

import (
	"testing"
)

// TestExistingSaltSecretIsNeverWritten: salt.existingSecret names a salt
// Secret someone else provides, so both Deployments run with
// --salt-create=false (the operator never creates or writes it) and the
// auth replicas' Role reads that Secret by name; by default neither flag
// is set and the operator makes apitoken-operator-salt.
func TestExistingSaltSecretIsNeverWritten(t *testing.T) {
	objs := render(t, "--set", "salt.existingSecret=salt-from-vault")
	for _, d := range []string{"apitoken-operator", "apitoken-auth"} {
		args := containerArgs(t, objs, d)
		if !contains(args, "--salt-secret=salt-from-vault") || !contains(args, "--salt-create=false") {
			t.Errorf("Deployment %s with salt.existingSecret: args %v, want --salt-secret=salt-from-vault and --salt-create=false", d, args)
		}
	}
	if names := objs.get("Role", "apitoken-auth-salt-reader").Object["rules"].([]any)[0].(map[string]any)["resourceNames"]; len(names.([]any)) != 1 || names.([]any)[0] != "salt-from-vault" {
		t.Errorf("Role apitoken-auth-salt-reader: resourceNames %v, want [salt-from-vault]", names)
	}

	defaults := render(t)
	for _, d := range []string{"apitoken-operator", "apitoken-auth"} {
		for _, a := range containerArgs(t, defaults, d) {
			if a == "--salt-create=false" || len(a) > len("--salt-secret") && a[:len("--salt-secret")] == "--salt-secret" {
				t.Errorf("Deployment %s by default: %s (the operator creates and looks after apitoken-operator-salt)", d, a)
			}
		}
	}
}
