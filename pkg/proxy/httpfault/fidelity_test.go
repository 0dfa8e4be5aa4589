package httpfault

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/faultline-dev/faultline/pkg/fault"
)

// fidelityApp is an application exercising the corners of HTTP/1.1.
func fidelityApp() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%d %x te=%v", n, h.Sum(nil), r.TransferEncoding)
	})
	mux.HandleFunc("/download", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Header().Set("Content-Type", "application/octet-stream")
		if r.Method != "HEAD" {
			io.Copy(w, io.LimitReader(&pattern{}, int64(n)))
		}
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		for i := range 5 {
			fmt.Fprintf(w, "chunk %d;", i)
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/trailers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum, X-Count")
		io.WriteString(w, "body with trailers")
		w.Header().Set("X-Checksum", "abc123")
		w.Header().Set("X-Count", "1")
	})
	mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 5 {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		var keys []string
		for k, vs := range r.Header {
			keys = append(keys, k+"="+strings.Join(vs, "|"))
		}
		sort.Strings(keys)
		fmt.Fprintf(w, "%s %s host=%s %s", r.Method, r.RequestURI, r.Host, strings.Join(keys, ";"))
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	})
	mux.HandleFunc("/status/", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		w.Header().Set("ETag", `"v1"`)
		w.WriteHeader(code)
	})
	mux.HandleFunc("/reject", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	})
	up := websocket.Upgrader{}
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if c.WriteMessage(mt, msg) != nil {
				return
			}
		}
	})
	return mux
}

// pattern is an endless deterministic byte stream: the same bytes however
// its reader chunks its reads.
type pattern struct{ off int }

func (s *pattern) Read(p []byte) (int, error) {
	for i := range p {
		n := s.off + i
		p[i] = byte(n*7 + n>>8)
	}
	s.off += len(p)
	return len(p), nil
}

type observation map[string]string

func (w *lab) freshClient(expectTimeout time.Duration) *http.Client {
	tr := &http.Transport{DialContext: w.dial, ExpectContinueTimeout: expectTimeout}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func roundTrip(t *testing.T, c *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", req.Method, req.URL, err)
	}
	return resp, b
}

func describe(resp *http.Response, body []byte) string {
	sum := sha256.Sum256(body)
	return fmt.Sprintf("%d cl=%d te=%v ct=%q loc=%q etag=%q trailer=%v len=%d sha=%s", resp.StatusCode, resp.ContentLength,
		resp.TransferEncoding, resp.Header.Get("Content-Type"), resp.Header.Get("Location"), resp.Header.Get("ETag"),
		resp.Trailer, len(body), hex.EncodeToString(sum[:8]))
}

