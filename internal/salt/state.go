package salt

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// Keys of the salt Secret's data.
const (
	// Key holds the current salt: every new hash and seal is made with it.
	Key = "salt"
	// PreviousKey holds the salt a planned rotation replaced. It verifies
	// hashes recorded before the rotation until PreviousUntilAnnotation,
	// and only if PreviousSealAnnotation proves the operator wrote it.
	PreviousKey = "previous"
	// NextKey, optional, is the salt the next rotation installs (to bring
	// your own, e.g. the value API_TOKEN_SALT will hold); without it the
	// operator generates one.
	NextKey = "next"
)

// Annotations of the salt Secret.
const (
	// RotateAnnotation asks for a planned rotation: a value not yet in
	// RotateHandledAnnotation is acted on once (as regenerate on an
	// ApiToken). The previous salt keeps verifying for the overlap.
	RotateAnnotation = "tokens.apitoken.dev/rotate-salt"
	// RotateHandledAnnotation records the last RotateAnnotation acted on.
	RotateHandledAnnotation = "tokens.apitoken.dev/rotate-salt-handled"
	// RotateEmergencyAnnotation asks for an emergency rotation: no overlap,
	// every token stops verifying at once and is re-issued.
	RotateEmergencyAnnotation = "tokens.apitoken.dev/rotate-salt-emergency"
	// RotateEmergencyHandledAnnotation records the last
	// RotateEmergencyAnnotation acted on.
	RotateEmergencyHandledAnnotation = "tokens.apitoken.dev/rotate-salt-emergency-handled"
	// PreviousUntilAnnotation (RFC 3339) ends the overlap of PreviousKey.
	PreviousUntilAnnotation = "tokens.apitoken.dev/previous-salt-valid-until"
	// PreviousSealAnnotation is a MAC, under the current salt, of the
	// previous salt's ID and PreviousUntilAnnotation: only the operator's
	// rotation writes one, so a previous salt written by anyone who does
	// not know the current salt is ignored.
	PreviousSealAnnotation = "tokens.apitoken.dev/previous-salt-seal"
	// ReplacesAnnotation lists (comma-separated) the IDs of the salts the
	// current one replaced. A token recorded under one of them is
	// re-issued; a token recorded under any other salt is held and
	// reported (SaltMismatch) until the salt is restored or its ID is
	// added here: that addition is how a lost salt is acknowledged.
	ReplacesAnnotation = "tokens.apitoken.dev/replaces-salt-ids"
)

// maxReplaced bounds ReplacesAnnotation: the oldest IDs are dropped.
const maxReplaced = 16

// previousSealLabel separates the previous salt's seal from token seals.
const previousSealLabel = "apitoken-operator previous salt"

// Generate returns a new salt: Size printable characters (base64url of
// 384 random bits), so that it can also be set as API_TOKEN_SALT.
func Generate() ([]byte, error) {
	raw := make([]byte, Size*3/4)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("generating salt: %w", err)
	}
	out := make([]byte, base64.RawURLEncoding.EncodedLen(len(raw)))
	base64.RawURLEncoding.Encode(out, raw)
	return out, nil
}

// State is one consistent view of the salt: the current salt, the
// previous one while a planned rotation's overlap runs, and the IDs of the
// salts the current one replaced. It holds salt bytes: it has no exported
// field, and prints and logs as its salt ID only.
type State struct {
	current  *token.Hasher
	salt     []byte
	previous *token.Hasher
	prevSalt []byte
	until    time.Time
	replaced []string
	// annotations are the salt Secret's tokens.apitoken.dev/ annotations,
	// kept to recreate the Secret as it was.
	annotations map[string]string
	// ignoredPrevious says why a previous salt in the Secret is not used.
	ignoredPrevious string
}

// String returns the salt ID, never the salt.
func (st *State) String() string { return "salt " + st.ID() }

// MarshalLog is what logr prints: the salt ID, never the salt.
func (st *State) MarshalLog() any { return st.String() }

// ID is the current salt's ID.
func (st *State) ID() string { return st.current.SaltID() }

// Hasher hashes and seals with the current salt.
func (st *State) Hasher() *token.Hasher { return st.current }

