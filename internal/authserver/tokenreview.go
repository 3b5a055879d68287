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
// See reviewAudiences for which audiences a token is valid for.
func (h *Handler) ServeTokenReview(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var st authnv1.TokenReviewStatus
	result, id := h.tokenReview(w, r, &st)
	if h.Audit != nil {
		d := Decision{Status: http.StatusUnauthorized, Result: result, Identity: id, Reason: st.Error}
		if st.Authenticated {
			d.Status = http.StatusOK
		}
		h.audit("tokenreview", &Request{}, &d, auditSource{requestID: r.Header.Get("X-Request-Id"), peer: r.RemoteAddr})
	}
	observe(result, start)
}

// tokenReview answers one TokenReview request with status st, and returns
// the metrics result and the ApiToken the token belongs to, if known.
func (h *Handler) tokenReview(w http.ResponseWriter, r *http.Request, st *authnv1.TokenReviewStatus) (string, *Identity) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "TokenReview must be POSTed", http.StatusMethodNotAllowed)
		return "bad_request", nil
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		http.Error(w, "Content-Type must be application/json", http.StatusUnsupportedMediaType)
		return "bad_request", nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReviewBytes+1))
	if err != nil || len(body) > maxReviewBytes {
		http.Error(w, "the TokenReview body is unreadable or larger than 64 KiB", http.StatusBadRequest)
		return "bad_request", nil
	}
	var review authnv1.TokenReview
	if err := json.Unmarshal(body, &review); err != nil {
		http.Error(w, "the body is not a TokenReview", http.StatusBadRequest)
		return "bad_request", nil
	}
	if review.Kind != "TokenReview" || (review.APIVersion != "authentication.k8s.io/v1" && review.APIVersion != "authentication.k8s.io/v1beta1") {
		http.Error(w, "expected kind TokenReview in authentication.k8s.io/v1 or v1beta1", http.StatusBadRequest)
		return "bad_request", nil
	}
	// v1 and v1beta1 share this shape; answer in the version asked.
	resp := authnv1.TokenReview{TypeMeta: review.TypeMeta, ObjectMeta: review.ObjectMeta}
	result, id := h.review(&review.Spec, &resp.Status)
	*st = resp.Status
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&resp)
	return result, id
}

func (h *Handler) review(spec *authnv1.TokenReviewSpec, st *authnv1.TokenReviewStatus) (string, *Identity) {
	if spec.Token == "" {
		st.Error = "no token"
		return "missing", nil
	}
	now := h.Clock.Now()
	id, verdict := h.Index.Lookup(spec.Token, now)
	if verdict != Valid {
		st.Error = "invalid token: " + verdict.String()
		return verdict.String(), id
	}
	// The API server presents what it got as Authorization: Bearer.
	if problem := presentedWrongly(id, headerAuthorization); problem != "" {
		st.Error = problem
		return "bad_request", id
	}
	if problem := h.reviewAudiences(spec.Audiences, id, st); problem != "" {
		st.Error = problem
		return "insufficient_scope", id
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
	return "valid", id
}

// reviewAudiences decides which of the requested audiences the token of
// id is valid for, into st.Audiences, or returns why it is valid for none.
//
// The TokenReview API defines absent spec.audiences as the API server's
// own, and an empty status.audiences on an authenticated answer as "valid
// for the API server's audiences". So only a token of audience kubernetes
// passes a review that names none (answered with no status.audiences), or
// one that names an audience of the API server (Options.KubeAPIAudiences).
// Any other token is valid only for its own audience, and never when that
// is also one of the API server's by name (k3s and RKE2 add "k3s" and
// "rke2" to their --api-audiences): the API server would accept it.
func (h *Handler) reviewAudiences(asked []string, id *Identity, st *authnv1.TokenReviewStatus) string {
	apiServers := func(a string) bool { return slices.Contains(h.Options.KubeAPIAudiences, a) }
	kube := id.Audience == string(tokensv1alpha1.Kubernetes)
	switch {
	case len(asked) == 0 && kube:
		return ""
	case len(asked) == 0:
		return "a TokenReview that names no audience asks for the API server's audiences, for which only a token of audience kubernetes is valid; " +
			"this token's audience is " + id.Audience + ": name it in spec.audiences (kube-rbac-proxy: --auth-token-audiences=" + id.Audience + ")"
	case kube && slices.ContainsFunc(asked, apiServers):
		return ""
	case !kube && apiServers(id.Audience):
		return "the token's audience " + id.Audience + " is also an audience of the Kubernetes API server (--kube-api-audiences), for which only a token of audience kubernetes is valid"
	case slices.Contains(asked, id.Audience):
		st.Audiences = []string{id.Audience}
		return ""
	case kube:
		return "a kubernetes token is valid only for the API server's audiences (--kube-api-audiences), and none of the requested audiences is one"
	}
	return "the token's audience " + id.Audience + " is not among the requested audiences"
}
