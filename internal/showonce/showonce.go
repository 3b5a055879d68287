// Package showonce seals a show-once token to its creator: the kubectl
// plugin makes an X25519 key pair in memory and names the public key in
// spec.showOnce.publicKey; the operator seals the token, and a proof of
// pickup, to that key (Seal) and writes only the sealed box into the
// ApiToken's status; the plugin opens it (Open), prints the token once and
// acknowledges with the proof, which only the holder of the private key
// can know. No Secret ever holds the token.
//
// The box is ECIES over X25519: an ephemeral key pair per box, HKDF-SHA256
// over the shared secret and both public keys, AES-256-GCM with the
// ApiToken's namespace, name and UID as additional data, so that a box is
// opened only as the box of the ApiToken it was made for.
//
// It is pure: the standard library only, no logging.
package showonce

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
)

// KeySize is the length of an X25519 public key.
const KeySize = 32

// ProofSize is the length of a pickup proof, in random bytes.
const ProofSize = 32

// version starts every box and names the construction.
const version byte = 1

// info binds the derived key to this use.
const info = "apitoken-operator show-once v1"

// ParsePublicKey decodes spec.showOnce.publicKey (standard base64 of 32
// bytes) into an X25519 key, refusing a key of another length, the
// all-zero key and the low-order points that make every shared secret
// zero (the box would be sealed to no one, or to everyone).
func ParsePublicKey(encoded string) (*ecdh.PublicKey, error) {
	raw, err := base64.StdEncoding.Strict().DecodeString(encoded)
	if err != nil {
		return nil, errors.New("must be standard base64 (32 bytes: an X25519 public key)")
	}
	if len(raw) != KeySize {
		return nil, fmt.Errorf("must be an X25519 public key of %d bytes, not %d", KeySize, len(raw))
	}
	pub, err := ecdh.X25519().NewPublicKey(raw)
	if err != nil {
		return nil, errors.New("must be an X25519 public key")
	}
	// A low-order point (the all-zero key among them) gives an all-zero
	// shared secret with every private key, which ECDH refuses.
	probe, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if _, err := probe.ECDH(pub); err != nil {
		return nil, errors.New("is not a usable X25519 public key (a low-order point, such as all zeros)")
	}
	return pub, nil
}

// GenerateKey returns a new private key and its public key as
// spec.showOnce.publicKey takes it.
func GenerateKey() (*ecdh.PrivateKey, string, error) {
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", err
	}
	return priv, base64.StdEncoding.EncodeToString(priv.PublicKey().Bytes()), nil
}

// NewProof returns a fresh pickup proof, base64url without padding (an
// annotation value).
func NewProof() (string, error) {
	b := make([]byte, ProofSize)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Binding is what a box is made for: the ApiToken's namespace, name and
// UID, as additional data that a box made for another object fails.
func Binding(namespace, name, uid string) []byte {
	return []byte(namespace + "/" + name + "/" + uid)
}

// Seal seals token and proof to pub for the ApiToken binding names, and
// returns the box as standard base64.
func Seal(pub *ecdh.PublicKey, binding []byte, token, proof string) (string, error) {
	if strings.ContainsRune(token, '\n') || strings.ContainsRune(proof, '\n') {
		return "", errors.New("token and proof must be one line each")
	}
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	aead, err := boxCipher(eph, pub, eph.PublicKey().Bytes(), pub.Bytes())
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return "", err
	}
	out := append([]byte{version}, eph.PublicKey().Bytes()...)
	out = append(out, nonce...)
	out = aead.Seal(out, nonce, []byte(token+"\n"+proof), binding)
	return base64.StdEncoding.EncodeToString(out), nil
}

// Open opens a box Seal made for priv's public key and binding, and
// returns the token and the proof. Any other box, key or binding fails,
// with an error that says nothing of the content.
func Open(priv *ecdh.PrivateKey, binding []byte, box string) (token, proof string, err error) {
	raw, err := base64.StdEncoding.DecodeString(box)
	if err != nil || len(raw) < 1+KeySize || raw[0] != version {
		return "", "", errors.New("not a sealed show-once token")
	}
	eph, err := ecdh.X25519().NewPublicKey(raw[1 : 1+KeySize])
	if err != nil {
		return "", "", errors.New("not a sealed show-once token")
	}
	aead, err := boxCipher(priv, eph, eph.Bytes(), priv.PublicKey().Bytes())
	if err != nil {
		return "", "", errors.New("the sealed token cannot be opened with this key")
	}
	rest := raw[1+KeySize:]
	if len(rest) < aead.NonceSize() {
		return "", "", errors.New("not a sealed show-once token")
	}
	plain, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], binding)
	if err != nil {
		return "", "", errors.New("the sealed token cannot be opened with this key, or was not made for this ApiToken")
	}
	tok, pr, ok := bytes.Cut(plain, []byte("\n"))
	if !ok {
		return "", "", errors.New("not a sealed show-once token")
	}
	return string(tok), string(pr), nil
}

// boxCipher derives the box's AES-256-GCM from the shared secret of own
// and peer, bound to the ephemeral and the recipient's public keys.
func boxCipher(own *ecdh.PrivateKey, peer *ecdh.PublicKey, ephemeral, recipient []byte) (cipher.AEAD, error) {
	shared, err := own.ECDH(peer)
	if err != nil {
		return nil, err
	}
	salt := append(append([]byte{}, ephemeral...), recipient...)
	key, err := hkdf.Key(sha256.New, shared, salt, info, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
