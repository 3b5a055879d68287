package showonce

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestSealOpen(t *testing.T) {
	priv, pub64, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(pub64)
	if err != nil {
		t.Fatal(err)
	}
	proof, err := NewProof()
	if err != nil {
		t.Fatal(err)
	}
	bind := Binding("team-a", "ci", "uid-1")
	box, err := Seal(pub, bind, "atk_secret", proof)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(box, "atk_secret") || strings.Contains(box, proof) {
		t.Fatal("the box holds the plaintext")
	}
	tok, pr, err := Open(priv, bind, box)
	if err != nil || tok != "atk_secret" || pr != proof {
		t.Fatalf("Open = %q, %q, %v", tok, pr, err)
	}

	other, _, _ := GenerateKey()
	if _, _, err := Open(other, bind, box); err == nil {
		t.Error("another key opened the box")
	}
	if _, _, err := Open(priv, Binding("team-a", "ci", "uid-2"), box); err == nil {
		t.Error("the box opened for another ApiToken (UID)")
	}
	raw, _ := base64.StdEncoding.DecodeString(box)
	raw[len(raw)-1] ^= 1
	if _, _, err := Open(priv, bind, base64.StdEncoding.EncodeToString(raw)); err == nil {
		t.Error("a tampered box opened")
	}
	if _, _, err := Open(priv, bind, "not a box"); err == nil {
		t.Error("garbage opened")
	}
	box2, _ := Seal(pub, bind, "atk_secret", proof)
	if box2 == box {
		t.Error("two boxes of the same token are equal: no fresh ephemeral key or nonce")
	}
}

func TestParsePublicKeyRefuses(t *testing.T) {
	zero := base64.StdEncoding.EncodeToString(make([]byte, 32))
	one := make([]byte, 32)
	one[0] = 1 // the point of order 1 (u = 1)... a low-order point
	for name, key := range map[string]string{
		"empty":       "",
		"not base64":  "!!!",
		"short":       base64.StdEncoding.EncodeToString(make([]byte, 31)),
		"long":        base64.StdEncoding.EncodeToString(make([]byte, 33)),
		"all zeros":   zero,
		"low order 1": base64.StdEncoding.EncodeToString(one),
		"unpadded":    strings.TrimRight(zero, "="),
	} {
		if _, err := ParsePublicKey(key); err == nil {
			t.Errorf("%s: accepted %q", name, key)
		}
	}
}
