package httpfault

import (
	"bufio"
	"bytes"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
)

// The proxy parses only what it needs to find where a message ends and to
// decide on a fault: the request line, the status line and a handful of
// headers. The head bytes are forwarded exactly as received.

var (
	errHeadTooLarge = errors.New("request head too large")
	errMalformed    = errors.New("malformed message head")
)

// maxHead is the largest request or response head the proxy accepts; it is
// also the size of its large read buffers.
const maxHead = 64 << 10

// smallHead is the size of the read buffer a client connection starts
// with (net/http's too); a request head that does not fit moves to a
// maxHead buffer, within the proxy's HeadBudget.
const smallHead = 4 << 10

// DefaultHeadBudget is the memory for request heads larger than smallHead
// that a proxy without a HeadBudget of its own allows to be in the middle
// of being read at once: 128 heads of up to 64 KiB.
const DefaultHeadBudget = 8 << 20

// HeadBudget bounds the memory that request heads larger than smallHead
// hold while they are being read, across the proxies that share it
// (faultlined: all of a node's). A head that would take more is answered 431 and its connection
// closed, as one larger than 64 KiB is, so that thousands of clients
// stalling in the middle of large heads cannot exhaust the daemon's memory
// while ordinary requests keep passing.
type HeadBudget struct {
	limit int64
	used  atomic.Int64
}

// NewHeadBudget returns a budget of bytes (at least one large head).
func NewHeadBudget(bytes int64) *HeadBudget { return &HeadBudget{limit: max(bytes, maxHead)} }

func (b *HeadBudget) take() bool {
	if b.used.Add(maxHead) > b.limit {
		b.used.Add(-maxHead)
		return false
	}
	return true
}

func (b *HeadBudget) give() { b.used.Add(-maxHead) }

// readHead waits until br holds a complete message head and returns it, as
// a slice of br's buffer valid until br is read or discarded. Empty lines
// before a request line are skipped (RFC 9112 §2.2).
func readHead(br *bufio.Reader) ([]byte, error) {
	for {
		buf, _ := br.Peek(br.Buffered())
		for len(buf) > 0 && (buf[0] == '\r' || buf[0] == '\n') {
			_, _ = br.Discard(1)
			buf = buf[1:]
		}
		if end := headEnd(buf); end > 0 {
			return buf[:end], nil
		}
		if br.Buffered() >= br.Size() {
			return nil, errHeadTooLarge
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			return nil, err
		}
	}
}

// headEnd returns the length of the head in buf including the empty line
// that ends it, or 0 when the head is incomplete. Bare LF is accepted.
func headEnd(buf []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(buf[i:], '\n')
		if j < 0 {
			return 0
		}
		i += j + 1
		if i < len(buf) && buf[i] == '\n' {
			return i + 1
		}
		if i+1 < len(buf) && buf[i] == '\r' && buf[i+1] == '\n' {
			return i + 2
		}
	}
}

// header iterates over the header lines of a head, after its first line.
type headerIter struct{ rest []byte }

func newHeaderIter(head []byte) (first []byte, it headerIter) {
	i := bytes.IndexByte(head, '\n')
	return trimCR(head[:i]), headerIter{rest: head[i+1:]}
}

// next returns the next header; ok is false at the end of the head.
func (it *headerIter) next() (name, value []byte, ok bool, err error) {
	i := bytes.IndexByte(it.rest, '\n')
	if i < 0 {
		return nil, nil, false, nil
	}
	line := trimCR(it.rest[:i])
	it.rest = it.rest[i+1:]
	if len(line) == 0 {
		return nil, nil, false, nil
	}
	if bytes.IndexByte(line, '\r') >= 0 || bytes.IndexByte(line, 0) >= 0 {
		// A bare CR or a NUL: net/http refuses them, and an application
		// that splits lines at CR would see headers the proxy did not.
		return nil, nil, false, errMalformed
	}
	if line[0] == ' ' || line[0] == '\t' { // obsolete line folding
		return nil, nil, false, errMalformed
	}
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return nil, nil, false, errMalformed
	}
	name = line[:colon]
	if bytes.ContainsAny(name, " \t") {
		return nil, nil, false, errMalformed
	}
	return name, bytes.TrimSpace(line[colon+1:]), true, nil
}

// framing is what the proxy knows about one message.
type framing struct {
	contentLength int64 // -1 when absent
	chunked       bool
	close         bool // Connection: close, or HTTP/1.0 without keep-alive
	upgrade       bool // Connection: upgrade
	expect100     bool
	proto11       bool
	badTE         bool // a Transfer-Encoding other than ending in chunked
	sawTE         bool
}

// hasBody reports whether a request with this framing carries a body.
func (f framing) hasBody() bool { return f.chunked || f.contentLength > 0 }

