package authserver

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"mime"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// RevokePath is where whoever holds a token revokes it by presenting it
// (a leak response: a secret scanner, or the person who found it): POST
// {"token": "..."} as application/json. The token itself is the proof.
const RevokePath = "/v1/revoke"

const (
	// maxRevokeBody bounds a request's body: a token is 60 bytes or so.
	maxRevokeBody = 4 << 10
	// revokeRate and revokeBurst bound the requests of one client
	// address; revokeAllRate and revokeAllBurst those of the replica.
	revokeRate     = rate.Limit(1)
	revokeBurst    = 20
	revokeAllRate  = rate.Limit(50)
	revokeAllBurst = 200
	// revokeWrites is how often a status write that met a conflict (the
	// record changed since it was read) is tried on a fresh read.
	revokeWrites = 3
)

// revokeAnswer is the one answer to every request that was read: whether
// the token was valid, unknown, already dead or not a token at all, the
// caller learns nothing it did not know (as GitHub's credential
// revocation API answers).
const revokeAnswer = `{"message":"If this was a valid token, it is revoked: it is refused from now on, and its workload gets a new one."}` + "\n"

// Revoker answers POST RevokePath on every replica. A replica that may
// write ApiToken status (Client, Reader) records the request itself as
// status.verification.leakRevocations, which refuses the token at once
// (lifecycle.Assess) and makes the reconciler issue a new one; an
// auth-only replica (Forward) forwards it to an operator replica, and
// answers 503 when none took it. Requests are bounded per client address
// and for the replica; no token, hash or salt is logged or audited.
type Revoker struct {
	// Index is the replica's index: it says which ApiToken holds a
	// presented token, and whether it is valid.
	Index *Index
	// Client writes ApiToken status; Reader reads ApiTokens from the API
	// server (not the cache: the write carries the resourceVersion read).
	Client client.Client
	Reader client.Reader
	// Forward, when set, forwards requests instead (an auth-only replica
	// that writes no status, --report-usage-to).
	Forward *RevokeForwarder
	// Forwarders, when set, authenticates forwarded requests (a bearer
	// token of one of its Reporters, --usage-reporters); nil: a request
	// with a bearer is refused.
	Forwarders *UsageReceiver
	Audit      *AuditLog
	Clock      clock.PassiveClock

	mu     sync.Mutex
	limits *clientLimits
}

// revokeRequest is the body of a request. Client is set only by a replica
// that forwards one (authenticated): the address of the client it came from.
type revokeRequest struct {
	Token  *string `json:"token"`
	Client string  `json:"client,omitempty"`
}

// ServeHTTP answers a revocation request.
func (rv *Revoker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		revokeError(w, http.StatusMethodNotAllowed, "POST the token as {\"token\": \"...\"}", 0)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		revokeError(w, http.StatusUnsupportedMediaType, "the body must be application/json: {\"token\": \"...\"}", 0)
		return
	}
	peer := peerHost(r)
	forwarded, code, msg := rv.forwardedBy(r, peer)
	if code != 0 {
		revokeError(w, code, msg, 0)
		return
	}
	req, code, msg := readRevokeRequest(w, r, forwarded)
	if code != 0 {
		revokeError(w, code, msg, 0)
		return
	}
	src := auditSource{client: peer}
	if forwarded {
		src = auditSource{client: req.Client, peer: peer}
	}
	if wait := rv.admit(src.client); wait > 0 {
		revokeError(w, http.StatusTooManyRequests, "too many revocation requests; retry later", wait)
		return
	}
	if err := rv.revoke(r.Context(), *req.Token, src); err != nil {
		logf.FromContext(r.Context()).Error(err, "Failed to record a leak revocation", "client", src.client)
		revokeError(w, http.StatusServiceUnavailable, "the revocation could not be recorded; retry", time.Second)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = io.WriteString(w, revokeAnswer)
}

// forwardedBy reports whether r is a request forwarded by a replica: it
// carries a bearer, which must be a ServiceAccount token of one of
// Forwarders' Reporters (the usage reports' authentication and bounds).
// code != 0: refused, with msg.
func (rv *Revoker) forwardedBy(r *http.Request, peer string) (forwarded bool, code int, msg string) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return false, 0, ""
	}
	scheme, tok, _ := strings.Cut(auth, " ")
	if rv.Forwarders == nil || !strings.EqualFold(scheme, "Bearer") || !plausibleServiceAccountToken(tok) {
		return false, http.StatusUnauthorized, "present the token in the body, not as a credential"
	}
	user, wait, err := rv.Forwarders.authenticate(r.Context(), peer, tok)
	switch {
	case wait > 0:
		return false, http.StatusTooManyRequests, "too many unknown bearer tokens; retry later"
	case err != nil:
		return false, http.StatusUnauthorized, "the forwarding replica could not be authenticated"
	case !slices.Contains(rv.Forwarders.Reporters, user):
		return false, http.StatusForbidden, "user " + user + " may not forward revocation requests (--usage-reporters)"
	}
	return true, 0, ""
}

// revoke acts on a presented token: a forwarding replica forwards it; any
// other records the revocation of the hash it matches, if it is valid,
// and audits what came of it. An error: nothing was recorded, and the
// caller should retry.
func (rv *Revoker) revoke(ctx context.Context, tok string, src auditSource) error {
	now := rv.Clock.Now()
	id, verdict := rv.Index.Lookup(tok, now)
	if rv.Forward != nil {
		err := rv.Forward.Forward(ctx, tok, src.client)
		result := "forwarded"
		if err != nil {
			result = "unavailable"
		} else if verdict == Valid {
			rv.awaitRefused(ctx, tok)
		}
		rv.audit(now, result, id, src, err)
		return err
	}
	if verdict != Valid {
		rv.audit(now, "not-valid", id, src, nil)
		return nil
	}
	result, err := rv.record(ctx, tok, id, src.client, now)
	if err != nil {
		result = "failed"
	}
	rv.audit(now, result, id, src, err)
	return err
}