// PreviousAt returns the previous salt's hasher while its overlap runs at
// now, else nil. It only ever verifies hashes recorded before the rotation.
func (st *State) PreviousAt(now time.Time) *token.Hasher {
	if st.previous == nil || !now.Before(st.until) {
		return nil
	}
	return st.previous
}

// Overlap returns the previous salt's ID and the end of its overlap; ok is
// false when there is no (sealed) previous salt.
func (st *State) Overlap() (id string, until time.Time, ok bool) {
	if st.previous == nil {
		return "", time.Time{}, false
	}
	return st.previous.SaltID(), st.until, true
}

// Replaces reports whether the current salt replaced the salt id: the
// sealed previous salt, an ID listed in ReplacesAnnotation, or one this
// process saw replaced. Tokens recorded under such a salt are re-issued;
// under any other, they are held.
func (st *State) Replaces(id string) bool {
	if id == "" || id == st.ID() {
		return false
	}
	if st.previous != nil && st.previous.SaltID() == id {
		return true
	}
	return slices.Contains(st.replaced, id)
}

// Replaced returns the IDs of the salts the current one replaced.
func (st *State) Replaced() []string { return slices.Clone(st.replaced) }

// IgnoredPrevious says why the Secret's previous salt is not used, or "".
func (st *State) IgnoredPrevious() string { return st.ignoredPrevious }

// Secret returns the salt Secret ref as the state was read from it: the
// same salt bytes, the previous salt with its seal, and the annotations.
func (st *State) Secret(ref types.NamespacedName) *corev1.Secret {
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: ref.Name, Namespace: ref.Namespace,
			Labels:      map[string]string{v1alpha1.ManagedByLabel: v1alpha1.ManagedByValue},
			Annotations: maps.Clone(st.annotations),
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{Key: slices.Clone(st.salt)},
	}
	if len(st.prevSalt) > 0 {
		sec.Data[PreviousKey] = slices.Clone(st.prevSalt)
	}
	if ids := strings.Join(st.replaced, ","); ids != "" {
		if sec.Annotations == nil {
			sec.Annotations = map[string]string{}
		}
		sec.Annotations[ReplacesAnnotation] = ids
	}
	return sec
}

// errNoSaltKey: the Secret holds no salt.
var errNoSaltKey = errors.New("has no non-empty key \"" + Key + "\"")

// FromSecret reads the state a salt Secret holds. A previous salt is used
// only with a well-formed deadline and a seal that verifies under the
// current salt (else IgnoredPrevious says why).
func FromSecret(sec *corev1.Secret) (*State, error) {
	salt := sec.Data[Key]
	if len(salt) == 0 {
		return nil, errNoSaltKey
	}
	st := &State{current: token.NewHasher(salt), salt: slices.Clone(salt), annotations: map[string]string{}}
	for k, v := range sec.Annotations {
		if strings.HasPrefix(k, "tokens.apitoken.dev/") {
			st.annotations[k] = v
		}
	}
	st.replaced = parseIDs(sec.Annotations[ReplacesAnnotation], st.ID())
	if prev := sec.Data[PreviousKey]; len(prev) > 0 {
		at := sec.Annotations[PreviousUntilAnnotation]
		until, err := time.Parse(time.RFC3339, at)
		switch {
		case err != nil:
			st.ignoredPrevious = "its " + PreviousUntilAnnotation + " annotation is missing or not RFC 3339"
		case !st.current.VerifySeal(sec.Annotations[PreviousSealAnnotation], previousSealParts(token.SaltID(prev), at)...):
			st.ignoredPrevious = "its " + PreviousSealAnnotation + " was not made by the operator with the current salt"
		default:
			st.previous, st.prevSalt, st.until = token.NewHasher(prev), slices.Clone(prev), until
		}
	}
	return st, nil
}

// withWitnessed returns st with the IDs of salts this process saw
// replaced added to the replaced ones (not the current one).
func (st *State) withWitnessed(ids []string) *State {
	for _, id := range ids {
		if id != st.ID() && !slices.Contains(st.replaced, id) {
			st.replaced = append(st.replaced, id)
		}
	}
	return st
}

