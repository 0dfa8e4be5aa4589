package httpfault

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/faultline-dev/faultline/pkg/fault"
)

func TestParseRequestHead(t *testing.T) {
	for _, tc := range []struct {
		raw     string
		ok      bool
		method  string
		path    string
		cl      int64
		chunked bool
		close   bool
		expect  bool
	}{
		{"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n", true, "GET", "/a", -1, false, false, false},
		{"POST /u HTTP/1.1\r\ncontent-LENGTH: 12\r\nExpect: 100-continue\r\n\r\n", true, "POST", "/u", 12, false, false, true},
		{"POST /u HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", true, "POST", "/u", -1, true, false, false},
		{"GET http://h:1/abs/p?q HTTP/1.1\r\n\r\n", true, "GET", "/abs/p", -1, false, false, false},
		{"GET / HTTP/1.0\r\n\r\n", true, "GET", "/", -1, false, true, false},
		{"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true, "GET", "/", -1, false, false, false},
		{"GET / HTTP/1.1\r\nConnection: Upgrade, close\r\n\r\n", true, "GET", "/", -1, false, true, false},
		{"GET / HTTP/1.1\nHost: bare-lf\n\n", true, "GET", "/", -1, false, false, false},
		{"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", false, "", "", 0, false, false, false},
		{"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", false, "", "", 0, false, false, false},
		{"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", false, "", "", 0, false, false, false},
		{"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", false, "", "", 0, false, false, false},
		{"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", false, "", "", 0, false, false, false},
		{"GET / HTTP/1.1\r\nX-A: 1\rContent-Length: 5\r\n\r\n", false, "", "", 0, false, false, false},
		{"GET / HTTP/1.1\r\n folded: x\r\n\r\n", false, "", "", 0, false, false, false},
		{"GET / HTTP/2.0\r\n\r\n", false, "", "", 0, false, false, false},
		{"GARBAGE\r\n\r\n", false, "", "", 0, false, false, false},
		{"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", false, "", "", 0, false, false, false},
	} {
		r, err := parseRequestHead([]byte(tc.raw))
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v, want ok=%v", tc.raw, err, tc.ok)
			continue
		}
		if !tc.ok {
			continue
		}
		if r.method != tc.method || r.Path() != tc.path || r.contentLength != tc.cl || r.chunked != tc.chunked || r.close != tc.close || r.expect100 != tc.expect {
			t.Errorf("%q: got %s %s cl=%d chunked=%v close=%v expect=%v", tc.raw, r.method, r.Path(), r.contentLength, r.chunked, r.close, r.expect100)
		}
	}
}

func TestResponseBodyKind(t *testing.T) {
	for _, tc := range []struct {
		raw, method string
		want        bodyKind
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "GET", bodyLength},
		{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "HEAD", bodyNone},
		{"HTTP/1.1 204 No Content\r\n\r\n", "GET", bodyNone},
		{"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", "GET", bodyNone},
		{"HTTP/1.1 100 Continue\r\n\r\n", "POST", bodyNone},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "GET", bodyTunnel},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", bodyChunked},
		{"HTTP/1.1 200 OK\r\n\r\n", "GET", bodyUntilClose},
		{"HTTP/1.1 200 Connection established\r\n\r\n", "CONNECT", bodyTunnel},
	} {
		r, err := parseResponseHead([]byte(tc.raw))
		if err != nil {
			t.Fatalf("%q: %v", tc.raw, err)
		}
		if got := r.body(tc.method); got != tc.want {
			t.Errorf("%s %q: body kind %d, want %d", tc.method, tc.raw, got, tc.want)
		}
	}
}

func TestCopyChunkedStopsAtEnd(t *testing.T) {
	body := "4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: v\r\n\r\n"
	src := bufio.NewReader(strings.NewReader(body + "NEXT REQUEST"))
	var out strings.Builder
	dst := bufio.NewWriter(&out)
	if err := copyChunked(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Flush()
	if out.String() != body {
		t.Errorf("copied %q, want %q", out.String(), body)
	}
	rest, _ := io.ReadAll(src)
	if string(rest) != "NEXT REQUEST" {
		t.Errorf("left %q in the reader", rest)
	}
	for _, bad := range []string{"zz\r\n", "4\r\nWikiXX\r\n", "4\r\nWi"} {
		if err := copyChunked(bufio.NewWriter(io.Discard), bufio.NewReader(strings.NewReader(bad))); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// startProxy runs a proxy on loopback in front of handler.
func startProxy(t *testing.T, f fault.Rule, handler http.HandlerFunc) (*Proxy, string) {
	t.Helper()
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go srv.Serve(app)
	t.Cleanup(func() { srv.Close() })
	p := &Proxy{Rule: f, Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", app.Addr().String())
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(ln)
	t.Cleanup(func() { p.Shutdown(context.Background()) })
	return p, ln.Addr().String()
}

func TestShutdownServesConnectionsAlreadyAccepted(t *testing.T) {
	p, addr := startProxy(t, &fault.HTTP{ErrorRate: 1, ErrorStatus: 503}, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "app") })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(20 * time.Millisecond) // accepted, no request yet
	done := make(chan error)
	go func() { done <- p.Shutdown(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("a connection accepted before shutdown was dropped: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "app" {
		t.Errorf("during shutdown: %d %q, want the app with no fault", resp.StatusCode, b)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Error(err)
	}
}

func TestUpstreamDownIs502(t *testing.T) {
	p := &Proxy{Dial: func(ctx context.Context) (net.Conn, error) { return nil, fmt.Errorf("connection refused") }}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go p.Serve(ln)
	defer p.Shutdown(context.Background())
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 502 || p.Counters().UpstreamErrors != 1 {
		t.Errorf("status %d, counters %+v", resp.StatusCode, p.Counters())
	}
}

func TestErrorWithExpectContinueClosesWithoutReadingBody(t *testing.T) {
	_, addr := startProxy(t, &fault.HTTP{ErrorRate: 1, ErrorStatus: 507}, func(w http.ResponseWriter, r *http.Request) {})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprint(c, "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 507 || !resp.Close {
		t.Errorf("got %d close=%v, want 507 and Connection: close", resp.StatusCode, resp.Close)
	}
}
