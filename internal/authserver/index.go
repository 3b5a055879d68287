// Package authserver is the auth endpoint: an in-memory index of token
// hashes fed by the manager's cache of ApiTokens, and the HTTP handlers for
// forward auth and TokenReview. It reads no Secret and makes no API call
// per request.
package authserver

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// Grant is what a token may do. ApiTokens with the same type, audience and
// scopes share one, so a token's identity stays small.
type Grant struct {
	Type     string
	Audience string
	// Presentation is spec.presentation: any (""), bearer or api-key.
	Presentation tokensv1alpha1.Presentation
	Scopes       token.ScopeSet
	// ScopesHeader is Scopes joined with commas, for X-ApiToken-Scopes.
	ScopesHeader string
	// typeHeader and scopesHeader are the header values of a 200, built once.
	typeHeader, scopesHeader []string
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
}

// entry is one hash of a token: current, pending, previous (until
// validUntil) or revoked.
type entry struct {
	id         *Identity
	expiresAt  int64 // unix nanoseconds; 0: never
	validUntil int64 // unix nanoseconds; 0: no grace limit
	revoked    bool
	// idle: expiresAt is the idleTimeout's deadline, earlier than the
	// token's own expiry (the refusal then says "inactive").
	idle bool
}

// Verdict is the outcome of a lookup.
type Verdict int

const (
	// Valid: the token verifies.
	Valid Verdict = iota
	// Malformed: not a token (prefix, length, alphabet or checksum).
	Malformed
	// Unknown: well-formed, but no ApiToken has it.
	Unknown
	// Expired: the token's lifetime or its grace period is over.
	Expired
	// Revoked: the ApiToken is revoked.
	Revoked
	// Inactive: the token was not used for its idleTimeout.
	Inactive
	// Ambiguous: more than one ApiToken records the token's hash.
	Ambiguous
)

// String returns the word used in responses and metrics.
func (v Verdict) String() string {
	return [...]string{"valid", "malformed", "unknown", "expired", "revoked", "inactive", "ambiguous"}[v]
}

const shardCount = 64

// digestKey is the first 256 bits of a token's HMAC-SHA512, the index's
// key: as unguessable as the whole digest for a lookup, at half the
// memory per entry.
type digestKey [32]byte

func indexKey(d token.Digest) (k digestKey) {
	copy(k[:], d[:32])
	return k
}

// shard holds one share of the hashes. Its map holds no pointer (a slot
// names its identity by index into ids), so the garbage collector never
// scans the map's memory, however many tokens there are.
type shard struct {
	mu   sync.RWMutex
	m    map[digestKey]slot
	ids  []*Identity
	free []uint32
}

// slot is an entry without its identity pointer.
type slot struct {
	id      uint32
	revoked bool
	idle    bool
	// shared: more than one ApiToken records this digest (Index.shared);
	// it is refused for all of them, and the identity is none of theirs.
	shared     bool
	expiresAt  int64
	validUntil int64
}

// entry rebuilds the entry that sl holds. The caller holds s.mu.
func (s *shard) entry(sl slot) entry {
	return entry{id: s.ids[sl.id], revoked: sl.revoked, idle: sl.idle, expiresAt: sl.expiresAt, validUntil: sl.validUntil}
}

// put stores e under d, reusing d's identity slot if it has one, and
// reports whether it did. A digest another ApiToken holds is not taken
// over, unless take (Index.drop gives it to the last ApiToken that
// records it): put then reports false and the caller shares it. The
// caller holds s.mu.
func (s *shard) put(d digestKey, e entry, take bool) bool {
	sl, ok := s.m[d]
	if ok && !take && s.ids[sl.id].usage != e.id.usage {
		return false
	}
	if !ok {
		if n := len(s.free); n > 0 {
			sl.id, s.free = s.free[n-1], s.free[:n-1]
		} else {
			sl.id = uint32(len(s.ids)) //nolint:gosec // far below 2^32 identities per shard
			s.ids = append(s.ids, nil)
		}
	}
	s.ids[sl.id] = e.id
	sl.revoked, sl.idle, sl.shared, sl.expiresAt, sl.validUntil = e.revoked, e.idle, false, e.expiresAt, e.validUntil
	s.m[d] = sl
	return true
}

