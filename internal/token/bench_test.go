package token

import "testing"

func BenchmarkGenerate(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Generate(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHash(b *testing.B) {
	h := NewHasher([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"))
	tok, _ := Generate()
	b.ReportAllocs()
	for b.Loop() {
		h.Hash(tok)
	}
}

func BenchmarkParse(b *testing.B) {
	tok, _ := Generate()
	b.Run("valid", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if Parse(tok) != nil {
				b.Fatal("refused")
			}
		}
	})
	bad := tok[:20] + "x" + tok[21:]
	if bad == tok {
		bad = tok[:20] + "y" + tok[21:]
	}
	b.Run("mistyped", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if Parse(bad) == nil {
				b.Fatal("accepted")
			}
		}
	})
}

func BenchmarkScopeMatch(b *testing.B) {
	set, _ := Granted(TypeCustom, []string{"articles:read", "orders:*", "users:update", "*:publish"})
	req := Scope{Resource: "orders", Action: "delete"}
	b.ReportAllocs()
	for b.Loop() {
		if !set.Allows(req) {
			b.Fatal("denied")
		}
	}
}
