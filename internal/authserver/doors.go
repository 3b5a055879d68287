package authserver

import (
	"net/http"
	"time"

	"k8s.io/utils/clock"
)

// Handler serves every door: the HTTP endpoints (handler.go), gRPC
// ext_authz (ExtAuthz, grpc.go) and TokenReview (tokenreview.go). Each
// door runs one pipeline: its adapter translates what its client sent
// into a Request (or a problem), judge adds the credential and asks the
// Decider of Index, Clock and Options, and answer records and sends the
// Decision.
type Handler struct {
	Index   *Index
	Clock   clock.PassiveClock
	Options Options
	// Audit, when set, records every decision.
	Audit *AuditLog
}

// decider is the Decider of h's index, clock and options as they are now.
func (h *Handler) decider() Decider {
	return Decider{Index: h.Index, Clock: h.Clock, Options: h.Options}
}

// resourceOf is Options.resourceOf of h's options (TestResourceOf asks a
// Handler).
func (h *Handler) resourceOf(p string, n int) (span string, item, ok bool) {
	return h.Options.resourceOf(p, n)
}

// judge decides req, which the door's adapter built from a request whose
// headers are hd, or refused with problem: the credential in hd joins it,
// and a request that its adapter or its credential refuses is a 400
// (refusal) without asking the index.
func (h *Handler) judge(req *Request, problem string, hd http.Header) Decision {
	if problem == "" {
		req.Token, req.Via, problem = credential(hd)
	}
	if problem != "" {
		return refusal(problem)
	}
	dc := h.decider()
	return dc.Decide(req)
}

// answer finishes the decision d of req at endpoint, the same way at
// every door: the token's use on a 200 (for status.lastUsedAt), a
// replaced or revoked token presented again (presented), the audit record
// (src is asked only for those two), the reply (send), then the metrics,
// timed from start to the reply sent.
func (h *Handler) answer(endpoint string, req *Request, d *Decision, start time.Time, src func() auditSource, send func()) {
	if d.Status == http.StatusOK && d.Identity != nil {
		markUsed(d.Identity, d.at)
	}
	if h.Audit != nil || d.again.id != nil {
		s := src()
		presented(endpoint, d, s)
		h.audit(endpoint, req, d, s)
	}
	send()
	observe(d.Result, start)
}
