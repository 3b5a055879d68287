package token

import "unsafe"

// unsafeBytes views s as a byte slice without copying. Callers must not
// modify the result; it lets the hot verification path stay allocation-free.
func unsafeBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s)) //nolint:gosec // read-only view, audited: callers only hash or checksum it
}
