package token

import (
	"crypto/rand"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Token format: Prefix, 43 base62 characters carrying 256 random bits, and a
// 6-character base62 CRC32 of those characters, in the manner of GitHub's
// ghp_ tokens. The alphabet has no punctuation, so a double click selects the
// whole token, and the fixed prefix lets secret scanners find leaked tokens.
const (
	// Prefix starts every token.
	Prefix = "atk_"
	// RandomLength is the number of base62 characters of the random part:
	// 62^43 > 2^256.
	RandomLength = 43
	// ChecksumLength is the number of base62 characters of the CRC32.
	ChecksumLength = 6
	// Length is the length of every token.
	Length = len(Prefix) + RandomLength + ChecksumLength
)

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// ErrMalformed is wrapped by every error Parse returns.
var ErrMalformed = errors.New("malformed token")

var (
	errPrefix   = fmt.Errorf("%w: it does not start with %q", ErrMalformed, Prefix)
	errLength   = fmt.Errorf("%w: it is not %d characters long", ErrMalformed, Length)
	errCharset  = fmt.Errorf("%w: it contains a character other than A-Z, a-z, 0-9", ErrMalformed)
	errChecksum = fmt.Errorf("%w: its checksum does not match (mistyped or not a token)", ErrMalformed)
)

// Generate returns a new token with 256 bits from crypto/rand.
func Generate() (string, error) {
	return GenerateFrom(rand.Reader)
}

// GenerateFrom returns a new token whose random part is read from r. Bytes
// are drawn by rejection sampling so that every character is uniform.
func GenerateFrom(r io.Reader) (string, error) {
	var out [Length]byte
	copy(out[:], Prefix)
	random := out[len(Prefix) : len(Prefix)+RandomLength]
	var buf [64]byte
	n := 0
	for n < RandomLength {
		if _, err := io.ReadFull(r, buf[:]); err != nil {
			return "", fmt.Errorf("reading random bytes: %w", err)
		}
		for _, b := range buf {
			if b >= 248 { // 248 = 4*62: keep the modulo unbiased
				continue
			}
			random[n] = alphabet[b%62]
			n++
			if n == RandomLength {
				break
			}
		}
	}
	putChecksum(out[len(Prefix)+RandomLength:], crc32.ChecksumIEEE(random))
	return string(out[:]), nil
}

// Parse checks that s is a well-formed token: prefix, length, alphabet and
// checksum. It is cheap (no hashing) and is meant to refuse typos and
// foreign strings before any lookup. The error never contains s.
func Parse(s string) error {
	if len(s) != Length {
		if len(s) < len(Prefix) || s[:len(Prefix)] != Prefix {
			return errPrefix
		}
		return errLength
	}
	if s[:len(Prefix)] != Prefix {
		return errPrefix
	}
	body := s[len(Prefix):]
	for i := 0; i < len(body); i++ {
		if decode[body[i]] == 0xff {
			return errCharset
		}
	}
	var want [ChecksumLength]byte
	putChecksum(want[:], crc32.ChecksumIEEE(unsafeBytes(body[:RandomLength])))
	if string(want[:]) != body[RandomLength:] {
		return errChecksum
	}
	return nil
}

var decode = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = byte(i)
	}
	return t
}()

func putChecksum(dst []byte, sum uint32) {
	for i := ChecksumLength - 1; i >= 0; i-- {
		dst[i] = alphabet[sum%62]
		sum /= 62
	}
}
