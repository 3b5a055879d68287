package controllers

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
	"github.com/apitoken-operator/apitoken-operator/internal/secretdata"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// The Secret's rendered keys (spec.secretTemplate.data): written with the
// token by writeSecret, in the same update, so that they change together;
// sealed by the data seal (DataSealAnnotation), which the cache's digest
// checks (digestRendered) as it checks the token's seal; written back by
// syncRendered when the seal fails (a key edited, added or removed) or
// the template or the token's identity changed.

// renderInputs returns the identity the renderings of t's token issued at
// issued say (issued truncated to the second, as status.issuedAt is).
func renderInputs(t *tokensv1alpha1.ApiToken, p policy, issued time.Time) secretdata.Identity {
	id := secretdata.Identity{Name: t.Name, Namespace: t.Namespace, Audience: string(lifecycle.AudienceOf(&t.Spec))}
	if exp, finite := p.ExpiresAt(issued.Truncate(time.Second)); finite && !issued.IsZero() {
		id.ExpiresAt = exp
	}
	return id
}

// templateData is t's spec.secretTemplate.data (nil if none).
func templateData(t *tokensv1alpha1.ApiToken) map[string]tokensv1alpha1.SecretDataKey {
	if t.Spec.SecretTemplate == nil {
		return nil
	}
	return t.Spec.SecretTemplate.Data
}

// renderData sets secret's data to tok and its renderings for t (tok
// empty: revoked, every rendering empty), and the data seal over them; with
// no template data, to tok alone. A template the webhook would refuse
// renders nothing and fails (parsePolicy reports it first); revoked, it
// leaves only the empty "token" key.
func renderData(secret *corev1.Secret, t *tokensv1alpha1.ApiToken, p policy, tok string, issued time.Time, h *token.Hasher) error {
	data := templateData(t)
	rendered, ok := secretdata.Render(data, tok, renderInputs(t, p, issued))
	if !ok && tok != "" {
		return errors.New("spec.secretTemplate.data is not valid; nothing was written")
	}
	if !ok {
		// Revoked: the token leaves the Secret, and so does every key.
		data, rendered = nil, map[string][]byte{}
	}
	rendered[tokensv1alpha1.SecretTokenKey] = []byte(tok)
	secret.Data = rendered
	delete(secret.Annotations, tokensv1alpha1.DataSealAnnotation)
	if fp := secretdata.Fingerprint(data, renderInputs(t, p, issued), tok == ""); fp != "" {
		secret.Annotations[tokensv1alpha1.DataSealAnnotation] = fp + "." + dataMAC(h, t.UID, fp, secret)
	}
	return nil
}

// dataMAC is the MAC, under h's salt, over the ApiToken's UID, the
// fingerprint and every key and value of secret's data, the token's
// included: a rendering of another token, a key added or removed, or an
// edited value all change it.
func dataMAC(h *token.Hasher, owner types.UID, fp string, secret *corev1.Secret) string {
	parts := []string{"data", string(owner), fp}
	for _, k := range slices.Sorted(maps.Keys(secret.Data)) {
		parts = append(parts, k, string(secret.Data[k]))
	}
	return h.Seal(parts...)
}

// dataSealed reports whether secret's data seal holds over its data for
// the ApiToken with UID owner (false when it carries none).
func dataSealed(secret *corev1.Secret, owner types.UID, h *token.Hasher) bool {
	fp, mac, ok := strings.Cut(secret.Annotations[tokensv1alpha1.DataSealAnnotation], ".")
	return ok && fp != "" && subtle.ConstantTimeCompare([]byte(mac), []byte(dataMAC(h, owner, fp, secret))) == 1
}

// renderingCurrent reports whether secret (as view sees it) holds the
// renderings t's spec asks for now: none asked and none sealed, or a
// data seal that holds over the fingerprint of the template and identity.
func renderingCurrent(t *tokensv1alpha1.ApiToken, p policy, secret *corev1.Secret, view tokenView) bool {
	var issued time.Time
	if t.Status.IssuedAt != nil {
		issued = t.Status.IssuedAt.Time
	}
	want := secretdata.Fingerprint(templateData(t), renderInputs(t, p, issued), t.Spec.Revoked || view.empty)
	got, _, _ := strings.Cut(secret.Annotations[tokensv1alpha1.DataSealAnnotation], ".")
	if want == "" {
		return got == ""
	}
	return got == want && view.rendered
}

// syncRendered writes the Secret's rendered keys back from its token when
// they are not what the spec asks for (renderingCurrent), reading the
// Secret from the API server (the cache holds no token) and writing only
// if it still holds the recorded current token, sealed. It reports
// whether it wrote. It never issues a token: an edited rendering is not a
// tampered token.
func (r *ApiTokenReconciler) syncRendered(ctx context.Context, s *pass) (bool, error) {
	t := s.t
	if s.secret == nil || s.state == secretForeign || renderingCurrent(t, s.p, s.secret, s.view) {
		return false, nil
	}
	live := s.secret
	if _, digested := live.Annotations[digestKey]; digested {
		if r.APIReader == nil {
			return false, fmt.Errorf("the Secret %s/%s is cached without its token, and there is no reader to fetch it", live.Namespace, live.Name)
		}
		live = &corev1.Secret{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(s.secret), live); err != nil {
			return false, fmt.Errorf("reading Secret %s/%s: %w", s.secret.Namespace, s.secret.Name, err)
		}
		if !controlledBy(live, t) || live.ResourceVersion != s.secret.ResourceVersion {
			return false, secretRaced(live, "changed since it was cached")
		}
	}
	tok := string(live.Data[tokensv1alpha1.SecretTokenKey])
	lv := viewToken(tok, live, t.UID, s.hasher)
	issued, err := time.Parse(time.RFC3339, live.Annotations[tokensv1alpha1.IssuedAtAnnotation])
	if !lv.sealed || classifyToken(lv, t.Status.Verification) != secretMatchesCurrent || err != nil {
		return false, secretRaced(live, "no longer holds the current token")
	}
	return true, r.writeSecret(ctx, s, live, tok, issued)
}

// secretRaced says that the Secret moved on under a pass: a conflict, which
// summarizeAndPatch retries without flipping Ready (raced).
func secretRaced(s *corev1.Secret, why string) error {
	return apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, s.Namespace+"/"+s.Name, errors.New(why+"; retrying"))
}
