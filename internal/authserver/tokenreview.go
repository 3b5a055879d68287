package authserver

import (
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
)

// maxReviewBytes bounds a TokenReview body.
const maxReviewBytes = 64 << 10

// ServeTokenReview answers a TokenReview (authentication.k8s.io/v1 or
// v1beta1, in the version asked), the shape the API server's webhook token
// authentication and kube-rbac-proxy speak. A valid token authenticates as
// apitoken:<namespace>:<name> with groups apitoken:<namespace>:authenticated,
// apitoken:<namespace>:type:<type> and apitoken:<namespace>:scope:<scope>.
// The Decider judges the token for spec.audiences (Decider.reviewAudiences
// says which audiences a token is valid for); the API server presents what
// it got as Authorization: Bearer.
func (h *Handler) ServeTokenReview(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	review, bad := readReview(r)
	var req Request
	// A request that is no TokenReview is recorded as an unauthenticated
	// one (401) whose result is bad_request.
	d := Decision{Status: http.StatusUnauthorized, Result: "bad_request"}
	var resp authnv1.TokenReview
	if bad.status == 0 {
		req = Request{Token: review.Spec.Token, Via: headerAuthorization, Review: true, Audiences: review.Spec.Audiences}
		dc := h.decider()
		d = dc.Decide(&req)
		// v1 and v1beta1 share this shape; answer in the version asked.
		resp = authnv1.TokenReview{TypeMeta: review.TypeMeta, ObjectMeta: review.ObjectMeta}
		reviewStatus(&d, &resp.Status)
	}
	h.answer("tokenreview", &req, &d, start, func() auditSource {
		return auditSource{requestID: r.Header.Get("X-Request-Id"), peer: r.RemoteAddr}
	}, func() {
		if bad.status != 0 {
			if bad.status == http.StatusMethodNotAllowed {
				w.Header().Set("Allow", http.MethodPost)
			}
			http.Error(w, bad.message, bad.status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(&resp)
	})
}

// badReview is the HTTP answer to a request that is no TokenReview; a
// zero status: none.
type badReview struct {
	status  int
	message string
}

// readReview reads the TokenReview that r POSTs as JSON.
func readReview(r *http.Request) (*authnv1.TokenReview, badReview) {
	if r.Method != http.MethodPost {
		return nil, badReview{http.StatusMethodNotAllowed, "TokenReview must be POSTed"}
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return nil, badReview{http.StatusUnsupportedMediaType, "Content-Type must be application/json"}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReviewBytes+1))
	if err != nil || len(body) > maxReviewBytes {
		return nil, badReview{http.StatusBadRequest, "the TokenReview body is unreadable or larger than 64 KiB"}
	}
	var review authnv1.TokenReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, badReview{http.StatusBadRequest, "the body is not a TokenReview"}
	}
	if review.Kind != "TokenReview" || (review.APIVersion != "authentication.k8s.io/v1" && review.APIVersion != "authentication.k8s.io/v1beta1") {
		return nil, badReview{http.StatusBadRequest, "expected kind TokenReview in authentication.k8s.io/v1 or v1beta1"}
	}
	return &review, badReview{}
}

// reviewStatus answers a TokenReview from d into st: the user, groups and
// audiences of an authenticated token, or why it is not, in words. d then
// holds what the audit log records of a TokenReview: 200 (authenticated)
// or 401, with that error as its reason.
func reviewStatus(d *Decision, st *authnv1.TokenReviewStatus) {
	if d.Status != http.StatusOK {
		switch {
		case d.Reason != "":
			st.Error = d.Reason
		case d.Result == "missing":
			st.Error = "no token"
		default:
			st.Error = "invalid token: " + d.Result
		}
		d.Status, d.Reason = http.StatusUnauthorized, st.Error
		return
	}
	id := d.Identity
	// Every group carries the namespace, so that an RBAC binding to a
	// group never spans tenants by accident.
	prefix := "apitoken:" + id.Namespace + ":"
	groups := make([]string, 0, 2+len(id.Scopes))
	groups = append(groups, prefix+"authenticated", prefix+"type:"+id.Type)
	for _, s := range id.Scopes {
		groups = append(groups, prefix+"scope:"+s.String())
	}
	extra := make(map[string]authnv1.ExtraValue, 1+len(id.Labels))
	extra["tokens.apitoken.dev/audience"] = authnv1.ExtraValue{id.Audience}
	// Each identity label under its own key (tokens.apitoken.dev/tier:
	// [gold]); a reserved name never replaces the audience.
	for _, l := range id.Labels {
		extra[l.Key] = authnv1.ExtraValue{l.Value()}
	}
	st.Authenticated = true
	st.User = authnv1.UserInfo{Username: id.User, UID: id.UID, Groups: groups, Extra: extra}
	st.Audiences = d.Audiences
}
