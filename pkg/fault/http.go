package fault

import (
	"net/textproto"
	"strings"
	"sync"
)

// HTTP delays or fails the HTTP requests to a port (HTTP/1.1 and HTTP/2,
// gRPC calls included). Fields follow xk6-disruptor's HTTPFault; the rest
// are faultline's.
type HTTP struct {
	Port  uint16
	Delay Delay
	// DelayResponse spends the delay holding the application's response
	// instead of the request (HTTP/1.1; HTTP/2 always delays requests).
	DelayResponse bool

	ErrorRate   float64 // share of matching requests answered with the error
	ErrorStatus int     // 200-599; 204 and 304 without a body
	ErrorBody   []byte
	// ErrorHeaders are extra headers of injected errors (canonical names).
	ErrorHeaders []HeaderField

	// Exclude lists paths never faulted: exact, case-insensitive, as in
	// xk6-disruptor.
	Exclude []string
	// Match narrows the fault to some requests; the zero Match matches all.
	Match Match
	// FailFirst, when set, answers the first attempts of each logical
	// request with the error instead of ErrorRate.
	FailFirst *FailFirst
	// Rewrite, when set, changes the application's response to matching
	// requests that are neither delayed-and-answered nor errored.
	Rewrite *Rewrite
	// Timeline, when set, replaces Delay and the error fields: each phase's
	// delay and error for its duration.
	Timeline *Timeline
	// KeepConnections leaves connections established before the fault
	// alone; by default they are reset so that their clients reconnect
	// through the proxy.
	KeepConnections bool

	answerOnce sync.Once
	answer     *Answer
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

// MaxErrorBody bounds an injected error's body.
const MaxErrorBody = 1 << 20

func (f *HTTP) Kind() Kind              { return KindHTTP }
func (f *HTTP) Claim() Claim            { return Claim{Proxy: true, Port: f.Port} }
func (f *HTTP) ResetsConnections() bool { return !f.KeepConnections }

// Bodyless reports the statuses that never carry content (RFC 9110 §15.3.5, §15.4.5).
func Bodyless(status int) bool { return status == 204 || status == 304 }

func canonical(name string) string { return textproto.CanonicalMIMEHeaderKey(name) }

// Validate checks every field and names the API field of the first
// problem; the error is an Invalid one.
func (f *HTTP) Validate() error {
	if f.Port == 0 {
		return Invalid("port must be in 1-65535, got 0")
	}
	if err := f.Delay.validate(); err != nil {
		return err
	}
	if err := rate("errorRate", f.ErrorRate); err != nil {
		return err
	}
	if err := f.FailFirst.validate("failFirst"); err != nil {
		return err
	}
	if err := f.Rewrite.validate(); err != nil {
		return err
	}
	if f.Timeline != nil {
		switch {
		case f.Delay.Average > 0 || f.ErrorRate > 0 || f.ErrorStatus != 0 || len(f.ErrorBody) > 0 || len(f.ErrorHeaders) > 0:
			return Invalid("phases replace averageDelay, delayVariation, errorRate, errorCode, errorBody and errorHeaders: give them in each phase")
		case f.FailFirst != nil || f.Rewrite != nil:
			return Invalid("phases cannot be combined with failFirst or rewrite")
		}
		return f.Timeline.validate(func(i int) error { return f.Timeline.Phases[i].Rule.(*HTTP).Validate() })
	}
	switch s := f.ErrorStatus; {
	case f.FailFirst != nil && f.ErrorRate > 0:
		return Invalid("give errorRate or failFirst, not both: failFirst decides which attempts get errorCode")
	case s == 0 && f.FailFirst != nil:
		return Invalid("errorCode must be an HTTP status in 200-599 with failFirst, got 0")
	case s == 0 && f.ErrorRate > 0:
		return Invalid("errorCode must be an HTTP status in 200-599 when errorRate > 0, got 0")
	case s >= 100 && s < 200:
		return Invalid("errorCode %d is an interim response (1xx), not an answer: use an HTTP status in 200-599", s)
	case s != 0 && (s < 200 || s > 599):
		return Invalid("errorCode must be an HTTP status in 200-599, got %d", s)
	case Bodyless(s) && len(f.ErrorBody) > 0:
		return Invalid("errorCode %d cannot carry a body (RFC 9110), but errorBody is set", s)
	case len(f.ErrorBody) > MaxErrorBody:
		return Invalid("errorBody must be at most %d bytes, got %d", MaxErrorBody, len(f.ErrorBody))
	}
	for _, h := range f.ErrorHeaders {
		if !validHeaderName(h.Name) {
			return Invalid("errorHeaders: %q is not a valid header name", h.Name)
		}
		switch canonical(h.Name) {
		case "Content-Length", "Transfer-Encoding", "Connection":
			return Invalid("errorHeaders: %s is set by faultline and cannot be given", h.Name)
		}
		if strings.ContainsAny(h.Value, "\r\n\x00") {
			return Invalid("errorHeaders: the value of %s must not contain CR, LF or NUL", h.Name)
		}
	}
	for _, p := range f.Exclude {
		if !strings.HasPrefix(p, "/") {
			return Invalid("exclude: %q is not a path (it must start with /)", p)
		}
	}
	for _, p := range f.Match.Paths {
		if !strings.HasPrefix(p, "/") {
			return Invalid("match path %q must start with /", p)
		}
		if i := strings.IndexByte(p, '*'); i >= 0 && i != len(p)-1 {
			return Invalid("match path %q: * is only allowed at the end, as a prefix match", p)
		}
	}
	for _, m := range f.Match.Methods {
		if !validHeaderName(m) {
			return Invalid("match method %q is not a valid HTTP method", m)
		}
	}
	for _, h := range f.Match.Headers {
		if !validHeaderName(h.Name) {
			return Invalid("match header %q is not a valid header name", h.Name)
		}
	}
	return nil
}

// Decide draws the fate of one request.
func (f *HTTP) Decide(r Request) Decision {
	if f.Timeline != nil {
		return f.Timeline.decide(r)
	}
	if !f.matches(r) {
		return Decision{}
	}
	d := Decision{Matched: true, Delay: f.Delay.draw(), DelayResponse: f.DelayResponse, Rewrite: f.Rewrite}
	if f.FailFirst != nil {
		if f.FailFirst.fails(r) {
			d.Answer = f.errorAnswer()
		}
	} else if draw(f.ErrorRate) {
		d.Answer = f.errorAnswer()
	}
	return d
}

// errorAnswer is the injected error, built once and shared read-only.
func (f *HTTP) errorAnswer() *Answer {
	f.answerOnce.Do(func() {
		a := &Answer{Status: f.ErrorStatus, Header: f.ErrorHeaders, Body: f.ErrorBody}
		typed := false
		for _, h := range a.Header {
			typed = typed || canonical(h.Name) == "Content-Type"
		}
		if len(a.Body) > 0 && !typed {
			a.Header = append(append([]HeaderField(nil), a.Header...), HeaderField{"Content-Type", "text/plain; charset=utf-8"})
		}
		f.answer = a
	})
	return f.answer
}

func (f *HTTP) matches(r Request) bool {
	m := &f.Match
	if len(f.Exclude) == 0 && len(m.Paths) == 0 && len(m.Methods) == 0 && len(m.Headers) == 0 {
		return true
	}
	path := r.Path()
	for _, p := range f.Exclude {
		if strings.EqualFold(p, path) {
			return false
		}
	}
	if len(m.Paths) > 0 && !anyPathMatches(m.Paths, path) {
		return false
	}
	if len(m.Methods) > 0 && !contains(m.Methods, r.Method()) {
		return false
	}
	return headersMatch(m.Headers, r)
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
