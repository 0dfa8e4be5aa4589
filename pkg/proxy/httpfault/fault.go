// Package httpfault is faultline's transparent HTTP/1.1 proxy: it forwards
// each request to the application unchanged and, for the requests a Fault
// matches, adds a delay or answers with an error instead.
//
// It reads as a pipeline (see serveConn): read one request head, decide,
// delay, answer with an error or forward the head and stream the body,
// relay the response, repeat. It parses only the request line, the status
// line and the headers that say where a message ends, and forwards the bytes
// it received, so Host, header order and case, chunk extensions and
// trailers reach the application as the client sent them, and responses
// reach the client as the application sent them. Upgrades (WebSocket) and
// cleartext HTTP/2 become raw byte tunnels.
package httpfault

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/textproto"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// DelayMode says where a delay is spent.
type DelayMode int

const (
	// DelayRequest holds the request before it goes to the application, as
	// a slow network or a queue in front of the service would. A client that
	// gives up during the delay never reaches the application. Default.
	DelayRequest DelayMode = iota
	// DelayResponse sends the request at once and holds the response, as
	// xk6-disruptor did: the application does the work, then waits.
	DelayResponse
)

// Fault is what to do to matching requests. The zero value passes every
// request through untouched.
type Fault struct {
	AverageDelay   time.Duration // mean added delay
	DelayVariation time.Duration // the delay is uniform in [avg-var, avg+var]
	DelayRate      float64       // fraction of matching requests delayed, 0-1
	DelayMode      DelayMode

	ErrorRate    float64     // fraction of matching requests answered with an error, 0-1
	ErrorCode    int         // status of the error response, 100-599
	ErrorBody    []byte      // body of the error response
	ErrorHeaders http.Header // extra headers of the error response

	// Exclude lists paths (exact, case-insensitive, as in xk6-disruptor)
	// that are never faulted.
	Exclude []string
	// Match narrows the fault to some requests; the zero Match matches all.
	Match Match
}

// Match selects requests. Each non-empty field must match.
type Match struct {
	// Paths: "/exact" or a prefix ending in "*" ("/api/*" matches /api/
	// and everything below it). Any one must match.
	Paths []string
	// Methods, case-sensitive as HTTP methods are. Any one must match.
	Methods []string
	// Headers must all match.
	Headers []HeaderMatch
}

// HeaderMatch matches a request header by name, and by exact value unless
// Value is empty, in which case the header only has to be present.
type HeaderMatch struct {
	Name  string
	Value string
}

// maxErrorBody bounds ErrorBody.
const maxErrorBody = 1 << 20

// Validate checks the fault and names the API field of the first problem.
// The error wraps errdefs.ErrInvalidArgument.
func (f *Fault) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{errdefs.ErrInvalidArgument}, args...)...)
	}
	if err := (timing{f.AverageDelay, f.DelayVariation, f.DelayRate, f.ErrorRate}).validate(); err != nil {
		return err
	}
	switch {
	case f.ErrorRate > 0 && (f.ErrorCode < 100 || f.ErrorCode > 599):
		return bad("errorCode must be an HTTP status in 100-599 when errorRate > 0, got %d", f.ErrorCode)
	case len(f.ErrorBody) > maxErrorBody:
		return bad("errorBody must be at most %d bytes, got %d", maxErrorBody, len(f.ErrorBody))
	case f.DelayMode != DelayRequest && f.DelayMode != DelayResponse:
		return bad("delayMode must be request or response")
	}
	for name, values := range f.ErrorHeaders {
		if !validHeaderName(name) {
			return bad("errorHeaders: %q is not a valid header name", name)
		}
		switch textproto.CanonicalMIMEHeaderKey(name) {
		case "Content-Length", "Transfer-Encoding", "Connection":
			return bad("errorHeaders: %s is set by faultline and cannot be given", name)
		}
		for _, v := range values {
			if strings.ContainsAny(v, "\r\n\x00") {
				return bad("errorHeaders: the value of %s must not contain CR, LF or NUL", name)
			}
		}
	}
	for _, p := range f.Exclude {
		if !strings.HasPrefix(p, "/") {
			return bad("exclude: %q is not a path (it must start with /)", p)
		}
	}
	for _, p := range f.Match.Paths {
		if !strings.HasPrefix(p, "/") {
			return bad("match path %q must start with /", p)
		}
		if i := strings.IndexByte(p, '*'); i >= 0 && i != len(p)-1 {
			return bad("match path %q: * is only allowed at the end, as a prefix match", p)
		}
	}
	for _, m := range f.Match.Methods {
		if !validHeaderName(m) {
			return bad("match method %q is not a valid HTTP method", m)
		}
	}
	for _, h := range f.Match.Headers {
		if !validHeaderName(h.Name) {
			return bad("match header %q is not a valid header name", h.Name)
		}
	}
	return nil
}

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

