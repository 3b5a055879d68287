package token

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash"
	"sync"
)

// DigestSize is the size of an HMAC-SHA512 digest.
const DigestSize = sha512.Size

// Digest is the keyed hash of a token. It deliberately has no String
// method, so that printing one by mistake shows bytes, not a usable record.
type Digest [DigestSize]byte

// Encode returns the digest in standard base64, as recorded in status.
func (d Digest) Encode() string { return base64.StdEncoding.EncodeToString(d[:]) }

// Equal compares two digests in constant time.
func (d Digest) Equal(o Digest) bool { return subtle.ConstantTimeCompare(d[:], o[:]) == 1 }

// DecodeDigest parses a digest written by Encode.
func DecodeDigest(s string) (Digest, error) {
	var d Digest
	if base64.StdEncoding.DecodedLen(len(s)) < DigestSize {
		return d, errors.New("digest is too short")
	}
	n, err := base64.StdEncoding.Decode(d[:], []byte(s))
	if err != nil || n != DigestSize {
		return Digest{}, errors.New("digest is not a base64 HMAC-SHA512")
	}
	return d, nil
}

// Hasher computes HMAC-SHA512 digests keyed with the operator's salt, as
// Strapi hashes API tokens with API_TOKEN_SALT. It is safe for concurrent
// use and does not allocate per call.
type Hasher struct {
	id   string
	key  []byte
	pool sync.Pool
}

type hmacState struct {
	mac hash.Hash
	buf [128]byte
	sum [DigestSize]byte
}

// NewHasher returns a Hasher keyed with salt. The salt is copied.
func NewHasher(salt []byte) *Hasher {
	key := append([]byte(nil), salt...)
	h := &Hasher{id: SaltID(key), key: key}
	h.pool.New = func() any { return &hmacState{mac: hmac.New(sha512.New, key)} }
	return h
}

// SaltID returns a short, one-way identifier of the salt, so that records
// can say which salt they were made with without revealing it.
func (h *Hasher) SaltID() string { return h.id }

// Hash returns HMAC-SHA512(salt, token).
func (h *Hasher) Hash(token string) Digest {
	st := h.pool.Get().(*hmacState)
	st.mac.Reset()
	if len(token) <= len(st.buf) {
		n := copy(st.buf[:], token)
		st.mac.Write(st.buf[:n])
	} else {
		st.mac.Write([]byte(token))
	}
	var d Digest
	copy(d[:], st.mac.Sum(st.sum[:0]))
	h.pool.Put(st)
	return d
}

// sealLabel separates seals from token digests under the same salt.
const sealLabel = "apitoken-operator seal"

// Seal returns a MAC under the salt of parts (joined unambiguously), in
// base64: 256 bits of HMAC-SHA512(salt, label, parts...). Without the salt
// nobody can make one for chosen parts.
func (h *Hasher) Seal(parts ...string) string {
	m := hmac.New(sha512.New, h.key)
	m.Write([]byte(sealLabel))
	for _, p := range parts {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		m.Write(n[:])
		m.Write([]byte(p))
	}
	return base64.StdEncoding.EncodeToString(m.Sum(nil)[:32])
}

// VerifySeal reports, in constant time, whether seal is Seal(parts...).
func (h *Hasher) VerifySeal(seal string, parts ...string) bool {
	return subtle.ConstantTimeCompare([]byte(seal), []byte(h.Seal(parts...))) == 1
}

// SaltID returns the first 8 bytes, in hex, of HMAC-SHA256(salt, a fixed
// label): the same salt always gives the same identifier, and the
// identifier tells nothing about the salt.
func SaltID(salt []byte) string {
	m := hmac.New(sha256.New, salt)
	m.Write([]byte("apitoken-operator salt identifier"))
	return hex.EncodeToString(m.Sum(nil)[:8])
}
