package httpfault

import (
	"fmt"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// GRPCFault is what to do to matching gRPC calls (HTTP/2 requests whose
// content-type is application/grpc). Other requests pass untouched.
type GRPCFault struct {
	AverageDelay   time.Duration
	DelayVariation time.Duration
	DelayRate      float64 // fraction of matching calls delayed, 0-1

	ErrorRate     float64 // fraction of matching calls failed, 0-1
	StatusCode    int     // gRPC status code of failed calls, 1-16
	StatusMessage string

	// Exclude lists fully-qualified services ("pkg.Service") never faulted.
	Exclude []string
	// Methods narrows the fault to full method names ("/pkg.Service/Get"),
	// where * matches any run of characters; empty matches all.
	Methods []string
	// Metadata must all match (names are case-insensitive).
	Metadata []HeaderMatch
}

// Validate checks the fault and names the API field of the first problem.
func (f *GRPCFault) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{errdefs.ErrInvalidArgument}, args...)...)
	}
	if err := (timing{f.AverageDelay, f.DelayVariation, f.DelayRate, f.ErrorRate}).validate(); err != nil {
		return err
	}
	switch {
	case f.ErrorRate > 0 && (f.StatusCode < 1 || f.StatusCode > 16):
		return bad("statusCode must be a gRPC status code in 1-16 when errorRate > 0, got %d", f.StatusCode)
	case len(f.StatusMessage) > 4096:
		return bad("statusMessage must be at most 4096 bytes, got %d", len(f.StatusMessage))
	}
	for _, s := range f.Exclude {
		if s == "" || strings.ContainsAny(s, "/ ") {
			return bad("exclude: %q is not a fully-qualified service name such as pkg.Service", s)
		}
	}
	for _, m := range f.Methods {
		if !strings.HasPrefix(m, "/") && m != "*" {
			return bad("method %q must be a full method name such as /pkg.Service/Method (* is a wildcard)", m)
		}
	}
	for _, h := range f.Metadata {
		if !validHeaderName(h.Name) {
			return bad("metadata key %q is not valid", h.Name)
		}
	}
	return nil
}

func (f *GRPCFault) decide(req request) decision {
	path := req.Path()
	service, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	for _, s := range f.Exclude {
		if s == service {
			return decision{}
		}
	}
	if len(f.Methods) > 0 && !anyGlob(f.Methods, path) {
		return decision{}
	}
	if !headersMatch(f.Metadata, req) {
		return decision{}
	}
	return timing{f.AverageDelay, f.DelayVariation, f.DelayRate, f.ErrorRate}.decide()
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

// percentEncode encodes a grpc-message as the gRPC HTTP/2 spec says: bytes
// outside printable ASCII, and '%', as %XX.
func percentEncode(s string) string {
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
