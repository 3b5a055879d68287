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
// positive span such as "7d", "30d", "2160h", "1d12h", "90m" or "30s" (see
// ParseSpan).
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

// MinSpan is the shortest span ParseSpan accepts.
const MinSpan = time.Second

// ParseSpan parses a positive span of days, hours, minutes and seconds,
// written as up to one of each in that order: this project's "30d",
// "1d12h", and the Kubernetes/Go duration strings "2160h", "90m", "30s",
// "1h30m" and "2160h0m0s" (as kubectl prints a metav1.Duration). Each
// number is a whole number without leading zeros; the total must be at
// least MinSpan. It refuses an empty string, a zero total, a sign, a
// fraction, other units (w, ms) and a total beyond what time.Duration
// holds.
func ParseSpan(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("%w: empty: must be a positive span such as 30d, 2160h, 90m or 30s", ErrDuration)
	}
	var total time.Duration
	units := "dhms"
	rest := s
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 || i == len(rest) {
			return 0, fmt.Errorf("%w: %q: must be a positive span such as 30d, 2160h, 90m or 30s", ErrDuration, s)
		}
		num, unit := rest[:i], rest[i]
		if unit == '.' {
			return 0, fmt.Errorf("%w: %q: use whole numbers, such as 90m instead of 1.5h", ErrDuration, s)
		}
		k := indexByte(units, unit)
		millis := unit == 'm' && i+1 < len(rest) && rest[i+1] == 's'
		if k < 0 || millis {
			u := string(unit)
			if millis {
				u = "ms"
			}
			return 0, fmt.Errorf("%w: %q: unit %q must be d, h, m or s, in that order, each at most once", ErrDuration, s, u)
		}
		units = units[k+1:]
		if len(num) > 1 && num[0] == '0' {
			return 0, fmt.Errorf("%w: %q: must be positive, without leading zeros", ErrDuration, s)
		}
		var per time.Duration
		switch unit {
		case 'd':
			per = day
		case 'h':
			per = time.Hour
		case 'm':
			per = time.Minute
		default:
			per = time.Second
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
	if total < MinSpan {
		return 0, fmt.Errorf("%w: %q: must be positive (at least %v)", ErrDuration, s, MinSpan)
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
