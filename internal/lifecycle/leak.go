package lifecycle

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// HashRef names a recorded hash (status.verification.hash, pendingHash or
// previousHash) where neither the token nor its hash may appear: a usage
// report's first use, a leak revocation. It is the first 128 bits of a
// SHA-256 of the encoded hash, in hex: enough to tell the record's hashes
// apart, nothing to verify a token with.
func HashRef(encoded string) string {
	sum := sha256.Sum256([]byte(encoded))
	return hex.EncodeToString(sum[:16])
}

// LeakRevoked reports whether a leak revocation in v
// (status.verification.leakRevocations) names the hash encoded: such a
// hash is revoked (Assess) from the moment the request is recorded,
// before the reconciler acts on it. The references are compared in
// constant time.
func LeakRevoked(v *tokensv1alpha1.Verification, encoded string) bool {
	if v == nil || encoded == "" || len(v.LeakRevocations) == 0 {
		return false
	}
	ref := []byte(HashRef(encoded))
	found := 0
	for i := range v.LeakRevocations {
		found |= subtle.ConstantTimeCompare(ref, []byte(v.LeakRevocations[i].Token))
	}
	return found == 1
}
