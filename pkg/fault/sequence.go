package fault

import (
	"sync"
)

// FailFirst makes "retries fix it" deterministic: the first Attempts
// attempts of each logical request get the fault's error, later attempts
// pass. A logical request is named by the value of KeyHeader (e.g.
// Idempotency-Key) when set, else by its method and path (for gRPC, its
// full method); a request without the header is one of its own.
type FailFirst struct {
	Attempts  int
	KeyHeader string

	mu       sync.Mutex
	attempts map[string]int // logical request → attempts seen
}

// MaxFailFirst bounds Attempts.
const MaxFailFirst = 100

// maxSequences bounds the logical requests a fault remembers; past it, it
// forgets them all and starts over (documented: a run of more distinct
// requests than this sees some fail again).
const maxSequences = 1 << 16

func (s *FailFirst) validate(prefix string) error {
	if s == nil {
		return nil
	}
	if s.Attempts < 1 || s.Attempts > MaxFailFirst {
		return Invalid("%s.attempts must be in 1-%d, got %d", prefix, MaxFailFirst, s.Attempts)
	}
	if s.KeyHeader != "" && !validHeaderName(s.KeyHeader) {
		return Invalid("%s.keyHeader: %q is not a valid header name", prefix, s.KeyHeader)
	}
	return nil
}

// fails counts one attempt of r's logical request and reports whether it
// is one of the first Attempts.
func (s *FailFirst) fails(r Request) bool {
	key := r.Method() + " " + r.Path()
	if s.KeyHeader != "" {
		v, ok := r.Header(s.KeyHeader)
		if !ok {
			return true // no key: every attempt is a first one
		}
		key = v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.attempts == nil || len(s.attempts) >= maxSequences {
		s.attempts = map[string]int{}
	}
	s.attempts[key]++
	return s.attempts[key] <= s.Attempts
}