// parseIDs reads a comma-separated list of salt IDs, dropping malformed
// ones, duplicates and self.
func parseIDs(s, self string) []string {
	var out []string
	for _, id := range strings.Split(s, ",") {
		id = strings.TrimSpace(id)
		if validID(id) && id != self && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// validID reports whether id looks like token.SaltID's output.
func validID(id string) bool {
	if len(id) != 16 {
		return false
	}
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func previousSealParts(previousID, until string) []string {
	return []string{previousSealLabel, previousID, until}
}

// Request is a rotation asked for on the salt Secret.
type Request int

const (
	// NoRequest: nothing asked.
	NoRequest Request = iota
	// Planned: the previous salt keeps verifying for the overlap.
	Planned
	// Emergency: no overlap.
	Emergency
)

// Requested returns the rotation the Secret asks for: an emergency one
// wins over a planned one.
func Requested(sec *corev1.Secret) Request {
	a := sec.Annotations
	switch {
	case a[RotateEmergencyAnnotation] != "" && a[RotateEmergencyAnnotation] != a[RotateEmergencyHandledAnnotation]:
		return Emergency
	case a[RotateAnnotation] != "" && a[RotateAnnotation] != a[RotateHandledAnnotation]:
		return Planned
	}
	return NoRequest
}

// Rotate makes next the current salt of sec, at now. With overlap > 0 the
// replaced salt becomes the previous one, sealed under next, until
// now+overlap (to the second); with 0 (an emergency) no previous
// salt is kept. The replaced salt's ID is added to ReplacesAnnotation,
// both requests are marked handled, and NextKey is consumed.
func Rotate(sec *corev1.Secret, next []byte, now time.Time, overlap time.Duration) {
	old := sec.Data[Key]
	oldID := token.SaltID(old)
	if sec.Annotations == nil {
		sec.Annotations = map[string]string{}
	}
	a := sec.Annotations
	ids := append([]string{oldID}, parseIDs(a[ReplacesAnnotation], "")...)
	ids = parseIDs(strings.Join(ids, ","), token.SaltID(next))
	if len(ids) > maxReplaced {
		ids = ids[:maxReplaced]
	}
	a[ReplacesAnnotation] = strings.Join(ids, ",")
	sec.Data = map[string][]byte{Key: slices.Clone(next)}
	delete(a, PreviousUntilAnnotation)
	delete(a, PreviousSealAnnotation)
	if overlap > 0 && len(old) > 0 {
		until := now.Add(overlap).Truncate(time.Second).UTC().Format(time.RFC3339)
		sec.Data[PreviousKey] = slices.Clone(old)
		a[PreviousUntilAnnotation] = until
		a[PreviousSealAnnotation] = token.NewHasher(next).Seal(previousSealParts(oldID, until)...)
	}
	if v := a[RotateAnnotation]; v != "" {
		a[RotateHandledAnnotation] = v
	}
	if v := a[RotateEmergencyAnnotation]; v != "" {
		a[RotateEmergencyHandledAnnotation] = v
	}
}

// PruneExpired removes the previous salt (and its annotations) from sec
// once its sealed overlap has ended at now, and reports whether it did.
// A previous salt that is not sealed is left alone (it is never used).
func PruneExpired(sec *corev1.Secret, now time.Time) bool {
	st, err := FromSecret(sec)
	if err != nil || st.previous == nil || now.Before(st.until) {
		return false
	}
	delete(sec.Data, PreviousKey)
	delete(sec.Annotations, PreviousUntilAnnotation)
	delete(sec.Annotations, PreviousSealAnnotation)
	return true
}

// NameReplaced adds to sec's ReplacesAnnotation the IDs in ids it lacks
// (other than its current salt's), and reports whether it did.
func NameReplaced(sec *corev1.Secret, ids []string) bool {
	self := token.SaltID(sec.Data[Key])
	have := parseIDs(sec.Annotations[ReplacesAnnotation], self)
	var added []string
	for _, id := range ids {
		if validID(id) && id != self && !slices.Contains(have, id) && !slices.Contains(added, id) {
			added = append(added, id)
		}
	}
	if len(added) == 0 {
		return false
	}
	// Newest first, as Rotate writes them; the oldest are dropped.
	merged := append(added, have...)
	if len(merged) > maxReplaced {
		merged = merged[:maxReplaced]
	}
	if sec.Annotations == nil {
		sec.Annotations = map[string]string{}
	}
	sec.Annotations[ReplacesAnnotation] = strings.Join(merged, ",")
	return true
}
