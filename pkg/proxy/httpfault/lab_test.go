package httpfault

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/faultline-dev/faultline/pkg/fault"
)

// lab is an application on loopback (HTTP/1.1 and h2c) and, once start is
// called, the proxy in front of it. url is where clients go: the
// application until start, then the proxy. The proxy is tested here
// without root; pkg/engine tests it behind real steering.
type lab struct {
	app  string // host:port of the application
	url  string
	http *http.Client
}

func newLab(t testing.TB, h http.Handler) *lab {
	t.Helper()
	if h == nil {
		h = http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { fmt.Fprintf(rw, "app8080:%s", r.URL.Path) })
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true) // h2c with prior knowledge, for the HTTP/2 tests
	srv := &http.Server{Handler: h, Protocols: &protos}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	l := &lab{app: ln.Addr().String()}
	l.url = "http://" + l.app
	l.http = l.client()
	return l
}

func (l *lab) client() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: l.dial, MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
}

func (l *lab) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// start puts a proxy applying rule in front of the application.
func (l *lab) start(t testing.TB, rule fault.Rule) *Proxy {
	t.Helper()
	p := &Proxy{Rule: rule, Dial: func(ctx context.Context) (net.Conn, error) { return l.dial(ctx, "tcp", l.app) }}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(ln)
	t.Cleanup(func() { shutdown(p) })
	l.url = "http://" + ln.Addr().String()
	l.http.CloseIdleConnections()
	return p
}

// shutdown stops a proxy as the end of a fault does: a drain of at most a
// second (connections a client opened but never used hold it that long).
func shutdown(p *Proxy) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	p.Shutdown(ctx)
}

type result struct {
	status int
	body   string
	header http.Header
	took   time.Duration
}

func do(t *testing.T, c *http.Client, method, url string, hdr map[string]string) result {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return result{resp.StatusCode, string(b), resp.Header, time.Since(start)}
}

// parallel runs n requests with the given concurrency.
func parallel(t *testing.T, n, conc int, fn func(i int) result) []result {
	t.Helper()
	out := make([]result, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i] = fn(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// withinBinomial checks k successes out of n against rate p, at 4 sigma.
func withinBinomial(t *testing.T, what string, k, n int, p float64) {
	t.Helper()
	sigma := math.Sqrt(float64(n) * p * (1 - p))
	if d := math.Abs(float64(k) - float64(n)*p); d > 4*sigma {
		t.Errorf("%s: %d of %d (%.3f), want %.3f within 4 sigma (%.1f)", what, k, n, float64(k)/float64(n), p, 4*sigma)
	} else {
		t.Logf("%s: %d of %d (%.3f), want %.3f", what, k, n, float64(k)/float64(n), p)
	}
}

func delayed(avg, variation time.Duration) fault.Delay {
	return fault.Delay{Average: avg, Variation: variation, Rate: 1}
}