// remove drops d if it belongs to u. The caller holds s.mu.
func (s *shard) remove(d digestKey, u *usage) {
	if sl, ok := s.m[d]; ok && s.ids[sl.id].usage == u {
		delete(s.m, d)
		s.ids[sl.id] = nil
		s.free = append(s.free, sl.id)
	}
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

// Index maps token hashes to identities. Lookups hold one shard's read
// lock for a map access; writers hold one shard's lock per hash.
//
// Lookups compare digests through a map, not in constant time: a digest
// is an HMAC under a salt the caller does not know, so the timing of a
// miss tells nothing about any stored token.
type Index struct {
	hasher func() *token.Hasher
	// previous returns the previous salt's hasher while a planned salt
	// rotation's overlap runs, else nil (see WithPrevious).
	previous func(now time.Time) *token.Hasher
	shards   [shardCount]shard

	mu      sync.Mutex
	objects map[types.NamespacedName]*object
	grants  map[string]*Grant
	// shared holds, for each digest that more than one ApiToken records,
	// the entry each of them would have: the last one left gets its own
	// back (drop). Rare: a planted copy, a restore under a second name.
	shared map[digestKey]map[*object]entry
}

// NewIndex returns an empty index hashing with the current salt.
func NewIndex(hasher func() *token.Hasher) *Index {
	ix := &Index{hasher: hasher, objects: map[types.NamespacedName]*object{}, grants: map[string]*Grant{}, shared: map[digestKey]map[*object]entry{}}
	for i := range ix.shards {
		ix.shards[i].m = map[digestKey]slot{}
	}
	return ix
}

// WithPrevious makes Lookup also hash with previous(now) when the current
// salt finds nothing, so that during a planned salt rotation's overlap the
// hashes recorded before the rotation keep verifying until every token is
// re-issued. previous returns nil outside an overlap. It returns ix.
func (ix *Index) WithPrevious(previous func(now time.Time) *token.Hasher) *Index {
	ix.previous = previous
	return ix
}

func (ix *Index) shard(d digestKey) *shard { return &ix.shards[d[0]%shardCount] }

// Len returns the number of indexed hashes.
func (ix *Index) Len() int {
	n := 0
	for i := range ix.shards {
		s := &ix.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// Upsert indexes the hashes recorded in at's status, replacing what was
// indexed for it before.
func (ix *Index) Upsert(at *tokensv1alpha1.ApiToken) {
	key := types.NamespacedName{Namespace: at.Namespace, Name: at.Name}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	obj := ix.objects[key]
	if obj == nil {
		obj = &object{usage: &usage{key: key}}
		ix.objects[key] = obj
	}
	g := ix.grant(&at.Spec)
	ix.release(obj.grant)
	obj.grant = g
	entries := ix.entriesOf(at, g, obj.usage)
	// Almost every ApiToken has none: no map is made for those (a relist
	// upserts every token).
	var dead map[digestKey]struct{}
	ended := tokenEnded(at)
	for d, e := range entries {
		if _, was := obj.dead[d]; was || ended {
			e.revoked = true
			entries[d] = e
			if dead == nil {
				dead = map[digestKey]struct{}{}
			}
			dead[d] = struct{}{}
		}
	}
	obj.dead = dead
	fresh := make([]digestKey, 0, len(entries))
	for d, e := range entries {
		fresh = append(fresh, d)
		if claims, ok := ix.shared[d]; ok {
			if _, was := claims[obj]; !was {
				reportShared(claims, obj)
			}
			claims[obj] = e
			continue
		}
		s := ix.shard(d)
		s.mu.Lock()
		if !s.put(d, e, false) {
			ix.share(s, d, obj, e)
		}
		s.mu.Unlock()
	}
	for _, d := range obj.digests {
		if _, kept := entries[d]; !kept {
			ix.drop(d, obj)
		}
	}
	obj.digests = fresh
}

// share marks d, which another ApiToken holds in s, as recorded by obj
// too (with entry e): refused for both from now on. The caller holds
// ix.mu and s.mu.
func (ix *Index) share(s *shard, d digestKey, obj *object, e entry) {
	sl := s.m[d]
	held := s.entry(sl)
	holder := ix.objects[held.id.usage.key]
	claims := map[*object]entry{holder: held}
	reportShared(claims, obj)
	claims[obj] = e
	ix.shared[d] = claims
	sl.shared = true
	s.m[d] = sl
	sharedHashes.Set(float64(len(ix.shared)))
}

// drop removes obj's claim on d: the digest itself when obj held it
// alone; when it was shared, and one other ApiToken is left, that one
// holds it again with its own latest entry. The caller holds ix.mu.
func (ix *Index) drop(d digestKey, obj *object) {
	s := ix.shard(d)
	claims, ok := ix.shared[d]
	if !ok {
		s.mu.Lock()
		s.remove(d, obj.usage)
		s.mu.Unlock()
		return
	}
	delete(claims, obj)
	if len(claims) > 1 {
		return
	}
	delete(ix.shared, d)
	sharedHashes.Set(float64(len(ix.shared)))
	for last, e := range claims {
		s.mu.Lock()
		s.put(d, e, true)
		s.mu.Unlock()
		indexLog.Info("A token that more than one ApiToken recorded is recorded by one again, and verifies for it", "apitoken", klog.KRef(last.usage.key.Namespace, last.usage.key.Name))
	}
}

// reportShared logs that obj records a token the ApiTokens of claims
// record too; never the token or its hash.
func reportShared(claims map[*object]entry, obj *object) {
	names := make([]string, 0, len(claims)+1)
	for o := range claims {
		names = append(names, o.usage.key.String())
	}
	names = append(names, obj.usage.key.String())
	slices.Sort(names)
	indexLog.Error(nil, "Refused a token that more than one ApiToken records: it verifies for none of them until only one records it (a copied status, a restore under a second name)",
		"apitokens", names)
}

// indexLog is the index's logger (every replica reports what it refuses).
var indexLog = logf.Log.WithName("auth-index")

// Delete drops every hash of the ApiToken key.
func (ix *Index) Delete(key types.NamespacedName) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	obj := ix.objects[key]
	if obj == nil {
		return
	}
	for _, d := range obj.digests {
		ix.drop(d, obj)
	}
	ix.release(obj.grant)
	delete(ix.objects, key)
}

// grant returns the shared Grant of a spec with one more reference. The
// caller holds ix.mu.
func (ix *Index) grant(spec *tokensv1alpha1.ApiTokenSpec) *Grant {
	audience := string(spec.Audience)
	if audience == "" {
		audience = string(tokensv1alpha1.ContentAPI)
	}
	presentation := spec.Presentation
	if presentation == tokensv1alpha1.AnyHeader {
		presentation = ""
	}
	key := string(spec.Type) + "\x00" + audience + "\x00" + string(presentation) + "\x00" + strings.Join(spec.Scopes, ",")
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

// entriesOf builds the index entries of an ApiToken's verification record.
// The caller holds ix.mu.
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
	var expires int64
	if at.Status.ExpiresAt != nil {
		expires = at.Status.ExpiresAt.UnixNano()
	}
	idle := false
	if until, ok := idleUntil(at); ok && (expires == 0 || until < expires) {
		expires, idle = until, true
	}
	// A token the operator recorded as ended stays refused, whatever the
	// spec says now, until a new one is issued (the phase changes with it).
	switch at.Status.Phase {
	case tokensv1alpha1.PhaseExpired:
		expires, idle = 1, false
	case tokensv1alpha1.PhaseInactive:
		expires, idle = 1, true
	}
	// A duration that does not parse (the CRD's pattern lets some in that
	// are longer than a time.Duration holds) says nothing of when the
	// token ends: it is refused as expired, fail closed, until it parses.
	// (An empty one never reaches the index from the API server, where the
	// field is required and its rule refuses "".)
	if d := at.Spec.Duration; d != "" {
		if _, _, err := token.ParseDuration(d); err != nil {
			expires, idle = 1, false
		}
	}
	ended := tokenEnded(at)
	add := func(encoded string, e entry) {
		if full, err := token.DecodeDigest(encoded); err == nil && encoded != "" {
			d := indexKey(full)
			e.id = id
			e.revoked = e.revoked || ended
			out[d] = e
		}
	}
	if v.PreviousHash != "" && v.PreviousValidUntil != nil {
		add(v.PreviousHash, entry{validUntil: v.PreviousValidUntil.UnixNano()})
	}
	add(v.PendingHash, entry{expiresAt: expires, idle: idle})
	add(v.Hash, entry{expiresAt: expires, idle: idle})
	// A revoked hash is dead for good: added last, it wins over any other
	// field of the record that names the same token.
	add(v.RevokedHash, entry{revoked: true})
	return out
}

// tokenEnded reports whether at's tokens are ended by its spec or its
// deletion, whatever the status says yet. A deletion ends them the moment
// it is asked for: a finalizer (anyone who may patch the ApiToken can add
// one) keeps the object, never the token, alive. Both are refused as
// revoked, and Upsert remembers them so (object.dead).
func tokenEnded(at *tokensv1alpha1.ApiToken) bool {
	return at.Spec.Revoked || at.DeletionTimestamp != nil
}

// idleUntil returns, in unix nanoseconds, when at becomes inactive under
// spec.idleTimeout (token.IdleUntil); ok is false without one. A malformed
// idleTimeout makes the token inactive at once: fail closed.
func idleUntil(at *tokensv1alpha1.ApiToken) (int64, bool) {
	if at.Spec.IdleTimeout == "" {
		return 0, false
	}
	idle, err := token.ParseSpan(at.Spec.IdleTimeout)
	if err != nil || at.Status.IssuedAt == nil {
		return 1, true
	}
	var last time.Time
	if at.Status.LastUsedAt != nil {
		last = at.Status.LastUsedAt.Time
	}
	return token.IdleUntil(at.Status.IssuedAt.Time, last, at.Status.LastUsedAt != nil, idle).UnixNano(), true
}

// Lookup verifies tok at now: format first (no hashing for a malformed
// token), then the keyed hash, then revocation, expiry and grace. The
// identity comes with Valid, and with Revoked, Expired and Inactive (to
// name the ApiToken in the audit log): check the verdict first.
func (ix *Index) Lookup(tok string, now time.Time) (*Identity, Verdict) {
	if token.Parse(tok) != nil {
		return nil, Malformed
	}
	h := ix.hasher()
	if h == nil {
		return nil, Unknown // no salt: fail closed
	}
	e, id, ok := ix.find(indexKey(h.Hash(tok)))
	if !ok && ix.previous != nil {
		// A planned salt rotation's overlap: a hash recorded before it.
		if p := ix.previous(now); p != nil {
			e, id, ok = ix.find(indexKey(p.Hash(tok)))
		}
	}
	switch {
	case !ok:
		return nil, Unknown
	case e.shared:
		return nil, Ambiguous
	case e.revoked:
		return id, Revoked
	}
	n := now.UnixNano()
	if e.expiresAt != 0 && n >= e.expiresAt && e.idle {
		return id, Inactive
	}
	if (e.expiresAt != 0 && n >= e.expiresAt) || (e.validUntil != 0 && n >= e.validUntil) {
		return id, Expired
	}
	return id, Valid
}

// find returns the entry under d.
func (ix *Index) find(d digestKey) (slot, *Identity, bool) {
	s := ix.shard(d)
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.m[d]
	if !ok {
		return e, nil, false
	}
	return e, s.ids[e.id], true
}

// markUsed records a successful verification of id at now.
func markUsed(id *Identity, now time.Time) {
	n := now.UnixNano()
	// Second precision is plenty for a value written once a minute, and
	// skipping the store keeps hot tokens from bouncing a cache line.
	if n-id.usage.lastSeen.Load() >= int64(time.Second) {
		id.usage.lastSeen.Store(n)
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

// IndexView is the part of an ApiToken that the auth endpoint decides on
// and an auth-only replica writes from (status.lastUsedAt): its identity,
// the spec that makes its Grant, revocation, duration and idle timeout, and the
// status that says which hashes verify until when. An auth-only replica
// caches ApiTokens as this view (IndexTransform), not whole: conditions,
// messages, annotations and the Secret's template are not kept. Index.Upsert
// reads nothing else; TestIndexViewDecidesAlike holds it to that.
func IndexView(at *tokensv1alpha1.ApiToken) *tokensv1alpha1.ApiToken {
	return &tokensv1alpha1.ApiToken{
		TypeMeta: at.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: at.Name, Namespace: at.Namespace, UID: at.UID,
			ResourceVersion: at.ResourceVersion, Generation: at.Generation, DeletionTimestamp: at.DeletionTimestamp},
		Spec: tokensv1alpha1.ApiTokenSpec{Type: at.Spec.Type, Scopes: at.Spec.Scopes, Audience: at.Spec.Audience,
			Presentation: at.Spec.Presentation, Duration: at.Spec.Duration, IdleTimeout: at.Spec.IdleTimeout, Revoked: at.Spec.Revoked},
		Status: tokensv1alpha1.ApiTokenStatus{Phase: at.Status.Phase, IssuedAt: at.Status.IssuedAt, ExpiresAt: at.Status.ExpiresAt,
			LastUsedAt: at.Status.LastUsedAt, Verification: at.Status.Verification},
	}
}

// IndexTransform is the cache transform of an auth-only replica's
// ApiTokens: IndexView. Other objects pass unchanged.
func IndexTransform(in any) (any, error) {
	if at, ok := in.(*tokensv1alpha1.ApiToken); ok {
		return IndexView(at), nil
	}
	return in, nil
}
