package authserver

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// TestIndexViewDecidesAlike: an auth-only replica caches ApiTokens as
// IndexView; an index fed the views answers every token, at every instant,
// exactly as one fed the whole objects (verdict, grant and identity).
func TestIndexViewDecidesAlike(t *testing.T) {
	h := token.NewHasher([]byte("view-salt"))
	hasher := func() *token.Hasher { return h }
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { v := metav1.NewTime(t0.Add(d)); return &v }
	gen := func() string {
		tok, err := token.Generate()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	var tokens []string
	hash := func() string { tok := gen(); tokens = append(tokens, tok); return h.Hash(tok).Encode() }

	full := []*tokensv1alpha1.ApiToken{}
	add := func(spec tokensv1alpha1.ApiTokenSpec, st tokensv1alpha1.ApiTokenStatus) {
		i := len(full)
		full = append(full, &tokensv1alpha1.ApiToken{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("t%d", i), Namespace: "view", UID: "uid", ResourceVersion: "7",
				Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{}", tokensv1alpha1.RegenerateAnnotation: "1"},
				Labels:      map[string]string{"team": "a"}},
			Spec: spec, Status: st,
		})
		full[i].Spec.Description, full[i].Spec.Duration = "a token", "30d"
		full[i].Spec.SecretTemplate = &tokensv1alpha1.SecretTemplate{Labels: map[string]string{"x": "y"}}
		full[i].Status.Conditions = []metav1.Condition{{Type: tokensv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Active", Message: "m"}}
		full[i].Status.Granted = &tokensv1alpha1.Granted{Type: spec.Type}
	}
	active := func(st tokensv1alpha1.ApiTokenStatus) tokensv1alpha1.ApiTokenStatus {
		if st.Phase == "" {
			st.Phase = tokensv1alpha1.PhaseActive
		}
		st.IssuedAt = at(-time.Hour)
		return st
	}
	add(tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly}, active(tokensv1alpha1.ApiTokenStatus{ExpiresAt: at(time.Hour), Verification: &tokensv1alpha1.Verification{Hash: hash()}}))
	add(tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.Custom, Scopes: []string{"articles:find", "table:data:read"}, Audience: "billing-api", Presentation: tokensv1alpha1.APIKeyHeader},
		active(tokensv1alpha1.ApiTokenStatus{Verification: &tokensv1alpha1.Verification{Hash: hash(), PreviousHash: hash(), PreviousValidUntil: at(time.Minute)}}))
	add(tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.FullAccess, Revoked: true},
		tokensv1alpha1.ApiTokenStatus{Phase: tokensv1alpha1.PhaseRevoked, Verification: &tokensv1alpha1.Verification{RevokedHash: hash()}})
	add(tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, IdleTimeout: "30m"},
		active(tokensv1alpha1.ApiTokenStatus{LastUsedAt: at(-20 * time.Minute), Verification: &tokensv1alpha1.Verification{Hash: hash(), PendingHash: hash()}}))
	add(tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly},
		tokensv1alpha1.ApiTokenStatus{Phase: tokensv1alpha1.PhaseExpired, IssuedAt: at(-2 * time.Hour), ExpiresAt: at(-time.Hour), Verification: &tokensv1alpha1.Verification{Hash: hash()}})
	add(tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Revoked: true},
		active(tokensv1alpha1.ApiTokenStatus{Verification: &tokensv1alpha1.Verification{Hash: hash()}}))
	add(tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly},
		active(tokensv1alpha1.ApiTokenStatus{Verification: &tokensv1alpha1.Verification{Hash: hash()}}))
	full[len(full)-1].Spec.Duration = "106752d" // the CRD lets it in; it does not parse
	add(tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Rotation: &tokensv1alpha1.Rotation{RenewBefore: "30d"}},
		active(tokensv1alpha1.ApiTokenStatus{Verification: &tokensv1alpha1.Verification{Hash: hash()}})) // not shorter than 30d: unreadable

	whole, viewed := NewIndex(hasher), NewIndex(hasher)
	for _, a := range full {
		whole.Upsert(a)
		out, err := IndexTransform("")(a.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		v := out.(*tokensv1alpha1.ApiToken)
		if len(v.Annotations) != 0 || len(v.Status.Conditions) != 0 || v.Spec.SecretTemplate != nil || v.Status.Granted != nil {
			t.Fatalf("the view keeps what the index does not read: %+v", v)
		}
		viewed.Upsert(v)
	}
	for _, d := range []time.Duration{0, 2 * time.Minute, 15 * time.Minute, 2 * time.Hour} {
		for i, tok := range tokens {
			idW, verdictW := whole.Lookup(tok, t0.Add(d))
			idV, verdictV := viewed.Lookup(tok, t0.Add(d))
			if verdictW != verdictV || (idW == nil) != (idV == nil) {
				t.Fatalf("token %d at +%v: whole says %v, view says %v", i, d, verdictW, verdictV)
			}
			if idW != nil && (idW.User != idV.User || idW.UID != idV.UID || !reflect.DeepEqual(idW.Grant, idV.Grant)) {
				t.Fatalf("token %d at +%v: identities differ: %+v / %+v", i, d, idW, idV)
			}
		}
	}
}
