package fault

import (
	"fmt"
	"strings"
	"sync"
)

// GRPC delays or fails gRPC calls (HTTP/2 requests whose content-type is
// application/grpc) to a port, with xk6-disruptor's GrpcFault meaning.
// Other requests on the port pass untouched.
type GRPC struct {
	Port  uint16
	Delay Delay

	ErrorRate float64 // share of matching calls failed
	Status    int     // gRPC status code of failed calls, 1-16
	Message   string

	// Exclude lists fully-qualified services ("pkg.Service") never faulted.
	Exclude []string
	// Methods narrows the fault to full method names ("/pkg.Service/Get"),
	// where * matches any run of characters; empty matches all.
	Methods []string
	// Metadata must all match (names are case-insensitive).
	Metadata []HeaderMatch
	// FailFirst, when set, fails the first attempts of each logical call
	// (by a metadata key, else by full method) instead of ErrorRate.
	FailFirst *FailFirst
	// ResetConnections resets established connections at the start. Off by
	// default: gRPC connections are long-lived and carry long-lived
	// streams, which keep working; new connections get the fault.
	ResetConnections bool
	// Timeline, when set, replaces Delay and the error fields: each phase's
	// delay and error for its duration.
	Timeline *Timeline

	answerOnce sync.Once
	answer     *Answer
}

// MaxStatusMessage bounds an injected grpc-message.
const MaxStatusMessage = 4096

func (f *GRPC) Kind() Kind              { return KindGRPC }
func (f *GRPC) Claim() Claim            { return Claim{Proxy: true, Port: f.Port} }
func (f *GRPC) ResetsConnections() bool { return f.ResetConnections }

// Validate checks every field and names the API field of the first problem.
func (f *GRPC) Validate() error {
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
	if f.Timeline != nil {
		switch {
		case f.Delay.Average > 0 || f.ErrorRate > 0 || f.Status != 0 || f.Message != "":
			return Invalid("phases replace averageDelay, delayVariation, errorRate, statusCode and statusMessage: give them in each phase")
		case f.FailFirst != nil:
			return Invalid("phases cannot be combined with failFirst")
		}
		return f.Timeline.validate(func(i int) error { return f.Timeline.Phases[i].Rule.(*GRPC).Validate() })
	}
	switch {
	case f.FailFirst != nil && f.ErrorRate > 0:
		return Invalid("give errorRate or failFirst, not both: failFirst decides which calls get statusCode")
	case f.Status == 0 && f.FailFirst != nil:
		return Invalid("statusCode must be a gRPC status code in 1-16 with failFirst, got 0")
	case f.Status == 0 && f.ErrorRate > 0:
		return Invalid("statusCode must be a gRPC status code in 1-16 when errorRate > 0, got 0")
	case f.Status != 0 && (f.Status < 1 || f.Status > 16):
		return Invalid("statusCode must be a gRPC status code in 1-16, got %d", f.Status)
	case len(f.Message) > MaxStatusMessage:
		return Invalid("statusMessage must be at most %d bytes, got %d", MaxStatusMessage, len(f.Message))
	}
	for _, s := range f.Exclude {
		if s == "" || strings.ContainsAny(s, "/ ") {
			return Invalid("exclude: %q is not a fully-qualified service name such as pkg.Service", s)
		}
	}
	for _, m := range f.Methods {
		if !strings.HasPrefix(m, "/") && m != "*" {
			return Invalid("method %q must be a full method name such as /pkg.Service/Method (* is a wildcard)", m)
		}
	}
	for _, h := range f.Metadata {
		if !validHeaderName(h.Name) {
			return Invalid("metadata key %q is not valid", h.Name)
		}
	}
	return nil
}

// Decide draws the fate of one call; requests that are not gRPC calls pass.
func (f *GRPC) Decide(r Request) Decision {
	if f.Timeline != nil {
		return f.Timeline.decide(r)
	}
	if !r.GRPC() {
		return Decision{}
	}
	path := r.Path()
	service, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if contains(f.Exclude, service) || (len(f.Methods) > 0 && !anyGlob(f.Methods, path)) || !headersMatch(f.Metadata, r) {
		return Decision{}
	}
	d := Decision{Matched: true, Delay: f.Delay.draw()}
	if f.FailFirst != nil && f.FailFirst.fails(r) || f.FailFirst == nil && draw(f.ErrorRate) {
		f.answerOnce.Do(func() { f.answer = &Answer{Status: 200, GRPCStatus: f.Status, GRPCMessage: f.Message} })
		d.Answer = f.answer
	}
	return d
}

func anyGlob(patterns []string, s string) bool {
	for _, p := range patterns {
		if glob(p, s) {
			return true
		}
	}
	return false
}

// glob matches s against p, where * matches any run of characters.
func glob(p, s string) bool {
	first, rest, wild := strings.Cut(p, "*")
	if !wild {
		return p == s
	}
	if !strings.HasPrefix(s, first) {
		return false
	}
	s = s[len(first):]
	for i := 0; i <= len(s); i++ {
		if glob(rest, s[i:]) {
			return true
		}
	}
	return false
}

// PercentEncode encodes a grpc-message as the gRPC HTTP/2 spec says: bytes
// outside printable ASCII, and '%', as %XX.
func PercentEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
