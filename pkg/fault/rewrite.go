package fault

import "strings"

// Rewrite changes the application's real response to a matching request
// (HTTP/1.1): its status, some headers, its body. Content-Length and
// Transfer-Encoding stay the proxy's to set: a replaced body is sent with
// its own Content-Length, a kept one with the application's framing.
type Rewrite struct {
	Status        int // 0 keeps the application's
	SetHeaders    []HeaderField
	RemoveHeaders []string // canonical names
	// ReplaceBody sends Body instead of the application's body, which is
	// read to its end and dropped.
	ReplaceBody bool
	Body        []byte
}

// Framing headers a rewrite may not touch.
func framingHeader(name string) bool {
	switch canonical(name) {
	case "Content-Length", "Transfer-Encoding", "Connection":
		return true
	}
	return false
}

func (r *Rewrite) validate() error {
	if r == nil {
		return nil
	}
	switch s := r.Status; {
	case s != 0 && (s < 200 || s > 599):
		return Invalid("rewrite.status must be an HTTP status in 200-599, got %d", s)
	case Bodyless(s) && r.ReplaceBody && len(r.Body) > 0:
		return Invalid("rewrite.status %d cannot carry a body (RFC 9110), but rewrite.body is set", s)
	case Bodyless(s) && !r.ReplaceBody:
		return Invalid("rewrite.status %d carries no body: set rewrite.body to \"\" to drop the application's", s)
	case len(r.Body) > MaxErrorBody:
		return Invalid("rewrite.body must be at most %d bytes, got %d", MaxErrorBody, len(r.Body))
	case r.Status == 0 && len(r.SetHeaders) == 0 && len(r.RemoveHeaders) == 0 && !r.ReplaceBody:
		return Invalid("rewrite: give a status, headers to set or remove, or a body")
	}
	for _, h := range r.SetHeaders {
		if !validHeaderName(h.Name) {
			return Invalid("rewrite.setHeaders: %q is not a valid header name", h.Name)
		}
		if framingHeader(h.Name) {
			return Invalid("rewrite.setHeaders: %s is set by faultline and cannot be given", h.Name)
		}
		if strings.ContainsAny(h.Value, "\r\n\x00") {
			return Invalid("rewrite.setHeaders: the value of %s must not contain CR, LF or NUL", h.Name)
		}
	}
	for _, n := range r.RemoveHeaders {
		if !validHeaderName(n) {
			return Invalid("rewrite.removeHeaders: %q is not a valid header name", n)
		}
		if framingHeader(n) {
			return Invalid("rewrite.removeHeaders: %s is set by faultline and cannot be removed", n)
		}
	}
	return nil
}