func parseFraming(it headerIter, proto11 bool) (framing, error) {
	f := framing{contentLength: -1, proto11: proto11}
	keepAlive := false
	for {
		name, value, ok, err := it.next()
		if err != nil {
			return f, err
		}
		if !ok {
			break
		}
		switch {
		case asciiEqualFold(name, "content-length"):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || (f.contentLength >= 0 && f.contentLength != n) {
				return f, errMalformed
			}
			f.contentLength = n
		case asciiEqualFold(name, "transfer-encoding"):
			f.sawTE = true
			codings := bytes.Split(value, []byte(","))
			last := bytes.TrimSpace(codings[len(codings)-1])
			f.chunked = asciiEqualFold(last, "chunked")
			f.badTE = !f.chunked
		case asciiEqualFold(name, "connection"):
			for _, tok := range bytes.Split(value, []byte(",")) {
				tok = bytes.TrimSpace(tok)
				switch {
				case asciiEqualFold(tok, "close"):
					f.close = true
				case asciiEqualFold(tok, "keep-alive"):
					keepAlive = true
				case asciiEqualFold(tok, "upgrade"):
					f.upgrade = true
				}
			}
		case asciiEqualFold(name, "expect"):
			f.expect100 = asciiEqualFold(value, "100-continue")
		}
	}
	if f.sawTE && f.contentLength >= 0 {
		// Both framings: a request smuggling vector; refuse it.
		return f, errMalformed
	}
	if !proto11 && !keepAlive {
		f.close = true
	}
	return f, nil
}

// requestHead is a parsed request head.
type requestHead struct {
	raw    []byte
	method string
	target string
	framing
}

func parseRequestHead(raw []byte) (*requestHead, error) {
	first, it := newHeaderIter(raw)
	sp1 := bytes.IndexByte(first, ' ')
	sp2 := bytes.LastIndexByte(first, ' ')
	if sp1 <= 0 || sp2 <= sp1+1 {
		return nil, errMalformed
	}
	version := first[sp2+1:]
	if !bytes.HasPrefix(version, []byte("HTTP/1.")) || len(version) != 8 {
		return nil, errMalformed
	}
	f, err := parseFraming(it, version[7] != '0')
	if err != nil {
		return nil, err
	}
	if f.badTE || (f.sawTE && !f.proto11) {
		// Transfer-Encoding on HTTP/1.0 is undefined (net/http ignores it,
		// others honour it): a request smuggling shape; refuse it.
		return nil, errMalformed
	}
	if bytes.IndexByte(first, '\r') >= 0 || bytes.IndexByte(first, 0) >= 0 {
		return nil, errMalformed
	}
	return &requestHead{raw: raw, method: string(first[:sp1]), target: string(first[sp1+1 : sp2]), framing: f}, nil
}

// Method returns the request method.
func (r *requestHead) Method() string { return r.method }

// Path returns the path of the request target without query or fragment.
func (r *requestHead) Path() string {
	t := r.target
	if i := strings.IndexAny(t, "?#"); i >= 0 {
		t = t[:i]
	}
	if i := strings.Index(t, "://"); i >= 0 { // absolute form
		t = t[i+3:]
		if j := strings.IndexByte(t, '/'); j >= 0 {
			t = t[j:]
		} else {
			t = "/"
		}
	}
	return t
}

// GRPC is false: gRPC runs on HTTP/2.
func (r *requestHead) GRPC() bool { return false }

// Header returns the first value of the named header.
func (r *requestHead) Header(name string) (string, bool) {
	_, it := newHeaderIter(r.raw)
	for {
		n, v, ok, err := it.next()
		if err != nil || !ok {
			return "", false
		}
		if asciiEqualFold(n, name) {
			return string(v), true
		}
	}
}

// responseHead is a parsed response head.
type responseHead struct {
	raw    []byte
	status int
	framing
}

func parseResponseHead(raw []byte) (*responseHead, error) {
	first, it := newHeaderIter(raw)
	if len(first) < 12 || !bytes.HasPrefix(first, []byte("HTTP/1.")) || first[8] != ' ' {
		return nil, errMalformed
	}
	status, err := strconv.Atoi(string(first[9:12]))
	if err != nil || status < 100 || status > 999 {
		return nil, errMalformed
	}
	f, err := parseFraming(it, first[7] != '0')
	if err != nil {
		return nil, err
	}
	return &responseHead{raw: raw, status: status, framing: f}, nil
}

// bodyKind says how the body of a response to method ends (RFC 9112 §6.3).
type bodyKind int

const (
	bodyNone bodyKind = iota
	bodyLength
	bodyChunked
	bodyUntilClose
	bodyTunnel // 101 Switching Protocols or a successful CONNECT
)

func (r *responseHead) body(method string) bodyKind {
	switch {
	case r.status == 101, method == "CONNECT" && r.status/100 == 2:
		return bodyTunnel
	case method == "HEAD", r.status/100 == 1, r.status == 204, r.status == 304:
		return bodyNone
	case r.chunked:
		return bodyChunked
	case r.contentLength >= 0:
		return bodyLength
	default:
		return bodyUntilClose
	}
}

func trimCR(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		return b[:n-1]
	}
	return b
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
