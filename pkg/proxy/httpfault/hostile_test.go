package httpfault

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/faultline-dev/faultline/internal/testkit/h2test"
)

// Clients that misbehave, on loopback: each case has a bound it asserts.
// test/node runs the memory bounds against a real faultlined.

// proxyWith serves p (Dial set here) in front of handler behind srv's
// settings, and returns the proxy's address.
func proxyWith(t *testing.T, p *Proxy, srv *http.Server) string {
	t.Helper()
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(app)
	t.Cleanup(func() { srv.Close() })
	p.Dial = func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", app.Addr().String())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(ln)
	t.Cleanup(func() { shutdown(p) })
	return ln.Addr().String()
}

func okHandler(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	fmt.Fprint(w, "ok")
}

// closedWithin reads from c until it ends and fails unless it ends
// within d.
func closedWithin(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(d + 2*time.Second))
	_, err := io.Copy(io.Discard, c)
	if took := time.Since(start); err != nil || took > d {
		t.Fatalf("connection ended after %v (err %v), want at most %v", took.Round(time.Millisecond), err, d)
	}
}

func TestSlowlorisClosedByHeaderTimeout(t *testing.T) {
	addr := proxyWith(t, &Proxy{HeaderTimeout: 300 * time.Millisecond}, &http.Server{Handler: http.HandlerFunc(okHandler)})
	for _, first := range []bool{true, false} {
		t.Run(fmt.Sprintf("first request %v", first), func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			if !first {
				fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				resp, err := http.ReadResponse(br, nil)
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("first request: %v %v", resp, err)
				}
				io.Copy(io.Discard, resp.Body)
			}
			// One header byte every 50 ms, for up to 3 s.
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n")
				for range 60 {
					select {
					case <-stop:
						return
					case <-time.After(50 * time.Millisecond):
					}
					if _, err := c.Write([]byte("X")); err != nil {
						return
					}
				}
			}()
			start := time.Now()
			c.SetReadDeadline(start.Add(3 * time.Second))
			_, err = io.Copy(io.Discard, br)
			// Closed with the client's bytes unread, the kernel may send
			// an RST rather than a FIN: either way the connection ended.
			if errors.Is(err, syscall.ECONNRESET) {
				err = nil
			}
			if took := time.Since(start); err != nil || took > time.Second {
				t.Fatalf("slowloris connection ended after %v (err %v), want ~300ms", took.Round(time.Millisecond), err)
			}
		})
	}
}

func TestSilentConnectionClosedByHeaderTimeout(t *testing.T) {
	addr := proxyWith(t, &Proxy{HeaderTimeout: 200 * time.Millisecond}, &http.Server{Handler: http.HandlerFunc(okHandler)})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	closedWithin(t, c, time.Second)
}

func TestIdleConnectionClosedAndHoldsNoBuffers(t *testing.T) {
	p := &Proxy{IdleTimeout: 500 * time.Millisecond}
	big := strings.Repeat("x", 256<<10)
	addr := proxyWith(t, p, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) })})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := io.Copy(io.Discard, resp.Body); n != int64(len(big)) {
		t.Fatalf("body %d bytes", n)
	}
	// Idle after a 256 KiB response: no buffers held, on either side.
	deadline := time.Now().Add(time.Second)
	for p.buffers.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := p.buffers.Load(); n != 0 {
		t.Errorf("an idle connection holds %d buffers, want 0", n)
	}
	closedWithin(t, br2conn{br, c}, time.Second)
}

// br2conn reads through a bufio.Reader that may hold bytes of c.
type br2conn struct {
	*bufio.Reader
	net.Conn
}

func (b br2conn) Read(p []byte) (int, error) { return b.Reader.Read(p) }