// record writes the leak revocation of the hash of id's ApiToken that tok
// matches (current, pending or previous in its grace, compared in
// constant time) on a fresh read, and indexes the written record at once:
// this replica refuses the token from its answer on, the others as soon
// as their caches see the write. A request for a hash already named, or
// for one the record no longer holds, writes nothing.
func (rv *Revoker) record(ctx context.Context, tok string, id *Identity, clientAddr string, now time.Time) (string, error) {
	key := types.NamespacedName{Namespace: id.Namespace, Name: id.Name}
	for attempt := 1; ; attempt++ {
		at := &tokensv1alpha1.ApiToken{}
		if err := rv.Reader.Get(ctx, key, at); err != nil {
			if apierrors.IsNotFound(err) {
				return "not-valid", nil
			}
			return "", err
		}
		encoded := rv.matching(tok, at, now)
		v := at.Status.Verification
		switch {
		case encoded == "":
			return "not-valid", nil
		case lifecycle.LeakRevoked(v, encoded):
			return "already-revoked", nil
		}
		leaks := append(slices.Clone(v.LeakRevocations), tokensv1alpha1.LeakRevocation{
			Token: lifecycle.HashRef(encoded), RequestedAt: metav1.NewTime(now.Truncate(time.Second)), Client: statusAddress(clientAddr)})
		patch, err := json.Marshal(map[string]any{
			"metadata": map[string]any{"resourceVersion": at.ResourceVersion},
			"status":   map[string]any{"verification": map[string]any{"leakRevocations": leaks}},
		})
		if err != nil {
			return "", err
		}
		err = rv.Client.Status().Patch(ctx, at, client.RawPatch(types.MergePatchType, patch))
		switch {
		case err == nil:
			rv.Index.Upsert(at)
			logf.FromContext(ctx).Info("Recorded a leak revocation", "apitoken", klog.KObj(at), "client", clientAddr)
			return "revoked", nil
		case apierrors.IsNotFound(err):
			return "not-valid", nil
		case !apierrors.IsConflict(err) || attempt == revokeWrites:
			return "", err
		}
	}
}

// statusAddress is addr as status.verification.leakRevocations records
// it: an IP address without its zone, or "" for anything else.
func statusAddress(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return ""
	}
	return ip.WithZone("").String()
}

// matching returns the hash of at's record that tok matches and that is
// valid at now (current, pending, or previous in its grace), or "".
func (rv *Revoker) matching(tok string, at *tokensv1alpha1.ApiToken, now time.Time) string {
	var digests []token.Digest
	if h := rv.Index.hasher(); h != nil {
		digests = append(digests, h.Hash(tok))
	}
	if rv.Index.previous != nil {
		if p := rv.Index.previous(now); p != nil {
			digests = append(digests, p.Hash(tok))
		}
	}
	spec, _ := lifecycle.ParseSpec(&at.Spec)
	r := lifecycle.Assess(at, spec)
	found := ""
	for _, h := range [...]lifecycle.Hash{r.Current, r.Pending, r.Previous} {
		want, err := token.DecodeDigest(h.Encoded)
		if err != nil || h.WorthAt(now) != lifecycle.Valid {
			continue
		}
		for _, d := range digests {
			if d.Equal(want) {
				found = h.Encoded
			}
		}
	}
	return found
}

// awaitRefused waits, up to awaitRefusedFor, until this replica's index
// refuses tok (its cache has seen the operator replica's write), so that
// the token is refused here too once the caller has its answer.
func (rv *Revoker) awaitRefused(ctx context.Context, tok string) {
	tick := time.NewTicker(awaitRefusedTick)
	defer tick.Stop()
	deadline := time.NewTimer(awaitRefusedFor)
	defer deadline.Stop()
	for {
		if _, v := rv.Index.Lookup(tok, rv.Clock.Now()); v != Valid {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-tick.C:
		}
	}
}

const (
	awaitRefusedFor  = 2 * time.Second
	awaitRefusedTick = 10 * time.Millisecond
)

// admit takes one request from the replica's bucket and addr's, or none
// and says how long until both hold one.
func (rv *Revoker) admit(addr string) time.Duration {
	now := rv.Clock.Now()
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if rv.limits == nil {
		rv.limits = &clientLimits{allRate: revokeAllRate, allBurst: revokeAllBurst, peerRate: revokeRate, peerBurst: revokeBurst}
	}
	return rv.limits.admit(addr, now)
}

// clients returns the number of per-address buckets held.
func (rv *Revoker) clients() int {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if rv.limits == nil {
		return 0
	}
	return len(rv.limits.byClient)
}

// audit records what came of a request: the ApiToken (when the token
// named one), the client's address, the outcome and the status answered
// (503 when err says nothing was recorded); never the token.
func (rv *Revoker) audit(at time.Time, result string, id *Identity, src auditSource, err error) {
	if rv.Audit == nil {
		return
	}
	code := http.StatusAccepted
	if err != nil {
		code = http.StatusServiceUnavailable
	}
	src = auditSource{client: bounded(src.client, maxAuditField), peer: bounded(src.peer, maxAuditField)}
	rv.Audit.record(auditRecord{at: at, endpoint: "revoke", d: Decision{Status: code, Result: result, Identity: id}, src: src})
}

// revokeError answers a request that was not acted on, as JSON; wait > 0
// says when to retry.
func revokeError(w http.ResponseWriter, code int, msg string, wait time.Duration) {
	if wait > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]string{"message": msg})
	_, _ = w.Write(append(b, '\n'))
}
