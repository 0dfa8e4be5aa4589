package httpfault

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"
)

// FuzzFramingAgainstNetHTTP compares the proxy's reading of a request head
// with net/http's: whenever both accept a head, they must agree on where
// the request ends (no body, a length, or chunked) and on whether the
// connection stays open. The proxy may refuse what net/http accepts
// (stricter is safe: the client gets a 400 and the connection closes), and
// a head net/http refuses cannot desynchronise a Go application either.
// make test runs it for a bounded time; the seeds run with every go test.
func FuzzFramingAgainstNetHTTP(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST /x HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST /x HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:  5 \r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nX: a\rContent-Length: 5\r\n\r\n",
		"GET / HTTP/1.1\nHost: x\nConnection: close\n\n",
		"GET / HTTP/1.1\r\nHost: x\r\n folded: y\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		end := headEnd(b)
		if end <= 0 {
			return
		}
		head := b[:end]
		ours, err := parseRequestHead(head)
		if err != nil {
			return // refused: never looser than anyone
		}
		theirs, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			return
		}
		theirsChunked := len(theirs.TransferEncoding) > 0 && theirs.TransferEncoding[len(theirs.TransferEncoding)-1] == "chunked"
		ourLength := max(ours.contentLength, 0)
		switch {
		case ours.chunked != theirsChunked:
			t.Fatalf("%q: chunked: proxy %v, net/http %v", head, ours.chunked, theirsChunked)
		case !ours.chunked && ourLength != theirs.ContentLength:
			t.Fatalf("%q: body length: proxy %d, net/http %d", head, ourLength, theirs.ContentLength)
		case ours.close != theirs.Close:
			t.Fatalf("%q: connection close: proxy %v, net/http %v", head, ours.close, theirs.Close)
		}
	})
}
