package authserver

import (
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"slices"
	"time"

	authnv1 "k8s.io/api/authentication/v1"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// maxReviewBytes bounds a TokenReview body.
const maxReviewBytes = 64 << 10

// ServeTokenReview answers a TokenReview (authentication.k8s.io/v1 or
// v1beta1, in the version asked), the shape the API server's webhook token
// authentication and kube-rbac-proxy speak. A valid token authenticates as
// apitoken:<namespace>:<name> with groups apitoken:<namespace>:authenticated,
// apitoken:<namespace>:type:<type> and apitoken:<namespace>:scope:<scope>.
// spec.audiences, when given, must include the token's audience; a token
// of audience "kubernetes" is also accepted for the API server's own
// audiences (Options.KubeAPIAudiences), answered with an empty
// status.audiences as the TokenReview API defines.
func (h *Handler) ServeTokenReview(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	result := h.tokenReview(w, r)
	observe(result, start)
}

func (h *Handler) tokenReview(w http.ResponseWriter, r *http.Request) string {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "TokenReview must be POSTed", http.StatusMethodNotAllowed)
		return "bad_request"
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		http.Error(w, "Content-Type must be application/json", http.StatusUnsupportedMediaType)
		return "bad_request"
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReviewBytes+1))
	if err != nil || len(body) > maxReviewBytes {
		http.Error(w, "the TokenReview body is unreadable or larger than 64 KiB", http.StatusBadRequest)
		return "bad_request"
	}
	var review authnv1.TokenReview
	if err := json.Unmarshal(body, &review); err != nil {
		http.Error(w, "the body is not a TokenReview", http.StatusBadRequest)
		return "bad_request"
	}
	if review.Kind != "TokenReview" || (review.APIVersion != "authentication.k8s.io/v1" && review.APIVersion != "authentication.k8s.io/v1beta1") {
		http.Error(w, "expected kind TokenReview in authentication.k8s.io/v1 or v1beta1", http.StatusBadRequest)
		return "bad_request"
	}
	// v1 and v1beta1 share this shape; answer in the version asked.
	resp := authnv1.TokenReview{TypeMeta: review.TypeMeta, ObjectMeta: review.ObjectMeta}
	result := h.review(&review.Spec, &resp.Status)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&resp)
	return result
}

func (h *Handler) review(spec *authnv1.TokenReviewSpec, st *authnv1.TokenReviewStatus) string {
	if spec.Token == "" {
		st.Error = "no token"
		return "missing"
	}
	now := h.Clock.Now()
	id, verdict := h.Index.Lookup(spec.Token, now)
	if verdict != Valid {
		st.Error = "invalid token: " + verdict.String()
		return verdict.String()
	}
	// The API server presents what it got as Authorization: Bearer.
	if problem := presentedWrongly(id, headerAuthorization); problem != "" {
		st.Error = problem
		return "bad_request"
	}
	switch {
	case len(spec.Audiences) == 0:
		// No audience asked: the caller checks none.
		st.Audiences = []string{id.Audience}
	case slices.Contains(spec.Audiences, id.Audience):
		st.Audiences = []string{id.Audience}
	case id.Audience == string(tokensv1alpha1.Kubernetes) &&
		slices.ContainsFunc(spec.Audiences, func(a string) bool { return slices.Contains(h.Options.KubeAPIAudiences, a) }):
		// The API server's webhook authenticator asks with its own
		// audiences (by default the service-account issuer). An empty
		// status.audiences answers "valid for the API server's audiences",
		// which it then checks against its implicit audiences itself.
	case id.Audience == string(tokensv1alpha1.Kubernetes):
		st.Error = "a kubernetes token is valid only for the API server's audiences (--kube-api-audiences), and none of the requested audiences is one"
		return "insufficient_scope"
	default:
		st.Error = "the token's audience " + id.Audience + " is not among the requested audiences"
		return "insufficient_scope"
	}
	markUsed(id, now)
	// Every group carries the namespace, so that an RBAC binding to a
	// group never spans tenants by accident.
	prefix := "apitoken:" + id.Namespace + ":"
	groups := make([]string, 0, 2+len(id.Scopes))
	groups = append(groups, prefix+"authenticated", prefix+"type:"+id.Type)
	for _, s := range id.Scopes {
		groups = append(groups, prefix+"scope:"+s.String())
	}
	st.Authenticated = true
	st.User = authnv1.UserInfo{
		Username: id.User,
		UID:      id.UID,
		Groups:   groups,
		Extra:    map[string]authnv1.ExtraValue{"tokens.apitoken.dev/audience": {id.Audience}},
	}
	return "valid"
}