// request is what the decision looks at, for HTTP/1.1 and HTTP/2 alike.
type request interface {
	Method() string
	Path() string
	Header(name string) (string, bool)
}

// decision is what happens to one request.
type decision struct {
	faulted bool // matched and not excluded
	delay   time.Duration
	fail    bool
}

// timing draws the delay and the error of a matched request.
type timing struct {
	average, variation time.Duration
	delayRate          float64
	errorRate          float64
}

// validate checks the delay and rate fields shared by HTTP and gRPC faults.
func (t timing) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{errdefs.ErrInvalidArgument}, args...)...)
	}
	switch {
	case t.average < 0:
		return bad("averageDelay must not be negative, got %s", t.average)
	case t.variation < 0:
		return bad("delayVariation must not be negative, got %s", t.variation)
	case t.variation > t.average:
		return bad("delayVariation (%s) must not be greater than averageDelay (%s)", t.variation, t.average)
	case t.delayRate < 0 || t.delayRate > 1 || t.delayRate != t.delayRate:
		return bad("delayRate must be in the range [0, 1], got %v", t.delayRate)
	case t.errorRate < 0 || t.errorRate > 1 || t.errorRate != t.errorRate:
		return bad("errorRate must be in the range [0, 1], got %v", t.errorRate)
	}
	return nil
}

func (t timing) decide() decision {
	d := decision{faulted: true}
	if t.average > 0 && (t.delayRate >= 1 || rand.Float64() < t.delayRate) {
		d.delay = t.average
		if v := t.variation; v > 0 {
			d.delay += time.Duration(rand.Int64N(int64(2*v)+1)) - v
		}
	}
	d.fail = t.errorRate > 0 && rand.Float64() < t.errorRate
	return d
}

func (f *Fault) decide(req request) decision {
	if !f.matches(req) {
		return decision{}
	}
	return timing{f.AverageDelay, f.DelayVariation, f.DelayRate, f.ErrorRate}.decide()
}

func (f *Fault) matches(req request) bool {
	m := &f.Match
	if len(f.Exclude) == 0 && len(m.Paths) == 0 && len(m.Methods) == 0 && len(m.Headers) == 0 {
		return true
	}
	path := req.Path()
	for _, p := range f.Exclude {
		if strings.EqualFold(p, path) {
			return false
		}
	}
	if len(m.Paths) > 0 && !anyPathMatches(m.Paths, path) {
		return false
	}
	if len(m.Methods) > 0 && !contains(m.Methods, req.Method()) {
		return false
	}
	return headersMatch(m.Headers, req)
}

func headersMatch(hm []HeaderMatch, req request) bool {
	for _, h := range hm {
		v, ok := req.Header(h.Name)
		if !ok || (h.Value != "" && v != h.Value) {
			return false
		}
	}
	return true
}

func anyPathMatches(patterns []string, path string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(path, prefix) {
				return true
			}
		} else if p == path {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