// TestAppIdleTimeoutDoesNotFailTheNextRequest: an application that closes
// idle connections sooner than its client (Node.js: 5 s) must not turn the
// client's next request into a 502: the proxy opens another connection,
// as the client would have.
func TestAppIdleTimeoutDoesNotFailTheNextRequest(t *testing.T) {
	var runs atomic.Int32
	srv := &http.Server{IdleTimeout: 100 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		okHandler(w, r)
	})}
	addr := proxyWith(t, &Proxy{}, srv)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 2 {
		if i > 0 {
			time.Sleep(400 * time.Millisecond) // the app has closed its side
		}
		fmt.Fprint(c, "POST /order HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d, want 200", i, resp.StatusCode)
		}
	}
	if n := runs.Load(); n != 2 {
		t.Errorf("the app ran %d requests, want 2", n)
	}
}

func TestMalformedChunkedBodyIs400(t *testing.T) {
	addr := proxyWith(t, &Proxy{}, &http.Server{Handler: http.HandlerFunc(okHandler)})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(c, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 400 || !resp.Close {
		t.Errorf("got %d close=%v, want 400 and Connection: close, as net/http answers", resp.StatusCode, resp.Close)
	}
	if errors.Is(err, io.EOF) {
		t.Error(err)
	}
}

// TestHTTP2FloodsEndAsWithGo: a CONTINUATION flood and a frame larger
// than SETTINGS_MAX_FRAME_SIZE end the connection with the GOAWAY a Go
// server sends, after a bounded amount of input.
func TestHTTP2FloodsEndAsWithGo(t *testing.T) {
	l := newLab(t, nil)
	direct := "127.0.0.1" + l.url[strings.LastIndex(l.url, ":"):]
	l.start(t, nil)
	proxied := l.url[len("http://"):]
	for name, send := range h2test.Floods {
		t.Run(name, func(t *testing.T) {
			want, _ := h2test.Verdict(t, l.dial, direct, send)
			got, sent := h2test.Verdict(t, l.dial, proxied, send)
			t.Logf("go server: %s; proxy: %s after %d KiB", want, got, sent>>10)
			if got != want {
				t.Errorf("the proxy ended with %s, a Go server with %s", got, want)
			}
			if sent > 8<<20 {
				t.Errorf("the proxy took %d MiB before ending the connection, want at most 8", sent>>20)
			}
		})
	}
}

// TestHeadBudgetBoundsStalledLargeHeads: heads over 4 KiB still being read
// share the head budget; one past it is answered 431 and closed, while
// small requests pass, a complete large head gives its share back, and
// large heads arrive intact.
func TestHeadBudgetBoundsStalledLargeHeads(t *testing.T) {
	budget := NewHeadBudget(2 * maxHead)
	p := &Proxy{HeadBudget: budget}
	var cookie atomic.Value
	addr := proxyWith(t, p, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cookie.Store(r.Header.Get("Cookie"))
		fmt.Fprint(w, "ok")
	})})
	big := strings.Repeat("c", 20<<10)
	stall := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nCookie: %s\r\n", big) // no end yet
		return c
	}
	status := func(c net.Conn) string {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(line)
	}
	holding := func(n int64) { // wait until n heads hold their share
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); budget.used.Load() != n*maxHead; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the budget holds %d bytes, want %d heads' worth", budget.used.Load(), n)
			}
		}
	}
	first, _ := stall(), stall()
	holding(2)
	if got := status(stall()); got != "HTTP/1.1 431 Request Header Fields Too Large" {
		t.Fatalf("a third stalled large head: %q, want 431", got)
	}
	if resp, err := http.Get("http://" + addr + "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a small request beside them: %v %v", resp, err)
	}
	io.WriteString(first, "\r\n") // complete: its share comes back
	if got := status(first); got != "HTTP/1.1 200 OK" || cookie.Load() != big {
		t.Fatalf("the completed large head: %q, cookie intact %v", got, cookie.Load() == big)
	}
	fourth := stall()
	holding(2)
	io.WriteString(fourth, "\r\n")
	if got := status(fourth); got != "HTTP/1.1 200 OK" {
		t.Fatalf("a large head after one completed: %q, want 200", got)
	}
}
