package httpfault

import (
	"bytes"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"

	"github.com/faultline-dev/faultline/pkg/fault"
)

// rewriteHead returns the response head raw (a response with a body of
// kind) as rw changes it: its status line, the headers rw removes or sets
// left out, rw's headers added, and, when rw replaces the body, the
// application's framing replaced by the new body's Content-Length. raw is
// parsed already, so its header lines are well formed.
func rewriteHead(raw []byte, rw *fault.Rewrite, appStatus int) []byte {
	first, it := newHeaderIter(raw)
	status := appStatus
	var b bytes.Buffer
	b.Grow(len(raw) + 64 + len(rw.Body))
	if rw.Status != 0 {
		status = rw.Status
		b.WriteString("HTTP/1.1 " + strconv.Itoa(status) + " " + http.StatusText(status) + "\r\n")
	} else {
		b.Write(first)
		b.WriteString("\r\n")
	}
	for {
		name, value, ok, err := it.next()
		if !ok || err != nil {
			break
		}
		n := textproto.CanonicalMIMEHeaderKey(string(name))
		if slices.Contains(rw.RemoveHeaders, n) || slices.ContainsFunc(rw.SetHeaders, func(h fault.HeaderField) bool { return h.Name == n }) {
			continue
		}
		if rw.ReplaceBody && (n == "Content-Length" || n == "Transfer-Encoding") {
			continue
		}
		b.Write(name)
		b.WriteString(": ")
		b.Write(value)
		b.WriteString("\r\n")
	}
	for _, h := range rw.SetHeaders {
		b.WriteString(h.Name + ": " + h.Value + "\r\n")
	}
	if rw.ReplaceBody && !fault.Bodyless(status) {
		b.WriteString("Content-Length: " + strconv.Itoa(len(rw.Body)) + "\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}