// observeAll runs every scenario and records what the client saw.
func observeAll(t *testing.T, w *lab) observation {
	t.Helper()
	o := observation{}
	c := w.freshClient(time.Second)
	const big = 50 << 20

	req, _ := http.NewRequest("POST", w.url+"/upload", io.LimitReader(&pattern{}, big))
	req.ContentLength = big
	resp, b := roundTrip(t, c, req)
	o["upload 50MB"] = describe(resp, b) + " " + string(b)

	req, _ = http.NewRequest("POST", w.url+"/upload", io.NopCloser(io.LimitReader(&pattern{}, 5<<20)))
	req.ContentLength = -1
	resp, b = roundTrip(t, c, req)
	o["upload chunked"] = describe(resp, b) + " " + string(b)

	req, _ = http.NewRequest("GET", w.url+fmt.Sprintf("/download?n=%d", big), nil)
	resp, b = roundTrip(t, c, req)
	o["download 50MB"] = describe(resp, b)

	for _, path := range []string{"/chunked", "/trailers", "/redirect", "/status/204", "/status/304", "/status/404"} {
		req, _ = http.NewRequest("GET", w.url+path, nil)
		resp, b = roundTrip(t, c, req)
		o[path] = describe(resp, b) + " " + string(b)
	}
	req, _ = http.NewRequest("HEAD", w.url+"/download?n=100", nil)
	resp, b = roundTrip(t, c, req)
	o["HEAD"] = describe(resp, b)

	req, _ = http.NewRequest("PATCH", w.url+"/echo?q=1&r=%20x", strings.NewReader("x"))
	req.Host = "catalog.example:8080"
	req.Header["X-Multi"] = []string{"a", "b"}
	req.Header.Set("User-Agent", "fidelity")
	_, b = roundTrip(t, c, req)
	o["echo"] = string(b)

	// Expect: 100-continue, accepted: the body must go after the 100, long
	// before the client's 1s give-up timer would send it anyway.
	ec := w.freshClient(5 * time.Second)
	req, _ = http.NewRequest("PUT", w.url+"/upload", bytes.NewReader(make([]byte, 1<<20)))
	req.Header.Set("Expect", "100-continue")
	start := time.Now()
	resp, b = roundTrip(t, ec, req)
	o["expect accepted"] = describe(resp, b) + " " + string(b)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("100-continue upload took %s: the 100 Continue did not come through", took)
	}
	req, _ = http.NewRequest("PUT", w.url+"/reject", bytes.NewReader(make([]byte, 1<<20)))
	req.Header.Set("Expect", "100-continue")
	resp, b = roundTrip(t, ec, req)
	o["expect rejected"] = describe(resp, b)

	// SSE: events must arrive as written, about 100ms apart.
	req, _ = http.NewRequest("GET", w.url+"/sse", nil)
	sresp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(sresp.Body)
	var events []string
	var arrivals []time.Time
	for sc.Scan() {
		if line := sc.Text(); line != "" {
			events = append(events, line)
			arrivals = append(arrivals, time.Now())
		}
	}
	sresp.Body.Close()
	o["sse"] = strings.Join(events, ",")
	for i := 1; i < len(arrivals); i++ {
		if gap := arrivals[i].Sub(arrivals[i-1]); gap < 70*time.Millisecond {
			t.Errorf("SSE event %d arrived %s after the previous one: events are being buffered", i, gap)
		}
	}

	// WebSocket echo, text and a 1 MB binary message.
	d := websocket.Dialer{NetDialContext: w.dial, HandshakeTimeout: 5 * time.Second}
	ws, wresp, err := d.Dial(strings.Replace(w.url, "http", "ws", 1)+"/ws", nil)
	if err != nil {
		t.Fatalf("websocket dial: %v", err)
	}
	o["ws handshake"] = fmt.Sprint(wresp.StatusCode, wresp.Header.Get("Upgrade"))
	var echoes []string
	for _, m := range [][]byte{[]byte("hello"), bytes.Repeat([]byte{1, 2, 3}, 1<<18), []byte("bye")} {
		if err := ws.WriteMessage(websocket.BinaryMessage, m); err != nil {
			t.Fatal(err)
		}
		_, got, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		echoes = append(echoes, fmt.Sprint(len(got), bytes.Equal(got, m)))
	}
	ws.Close()
	o["ws echo"] = strings.Join(echoes, ",")

	// Two pipelined requests in one write.
	conn, err := w.dial(context.Background(), "tcp", netip.MustParseAddrPort(strings.TrimPrefix(w.url, "http://")).String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "GET /echo?n=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /echo?n=2 HTTP/1.1\r\nHost: b\r\n\r\n")
	br := bufio.NewReader(conn)
	var piped []string
	for range 2 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("pipelined response: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		piped = append(piped, string(b))
	}
	o["pipelined"] = strings.Join(piped, " | ")
	return o
}

func TestPassThroughFidelity(t *testing.T) {
	w := newLab(t, fidelityApp())
	direct := observeAll(t, w)
	p := w.start(t, &fault.HTTP{}) // zero fault: proxy only
	proxied := observeAll(t, w)
	if !reflect.DeepEqual(direct, proxied) {
		for k := range direct {
			if direct[k] != proxied[k] {
				t.Errorf("%s differs:\n direct:  %s\n proxied: %s", k, direct[k], proxied[k])
			}
		}
	}
	if c := p.Counters(); c.Requests < 15 {
		t.Errorf("the proxy saw only %d requests: was it really in the path?", c.Requests)
	}
	for k, v := range direct {
		t.Logf("%s: %.120s", k, v)
	}
}
