// Package authserver is the auth endpoint: an in-memory index of token
// hashes fed by the manager's cache of ApiTokens, and the HTTP handlers for
// forward auth and TokenReview. It reads no Secret and makes no API call
// per request.
package authserver

import (
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

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

// slot is an entry without its identity pointer: its lifecycle.Standing
// laid out flat, so that a slot stays 24 bytes.
type slot struct {
	id uint32
	// shared: more than one ApiToken records this digest (Index.shared);
	// it is refused for all of them, and the identity is none of theirs.
	shared  bool
	worth   lifecycle.Worth
	record  record
	idle    int64
	expires int64
}

// standing is what the hash of sl is worth (lifecycle.Assess).
func (sl slot) standing() lifecycle.Standing {
	return lifecycle.Standing{Worth: sl.worth, Idle: sl.idle, Expires: sl.expires}
}

// entry rebuilds the entry that sl holds. The caller holds s.mu.
func (s *shard) entry(sl slot) entry {
	return entry{id: s.ids[sl.id], Standing: sl.standing(), record: sl.record}
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
	sl.shared, sl.worth, sl.record, sl.idle, sl.expires = false, e.Worth, e.record, e.Idle, e.Expires
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
	// labelPrefix is --auth-identity-label-prefix: the ApiToken labels
	// under it are identity labels (identityLabels); empty: none.
	labelPrefix string

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

// WithIdentityLabels makes the labels under prefix (a label key prefix
// such as tokens.apitoken.dev/; ValidIdentityLabelPrefix) identity
// labels of the tokens indexed from now on. It returns ix.
func (ix *Index) WithIdentityLabels(prefix string) *Index {
	ix.labelPrefix = prefix
	return ix
}

// IdentityLabelPrefix is the prefix of WithIdentityLabels ("": none).
func (ix *Index) IdentityLabelPrefix() string { return ix.labelPrefix }

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
	g := ix.grant(&at.Spec, identityLabels(ix.labelPrefix, at.Labels))
	ix.release(obj.grant)
	obj.grant = g
	entries := ix.entriesOf(at, g, obj.usage)
	// Almost every ApiToken has none: no map is made for those (a relist
	// upserts every token). A hash Assess says is revoked (spec.revoked,
	// a deletion requested, revokedHash) stays so here even if the spec is
	// flipped back before any reconcile records the revocation.
	var dead map[digestKey]struct{}
	for d, e := range entries {
		if _, was := obj.dead[d]; was || e.Worth == lifecycle.Revoked {
			e.Worth = lifecycle.Revoked
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
	replacedPresented.DeleteLabelValues(key.Namespace, key.Name)
}

// Lookup verifies tok at now: format first (no hashing for a malformed
// token), then the keyed hash, then revocation, expiry and grace. The
// identity comes with Valid, and with Revoked, Expired and Inactive (to
// name the ApiToken in the audit log): check the verdict first.
func (ix *Index) Lookup(tok string, now time.Time) (*Identity, Verdict) {
	id, v, _ := ix.lookup(tok, now)
	return id, v
}

// lookup is Lookup, and says whether tok is a replaced or revoked token
// presented again (presentedAgain): a replacedHash is answered as
// Unknown, with no identity, as before the status kept it.
func (ix *Index) lookup(tok string, now time.Time) (*Identity, Verdict, again) {
	if token.Parse(tok) != nil {
		return nil, Malformed, again{}
	}
	h := ix.hasher()
	if h == nil {
		return nil, Unknown, again{} // no salt: fail closed
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
		return nil, Unknown, again{}
	case e.shared:
		return nil, Ambiguous, again{}
	}
	v := verdicts[e.standing().At(now.UnixNano())]
	a := presentedAgain(e.record, v, id)
	if e.record == recordReplaced {
		return nil, Unknown, a
	}
	return id, v, a
}

// verdicts is the Verdict of each lifecycle.Worth.
var verdicts = [...]Verdict{lifecycle.Valid: Valid, lifecycle.Expired: Expired, lifecycle.Inactive: Inactive, lifecycle.Revoked: Revoked}

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
