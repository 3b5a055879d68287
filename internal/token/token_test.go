package token

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestGenerateFormat(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		tok, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		if len(tok) != Length || !strings.HasPrefix(tok, Prefix) {
			t.Fatalf("token has wrong shape: len %d", len(tok))
		}
		if err := Parse(tok); err != nil {
			t.Fatalf("generated token does not parse: %v", err)
		}
		if seen[tok] {
			t.Fatal("duplicate token")
		}
		seen[tok] = true
	}
}

func TestGenerateUsesReaderAndRejectsBias(t *testing.T) {
	// 0xff bytes are above the rejection threshold and must be skipped.
	src := bytes.NewReader(append(bytes.Repeat([]byte{0xff}, 64), bytes.Repeat([]byte{61}, 64)...))
	tok, err := GenerateFrom(src)
	if err != nil {
		t.Fatal(err)
	}
	if got := tok[len(Prefix) : len(Prefix)+RandomLength]; got != strings.Repeat("z", RandomLength) {
		t.Fatalf("random part = %q, want all z", got)
	}
	if _, err := GenerateFrom(bytes.NewReader(nil)); err == nil {
		t.Fatal("want an error when the random source fails")
	}
}

func TestParse(t *testing.T) {
	good, _ := Generate()
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	cases := []struct {
		name string
		in   string
		want error
	}{
		{"good", good, nil},
		{"empty", "", errPrefix},
		{"foreign prefix", "ghp_" + good[4:], errPrefix},
		{"truncated", good[:Length-1], errLength},
		{"extra", good + "a", errLength},
		{"charset", good[:10] + "-" + good[11:], errCharset},
		{"typo in random part", flip(good, 10), errChecksum},
		{"typo in checksum", flip(good, Length-1), errChecksum},
		{"swapped neighbours", swapNeighbours(good), errChecksum},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Parse(c.in)
			if !errors.Is(err, c.want) {
				t.Fatalf("Parse = %v, want %v", err, c.want)
			}
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if err != nil && len(c.in) > 8 && strings.Contains(err.Error(), c.in) {
				t.Fatal("error message contains the token")
			}
		})
	}
}

// swapNeighbours swaps the first two different neighbouring characters of
// the random part, a typical typo.
func swapNeighbours(tok string) string {
	b := []byte(tok)
	for i := len(Prefix); i < len(Prefix)+RandomLength-1; i++ {
		if b[i] != b[i+1] {
			b[i], b[i+1] = b[i+1], b[i]
			break
		}
	}
	return string(b)
}

func TestHasher(t *testing.T) {
	a := NewHasher([]byte("salt-a"))
	b := NewHasher([]byte("salt-b"))
	tok, _ := Generate()
	if !a.Hash(tok).Equal(a.Hash(tok)) {
		t.Fatal("hash is not deterministic")
	}
	if a.Hash(tok).Equal(b.Hash(tok)) {
		t.Fatal("different salts give the same hash")
	}
	if a.SaltID() == b.SaltID() || a.SaltID() != SaltID([]byte("salt-a")) || len(a.SaltID()) != 16 {
		t.Fatalf("bad salt ids %q %q", a.SaltID(), b.SaltID())
	}
	// Known answer: HMAC-SHA512("key", "The quick brown fox jumps over the lazy dog"), as openssl dgst -sha512 -hmac key prints it.
	k := NewHasher([]byte("key"))
	got := k.Hash("The quick brown fox jumps over the lazy dog")
	const want = "tCrwkFe6weLUFwjkipAuCbX/fxKrQopP6GZTxz3SSPuC+UilSfe3kaW0GRXuTR7Dk1NX5OIxclDQNyr6Lr7rOg=="
	if got.Encode() != want {
		t.Fatalf("HMAC-SHA512 = %s", got.Encode())
	}
	d, err := DecodeDigest(got.Encode())
	if err != nil || !d.Equal(got) {
		t.Fatalf("DecodeDigest round trip: %v", err)
	}
	for _, bad := range []string{"", "abc", strings.Repeat("!", 88)} {
		if _, err := DecodeDigest(bad); err == nil {
			t.Fatalf("DecodeDigest(%q) accepted", bad)
		}
	}
	// Long input takes the slow path and still agrees with itself.
	long := strings.Repeat("x", 300)
	if !k.Hash(long).Equal(k.Hash(long)) {
		t.Fatal("long input not deterministic")
	}
}

func TestHashDoesNotAllocate(t *testing.T) {
	h := NewHasher([]byte("salt"))
	tok, _ := Generate()
	h.Hash(tok)
	if n := testing.AllocsPerRun(1000, func() { h.Hash(tok) }); n != 0 {
		t.Fatalf("Hash allocates %v times", n)
	}
	if n := testing.AllocsPerRun(1000, func() { _ = Parse(tok) }); n != 0 {
		t.Fatalf("Parse allocates %v times", n)
	}
}
