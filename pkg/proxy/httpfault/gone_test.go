package httpfault

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/faultline-dev/faultline/pkg/fault"
)

// TestClientGoneDuringDelayNeverReachesApp: in request mode, a client that
// gives up during the delay (closes, resets, or on HTTP/2 resets the
// stream) never reaches the application; one that waits does. The
// application counts what it runs.
func TestClientGoneDuringDelayNeverReachesApp(t *testing.T) {
	var ran atomic.Int64
	l := newLab(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ran.Add(1)
		fmt.Fprint(w, "ran")
	}))
	const delay = 400 * time.Millisecond
	p := l.start(t, &fault.HTTP{Delay: delayed(delay, 0)})
	addr := l.url[len("http://"):]

	leave := map[string]func(t *testing.T){
		"HTTP/1.1 close": func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprint(c, "POST /order HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
			time.Sleep(50 * time.Millisecond)
			c.Close()
		},
		"HTTP/1.1 reset": func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprint(c, "GET /order HTTP/1.1\r\nHost: x\r\n\r\n")
			time.Sleep(50 * time.Millisecond)
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		},
		"HTTP/2 stream reset": func(t *testing.T) {
			var protos http.Protocols
			protos.SetUnencryptedHTTP2(true)
			tr := &http.Transport{Protocols: &protos}
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", l.url+"/order", nil)
			if _, err := tr.RoundTrip(req); err == nil {
				t.Fatal("the request ended before its deadline")
			}
		},
	}
	for name, fn := range leave {
		t.Run(name, func(t *testing.T) {
			before := ran.Load()
			fn(t)
			time.Sleep(delay + 300*time.Millisecond) // past the delay
			if n := ran.Load() - before; n != 0 {
				t.Errorf("the application ran %d requests whose client had left during the delay, want 0", n)
			}
		})
	}
	// A client that waits reaches it.
	before := ran.Load()
	if r := do(t, l.http, "GET", l.url+"/order", nil); r.status != 200 || r.body != "ran" {
		t.Fatalf("a waiting client: %d %q", r.status, r.body)
	}
	if n := ran.Load() - before; n != 1 {
		t.Errorf("a waiting client: the application ran %d, want 1", n)
	}
	if c := p.Counters(); c.Delayed < 4 {
		t.Errorf("delayed %d, want every request counted (4)", c.Delayed)
	}
}
