package lifecycle

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// TestAssessLeakRevoked: a hash named by a leak revocation is revoked at
// once, before any reconcile acts on the request; the others keep their
// worth, and a reference to no recorded hash changes nothing.
func TestAssessLeakRevoked(t *testing.T) {
	for _, c := range []struct {
		name                       string
		named                      string
		current, pending, previous Worth
	}{
		{"the current hash (and so the pending one, worth what it is)", "cur", Revoked, Valid, Valid},
		{"the pending hash", "pend", Valid, Revoked, Valid},
		{"the previous hash, in its grace", "prev", Valid, Valid, Revoked},
		{"a hash the record does not hold", "other", Valid, Valid, Valid},
	} {
		t.Run(c.name, func(t *testing.T) {
			at := apiToken(func(a *tokensv1alpha1.ApiToken) {
				a.Status.Verification.LeakRevocations = []tokensv1alpha1.LeakRevocation{{Token: HashRef(c.named), RequestedAt: metav1.NewTime(t0)}}
			})
			r := Assess(at, mustParse(t, at))
			for _, h := range []struct {
				name string
				got  Worth
				want Worth
			}{
				{"current", r.Current.WorthAt(t0), c.current},
				{"pending", r.Pending.WorthAt(t0), c.pending},
				{"previous", r.Previous.WorthAt(t0), c.previous},
			} {
				if h.got != h.want {
					t.Errorf("%s: worth %d, want %d", h.name, h.got, h.want)
				}
			}
			if c.named == "cur" && r.EndsGrace {
				t.Error("a use of a revoked current token ends the previous one's grace")
			}
		})
	}
}

// TestLeakRevoked names, in constant time, which recorded hash a leak
// revocation names.
func TestLeakRevoked(t *testing.T) {
	v := &tokensv1alpha1.Verification{Hash: "cur", LeakRevocations: []tokensv1alpha1.LeakRevocation{{Token: HashRef("cur")}}}
	if !LeakRevoked(v, "cur") || LeakRevoked(v, "prev") || LeakRevoked(v, "") || LeakRevoked(nil, "cur") {
		t.Error("LeakRevoked names the wrong hashes")
	}
	if HashRef("cur") == HashRef("prev") || len(HashRef("cur")) != 32 {
		t.Errorf("HashRef = %q", HashRef("cur"))
	}
}

func mustParse(t *testing.T, at *tokensv1alpha1.ApiToken) Spec {
	t.Helper()
	s, err := ParseSpec(&at.Spec)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
