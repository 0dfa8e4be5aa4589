package fault

import (
	"math/rand/v2"
	"strings"
	"time"
)

// Rule decides the fate of one request on a proxied port. It is called
// once per request (per HTTP/2 stream), from many goroutines at once.
type Rule interface {
	Decide(r Request) Decision
}

// Request is what a rule looks at, for HTTP/1.1 and HTTP/2 alike.
type Request interface {
	Method() string
	// Path is the request target's path, without query or fragment.
	Path() string
	// Header returns the first value of a header; the name is
	// case-insensitive.
	Header(name string) (string, bool)
	// GRPC reports a gRPC call: HTTP/2 with content-type application/grpc.
	GRPC() bool
}

// Decision is what happens to one request.
type Decision struct {
	// Matched: the fault applies to the request (it is counted as faulted,
	// whatever the draw gave). False passes it untouched.
	Matched bool
	// Delay to add, spent before the request is sent on, or, with
	// DelayResponse (HTTP/1.1 only), while holding the response.
	Delay         time.Duration
	DelayResponse bool
	// Answer, when set, is sent to the client after the delay instead of
	// forwarding the request.
	Answer *Answer
	// Rewrite, when set (and Answer is not), changes the application's
	// response (HTTP/1.1).
	Rewrite *Rewrite
}

// Answer is a response the proxy makes itself.
type Answer struct {
	// Status is the HTTP status (200 for a gRPC answer).
	Status int
	// Header holds extra response headers, in canonical form.
	Header []HeaderField
	Body   []byte
	// GRPCStatus, when not zero, makes it a trailers-only gRPC response
	// carrying grpc-status and grpc-message.
	GRPCStatus  int
	GRPCMessage string
}

// HeaderField is one header.
type HeaderField struct {
	Name, Value string
}

// HeaderMatch matches a request header by name (case-insensitive), and by
// exact value unless Value is empty, in which case the header only has to
// be present.
type HeaderMatch struct {
	Name  string
	Value string
}

func headersMatch(hm []HeaderMatch, r Request) bool {
	for _, h := range hm {
		v, ok := r.Header(h.Name)
		if !ok || (h.Value != "" && v != h.Value) {
			return false
		}
	}
	return true
}

// Delay is the delay part of HTTP and gRPC faults: uniform in
// [Average-Variation, Average+Variation], for a Rate share of requests.
type Delay struct {
	Average, Variation time.Duration
	Rate               float64 // 0-1
}

func (d Delay) validate() error {
	switch {
	case d.Average < 0:
		return Invalid("averageDelay must not be negative, got %s", d.Average)
	case d.Variation < 0:
		return Invalid("delayVariation must not be negative, got %s", d.Variation)
	case d.Variation > d.Average:
		return Invalid("delayVariation (%s) must not be greater than averageDelay (%s)", d.Variation, d.Average)
	case d.Average > MaxDuration:
		return Invalid("averageDelay must be at most %s, got %s", MaxDuration, d.Average)
	}
	return rate("delayRate", d.Rate)
}

// draw returns the delay of one matched request.
func (d Delay) draw() time.Duration {
	if d.Average <= 0 || (d.Rate < 1 && rand.Float64() >= d.Rate) {
		return 0
	}
	if d.Variation <= 0 {
		return d.Average
	}
	return d.Average + time.Duration(rand.Int64N(2*int64(d.Variation)+1)) - d.Variation
}

func rate(field string, v float64) error {
	if v < 0 || v > 1 || v != v {
		return Invalid("%s must be in the range [0, 1], got %v", field, v)
	}
	return nil
}

// draw reports whether a Bernoulli trial of probability p succeeds.
func draw(p float64) bool { return p >= 1 || (p > 0 && rand.Float64() < p) }

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
