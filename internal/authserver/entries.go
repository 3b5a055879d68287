package authserver

import (
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"k8s.io/apimachinery/pkg/types"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// Grant is what a token may do, and the identity labels it carries.
// ApiTokens with the same type, audience, presentation, scopes and
// identity labels share one, so a token's identity stays small (a token
// without identity labels costs nothing more).
type Grant struct {
	Type     string
	Audience string
	// Presentation is spec.presentation: any (""), bearer or api-key.
	Presentation tokensv1alpha1.Presentation
	Scopes       token.ScopeSet
	// ScopesHeader is Scopes joined with commas, for X-ApiToken-Scopes.
	ScopesHeader string
	// Labels are the token's identity labels (identityLabels): headers
	// of a 200, a gRPC OK's dynamic metadata, TokenReview extras.
	Labels []IdentityLabel
	// typeHeader and scopesHeader are the header values of a 200, built once.
	typeHeader, scopesHeader []string
	// metadata is the gRPC OK's dynamic metadata of Labels (nil for none),
	// built once and only read.
	metadata *structpb.Struct
	// key and refs place the Grant in Index.grants; refs counts the
	// ApiTokens holding it (under Index.mu).
	key  string
	refs int
}

// Identity is who a valid token speaks for. It is shared by every hash of
// one ApiToken and never changes after it is built.
type Identity struct {
	*Grant
	Namespace string
	Name      string
	UID       string
	// User is apitoken:<namespace>:<name>.
	User  string
	usage *usage
	// endsGrace is set on the identity of a current hash whose use ends
	// the previous hash's grace (lifecycle.Record.EndsGrace): that hash,
	// as the status records it. A use of it is recorded apart (markUsed),
	// for status.verification.firstUsedAt. Every other hash's identity
	// has none, so a use of the previous token never ends its own grace.
	endsGrace string
	// hdr backs the user, name and namespace header values of a 200
	// (userHeader, nameHeader, namespaceHeader), built once.
	hdr                                     [3]string
	userHeader, nameHeader, namespaceHeader []string
}

// usage is the last successful verification of one ApiToken, in unix
// nanoseconds, read by the last-use writer.
type usage struct {
	key      types.NamespacedName
	lastSeen atomic.Int64
	// writtenSeen is the lastSeen value last written; writtenAt is when.
	writtenSeen atomic.Int64
	writtenAt   atomic.Int64
	// first is the first use this replica saw of a hash whose use ends
	// the previous one's grace (Identity.endsGrace); firstWritten is the
	// one last written or reported (done with).
	first, firstWritten atomic.Pointer[firstUse]
	// presented is the last time this replica refused a replaced or
	// revoked token of this ApiToken (replayed.go); presentedSent the one
	// last recorded or reported.
	presented, presentedSent atomic.Pointer[presentation]
}

// entry is one hash of a token (current, pending, previous or revoked)
// and what it is worth at every instant.
type entry struct {
	id *Identity
	lifecycle.Standing
	// record is which of the status's hashes it is (recordOf).
	record record
}

type object struct {
	digests []digestKey
	usage   *usage
	// grant is the Grant this ApiToken holds a reference on.
	grant *Grant
	// dead are the hashes of its record this replica has seen ended
	// (revoked, or deletion requested): refused for good, even if the
	// spec is flipped back before any reconcile records the revocation.
	// Bounded by the record: a hash the status no longer names is dropped.
	dead map[digestKey]struct{}
}

// grant returns the shared Grant of a spec and its identity labels with
// one more reference. The caller holds ix.mu.
func (ix *Index) grant(spec *tokensv1alpha1.ApiTokenSpec, labels []IdentityLabel) *Grant {
	audience := string(lifecycle.AudienceOf(spec))
	presentation := spec.Presentation
	if presentation == tokensv1alpha1.AnyHeader {
		presentation = ""
	}
	key := string(spec.Type) + "\x00" + audience + "\x00" + string(presentation) + "\x00" + strings.Join(spec.Scopes, ",") + "\x00" + labelsKey(labels)
	if g := ix.grants[key]; g != nil {
		g.refs++
		return g
	}
	scopes, err := token.Granted(string(spec.Type), spec.Scopes)
	if err != nil {
		scopes = nil // an invalid spec grants nothing
	}
	g := &Grant{Type: string(spec.Type), Audience: audience, Presentation: presentation, Scopes: scopes, ScopesHeader: strings.Join(scopes.Strings(), ","), key: key, refs: 1}
	g.typeHeader, g.scopesHeader = []string{g.Type}, []string{g.ScopesHeader}
	g.Labels, g.metadata = labels, labelsMetadata(labels)
	ix.grants[key] = g
	return g
}

// release drops one reference on g, and g itself with the last one, so
// that the table holds only the grants of indexed ApiTokens however often
// their specs change. The caller holds ix.mu.
func (ix *Index) release(g *Grant) {
	if g == nil {
		return
	}
	if g.refs--; g.refs <= 0 {
		delete(ix.grants, g.key)
	}
}

// Grants returns the number of distinct grants held (for tests and
// memory accounting).
func (ix *Index) Grants() int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return len(ix.grants)
}

// entriesOf builds the index entries of an ApiToken's verification record:
// each recorded hash with what lifecycle.Assess says it is worth. The
// caller holds ix.mu.
func (ix *Index) entriesOf(at *tokensv1alpha1.ApiToken, g *Grant, u *usage) map[digestKey]entry {
	v := at.Status.Verification
	out := map[digestKey]entry{}
	if v == nil {
		return out
	}
	id := &Identity{
		Grant: g, Namespace: at.Namespace, Name: at.Name, UID: string(at.UID),
		User: "apitoken:" + at.Namespace + ":" + at.Name, usage: u,
	}
	id.hdr = [3]string{id.User, id.Name, id.Namespace}
	id.userHeader, id.nameHeader, id.namespaceHeader = id.hdr[0:1:1], id.hdr[1:2:2], id.hdr[2:3:3]
	// A spec that does not parse makes every hash worth nothing until it
	// does (Assess): its errors are the reconciler's to report.
	spec, _ := lifecycle.ParseSpec(&at.Spec)
	r := lifecycle.Assess(at, spec)
	for _, h := range r.Hashes() {
		full, err := token.DecodeDigest(h.Encoded)
		if err != nil {
			continue
		}
		hid := id
		if r.EndsGrace && h.Encoded == r.Current.Encoded {
			// The same identity, but a use of this hash is also recorded
			// as the one that ends the previous hash's grace.
			fresh := *id
			fresh.endsGrace = h.Encoded
			hid = &fresh
		}
		out[indexKey(full)] = entry{id: hid, Standing: h.Standing, record: recordOf(r, h.Encoded)}
	}
	return out
}

// markUsed records a successful verification of id at now.
func markUsed(id *Identity, now time.Time) {
	n := now.UnixNano()
	// Second precision is plenty for a value written once a minute, and
	// skipping the store keeps hot tokens from bouncing a cache line.
	if n-id.usage.lastSeen.Load() >= int64(time.Second) {
		id.usage.lastSeen.Store(n)
	}
	if id.endsGrace != "" {
		id.usage.markFirst(id.endsGrace, n)
	}
}

// forEachUsage calls f with every ApiToken's usage.
func (ix *Index) forEachUsage(f func(*usage)) {
	ix.mu.Lock()
	list := make([]*usage, 0, len(ix.objects))
	for _, o := range ix.objects {
		list = append(list, o.usage)
	}
	ix.mu.Unlock()
	for _, u := range list {
		f(u)
	}
}
