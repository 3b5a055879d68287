package token

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Unlimited is the duration of a token that never expires.
const Unlimited = "unlimited"

const day = 24 * time.Hour

// ErrDuration is wrapped by every error ParseDuration and ParseSpan return.
var ErrDuration = errors.New("invalid duration")

// ParseDuration parses a token duration: "unlimited" (finite is false), or a
// positive span such as "7d", "30d", "36h", "1d12h" or "90m" (see ParseSpan).
func ParseDuration(s string) (d time.Duration, finite bool, err error) {
	if s == Unlimited {
		return 0, false, nil
	}
	d, err = ParseSpan(s)
	if err != nil {
		return 0, false, fmt.Errorf("%w; or %q", err, Unlimited)
	}
	return d, true, nil
}

// ParseSpan parses a positive span of days, hours and minutes, written as up
// to one of each in that order ("30d", "36h", "1d12h30m", "5m"). Each number
// is a positive integer without leading zeros. It refuses an empty string,
// zero, a sign, other units, and a total beyond what time.Duration holds.
func ParseSpan(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("%w: empty: must be a positive span such as 30d, 36h or 90m", ErrDuration)
	}
	var total time.Duration
	units := "dhm"
	rest := s
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 || i == len(rest) {
			return 0, fmt.Errorf("%w: %q: must be a positive span such as 30d, 36h or 90m", ErrDuration, s)
		}
		num, unit := rest[:i], rest[i]
		k := indexByte(units, unit)
		if k < 0 {
			return 0, fmt.Errorf("%w: %q: unit %q must be d, h or m, in that order, each at most once", ErrDuration, s, string(unit))
		}
		units = units[k+1:]
		if num[0] == '0' {
			return 0, fmt.Errorf("%w: %q: must be positive, without leading zeros", ErrDuration, s)
		}
		var per time.Duration
		switch unit {
		case 'd':
			per = day
		case 'h':
			per = time.Hour
		default:
			per = time.Minute
		}
		n, ok := atoiBounded(num, int64(math.MaxInt64/per))
		if !ok {
			return 0, fmt.Errorf("%w: %q: too long (at most about 292 years)", ErrDuration, s)
		}
		part := time.Duration(n) * per
		if total > math.MaxInt64-part {
			return 0, fmt.Errorf("%w: %q: too long (at most about 292 years)", ErrDuration, s)
		}
		total += part
		rest = rest[i+1:]
	}
	return total, nil
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// atoiBounded parses decimal digits, failing above max.
func atoiBounded(s string, max int64) (int64, bool) {
	var n int64
	for i := 0; i < len(s); i++ {
		d := int64(s[i] - '0')
		if n > (max-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}
