package engine_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/faultline-dev/faultline/internal/netnstest"
	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/proxy/httpfault"
)

// world is a test pod with a real HTTP server on :8080 and :8081, and a
// client host on the same bridge.
type world struct {
	pod, client *netnstest.Host
	eng         *engine.Engine
	url, other  string
	http        *http.Client
}

func newWorld(t *testing.T) *world {
	return newWorldWith(t, nil)
}

// newWorldWith serves h on :8080 instead of the default handler.
func newWorldWith(t *testing.T, h http.Handler) *world {
	t.Helper()
	n := netnstest.NewNet(t)
	w := &world{pod: n.AddHost("pod"), client: n.AddHost("client"), eng: engine.New(engine.Options{})}
	t.Cleanup(w.eng.Close)
	for _, port := range []string{"8080", "8081"} {
		var handler http.Handler = http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(rw, "app%s:%s", port, r.URL.Path)
		})
		if h != nil && port == "8080" {
			handler = h
		}
		var protos http.Protocols
		protos.SetHTTP1(true)
		protos.SetUnencryptedHTTP2(true) // h2c with prior knowledge, for the HTTP/2 tests
		srv := &http.Server{Handler: handler, Protocols: &protos}
		go srv.Serve(w.pod.Listen(t, "tcp", ":"+port))
		t.Cleanup(func() { srv.Close() })
	}
	w.url = "http://" + netip.AddrPortFrom(w.pod.Addr, 8080).String()
	w.other = "http://" + netip.AddrPortFrom(w.pod.Addr, 8081).String()
	w.http = w.clientFor(w.client)
	return w
}

func (w *world) clientFor(h *netnstest.Host) *http.Client {
	tr := &http.Transport{DialContext: h.Dial(), MaxIdleConnsPerHost: 64}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func (w *world) start(t *testing.T, f httpfault.Fault) *engine.Fault {
	t.Helper()
	if f.DelayRate == 0 {
		f.DelayRate = 1
	}
	fault, err := w.eng.Start(engine.Spec{
		Target:   engine.Target{NetnsPath: w.pod.Path},
		Duration: time.Minute,
		HTTP:     &engine.HTTPFault{Port: 8080, Fault: f},
	})
	if err != nil {
		t.Fatalf("start fault: %+v", err)
	}
	t.Cleanup(func() { fault.Stop(engine.ReasonRevoked) })
	return fault
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

func TestDelay(t *testing.T) {
	w := newWorld(t)
	// Baseline: the fastest direct request, to subtract. Not the mean: one
	// slow request on a loaded machine would make every delay look short.
	base := time.Hour
	for range 20 {
		base = min(base, do(t, w.http, "GET", w.url+"/", nil).took)
	}

	w.start(t, httpfault.Fault{AverageDelay: 200 * time.Millisecond, DelayVariation: 50 * time.Millisecond})
	// A delay is never shorter than asked; a loaded machine can only make
	// requests slower, so the upper bounds are loose (make bench measures).
	const n, slack = 240, time.Second
	res := parallel(t, n, 12, func(int) result { return do(t, w.http, "GET", w.url+"/x", nil) })
	var sum time.Duration
	for _, r := range res {
		if r.status != 200 || r.body != "app8080:/x" {
			t.Fatalf("got %d %q, want 200 from the app", r.status, r.body)
		}
		added := r.took - base
		if added < 140*time.Millisecond || added > 250*time.Millisecond+slack {
			t.Errorf("added latency %s outside [150ms, 250ms] (+%s slack)", added, slack)
		}
		sum += added
	}
	mean := sum / n
	if mean < 180*time.Millisecond || mean > 300*time.Millisecond {
		t.Errorf("mean added latency %s, want about 200ms", mean)
	}
	t.Logf("mean added latency %s over %d requests (direct %s)", mean, n, base)
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

func TestErrorRate(t *testing.T) {
	w := newWorld(t)
	f := w.start(t, httpfault.Fault{ErrorRate: 0.3, ErrorCode: 503})
	const n = 600
	res := parallel(t, n, 16, func(int) result { return do(t, w.http, "GET", w.url+"/", nil) })
	errs := 0
	for _, r := range res {
		switch r.status {
		case 503:
			errs++
		case 200:
		default:
			t.Fatalf("unexpected status %d", r.status)
		}
	}
	withinBinomial(t, "errors", errs, n, 0.3)
	st := f.Status()
	if st.Counters.Requests != n || st.Counters.Errored != uint64(errs) {
		t.Errorf("counters %+v, want %d requests and %d errored", st.Counters, n, errs)
	}
}

func TestErrorBodyAndHeaders(t *testing.T) {
	w := newWorld(t)
	w.start(t, httpfault.Fault{ErrorRate: 1, ErrorCode: 418, ErrorBody: []byte(`{"error":"teapot"}`),
		ErrorHeaders: http.Header{"Content-Type": {"application/json"}, "Retry-After": {"7"}}})
	r := do(t, w.http, "GET", w.url+"/", nil)
	if r.status != 418 || r.body != `{"error":"teapot"}` {
		t.Errorf("got %d %q", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if ra := r.header.Get("Retry-After"); ra != "7" {
		t.Errorf("Retry-After %q, want 7", ra)
	}
}

func TestExcludeAndMatch(t *testing.T) {
	w := newWorld(t)
	f := w.start(t, httpfault.Fault{ErrorRate: 1, ErrorCode: 500,
		Exclude: []string{"/health"},
		Match: httpfault.Match{Paths: []string{"/api/*", "/health"}, Methods: []string{"GET"},
			Headers: []httpfault.HeaderMatch{{Name: "X-Tenant", Value: "blue"}}}})
	blue := map[string]string{"X-Tenant": "blue"}
	for _, tc := range []struct {
		method, path string
		hdr          map[string]string
		want         int
	}{
		{"GET", "/api/items", blue, 500},
		{"GET", "/api/", blue, 500},
		{"GET", "/HEALTH", blue, 200}, // excluded, case-insensitive
		{"GET", "/health", blue, 200},
		{"GET", "/other", blue, 200},                                     // path not matched
		{"POST", "/api/items", blue, 200},                                // method not matched
		{"GET", "/api/items", nil, 200},                                  // header missing
		{"GET", "/api/items", map[string]string{"X-Tenant": "red"}, 200}, // header value differs
	} {
		if r := do(t, w.http, tc.method, w.url+tc.path, tc.hdr); r.status != tc.want {
			t.Errorf("%s %s %v: status %d, want %d", tc.method, tc.path, tc.hdr, r.status, tc.want)
		}
	}
	c := f.Status().Counters
	if c.Requests != 8 || c.Errored != 2 || c.Unmatched != 6 {
		t.Errorf("counters %+v, want 8 requests, 2 errored, 6 unmatched", c)
	}
}

func TestDelayRate(t *testing.T) {
	w := newWorld(t)
	f := w.start(t, httpfault.Fault{AverageDelay: 200 * time.Millisecond, DelayRate: 0.5})
	const n = 300
	res := parallel(t, n, 50, func(int) result { return do(t, w.http, "GET", w.url+"/", nil) })
	// The counter says how many were delayed; each of those must have
	// taken the full delay. Load on a shared machine can slow others too,
	// so slow requests only bound the counter from above.
	delayed := int(f.Status().Counters.Delayed)
	withinBinomial(t, "delayed", delayed, n, 0.5)
	slow := 0
	for _, r := range res {
		if r.took >= 200*time.Millisecond {
			slow++
		}
	}
	if slow < delayed {
		t.Errorf("delayed counter %d, but only %d requests took 200ms or more", delayed, slow)
	}
}

func TestOtherPortUntouchedAndLoopbackFaulted(t *testing.T) {
	w := newWorld(t)
	w.start(t, httpfault.Fault{ErrorRate: 1, ErrorCode: 503})
	if r := do(t, w.http, "GET", w.other+"/", nil); r.status != 200 || r.body != "app8081:/" {
		t.Errorf("other port: %d %q, want the app", r.status, r.body)
	}
	inPod := w.clientFor(w.pod)
	if r := do(t, inPod, "GET", "http://127.0.0.1:8080/", nil); r.status != 503 {
		t.Errorf("in-pod loopback client: %d, want the fault's 503", r.status)
	}
}

func TestLoopbackDelayDoesNotLoop(t *testing.T) {
	w := newWorld(t)
	f := w.start(t, httpfault.Fault{AverageDelay: 50 * time.Millisecond})
	inPod := w.clientFor(w.pod)
	r := do(t, inPod, "GET", "http://127.0.0.1:8080/loop", nil)
	if r.status != 200 || r.body != "app8080:/loop" || r.took < 50*time.Millisecond || r.took > time.Second {
		t.Errorf("got %d %q in %s, want the app after ~50ms", r.status, r.body, r.took)
	}
	if c := f.Status().Counters; c.Requests != 1 {
		t.Errorf("proxy saw %d requests, want exactly 1 (a loop would show more)", c.Requests)
	}
}

func TestKeepAliveClientIsResetThenFaulted(t *testing.T) {
	w := newWorld(t)
	dial := w.client.Dial()
	addr := netip.AddrPortFrom(w.pod.Addr, 8080).String()
	conn, err := dial(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	get := func(c net.Conn) (int, error) {
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: pod\r\n\r\n"); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	if code, err := get(conn); err != nil || code != 200 {
		t.Fatalf("before the fault: %d %v", code, err)
	}
	f := w.start(t, httpfault.Fault{ErrorRate: 1, ErrorCode: 503})
	if code, err := get(conn); err == nil {
		t.Fatalf("old keep-alive connection still works after the fault started (status %d)", code)
	}
	if f.Status().Counters.ConnectionsReset < 1 {
		t.Errorf("reset counter %d, want >= 1", f.Status().Counters.ConnectionsReset)
	}
	conn2, err := dial(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	if code, err := get(conn2); err != nil || code != 503 {
		t.Errorf("after reconnecting: %d %v, want 503", code, err)
	}
}

func TestSecondFaultOnSamePortRefused(t *testing.T) {
	w := newWorld(t)
	first := w.start(t, httpfault.Fault{AverageDelay: time.Millisecond})
	_, err := w.eng.Start(engine.Spec{Target: engine.Target{NetnsPath: w.pod.Path}, Duration: time.Minute,
		HTTP: &engine.HTTPFault{Port: 8080, Fault: httpfault.Fault{DelayRate: 1}}})
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), first.ID()) {
		t.Fatalf("second fault: %v, want FailedPrecondition naming %s", err, first.ID())
	}
	// Another port of the same namespace runs side by side.
	other, err := w.eng.Start(engine.Spec{Target: engine.Target{NetnsPath: w.pod.Path}, Duration: time.Minute,
		HTTP: &engine.HTTPFault{Port: 8081, Fault: httpfault.Fault{ErrorRate: 1, ErrorCode: 502}}})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Stop(engine.ReasonRevoked)
	if r := do(t, w.http, "GET", w.other+"/", nil); r.status != 502 {
		t.Errorf("port 8081: %d, want 502", r.status)
	}
	if r := do(t, w.http, "GET", w.url+"/", nil); r.status != 200 {
		t.Errorf("port 8080: %d, want 200", r.status)
	}
	if n := len(w.eng.List()); n != 2 {
		t.Errorf("List has %d faults, want 2", n)
	}
}

// TestNothingLeftBehind ends a fault in each way the engine knows and
// checks that the next connection goes straight to the app, that no bpf
// link or program remains, and that no file of the namespace stays open.
func TestNothingLeftBehind(t *testing.T) {
	for _, end := range []string{"expiry", "revoke", "stop"} {
		t.Run(end, func(t *testing.T) {
			w := newWorld(t)
			f, err := w.eng.Start(engine.Spec{Target: engine.Target{NetnsPath: w.pod.Path}, Duration: time.Second,
				HTTP: &engine.HTTPFault{Port: 8080, Fault: httpfault.Fault{AverageDelay: 3 * time.Second, DelayRate: 1}}})
			if err != nil {
				t.Fatal(err)
			}
			progs := netnstest.AttachedPrograms(t, w.pod.NS)
			if len(progs) != 1 {
				t.Fatalf("%d programs attached to the pod netns during the fault, want 1", len(progs))
			}
			switch end {
			case "expiry":
				<-f.Done()
			case "revoke":
				if _, err := w.eng.Revoke(f.ID(), false); err != nil {
					t.Fatal(err)
				}
			case "stop":
				f.Stop(engine.ReasonCancelled)
			}
			if r := do(t, w.http, "GET", w.url+"/", nil); r.status != 200 || r.took > time.Second {
				t.Errorf("after the fault: %d in %s, want the app directly", r.status, r.took)
			}
			if left := netnstest.AttachedPrograms(t, w.pod.NS); len(left) != 0 {
				t.Errorf("links left on the pod netns: programs %v", left)
			}
			deadline := time.Now().Add(time.Second)
			for len(netnstest.LivePrograms(t, progs)) > 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if live := netnstest.LivePrograms(t, progs); len(live) > 0 {
				t.Errorf("programs still loaded: %v", live)
			}
			if n := openNetnsFiles(t, w.pod); n != 1 { // the test's own handle
				t.Errorf("%d open files of the pod netns, want only the test's own", n)
			}
			if st := f.Status(); st.EndReason == "" {
				t.Errorf("no end reason")
			}
		})
	}
}

func openNetnsFiles(t *testing.T, h *netnstest.Host) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("net:[%d]", h.NS.ID().Ino)
	n := 0
	for _, e := range ents {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); l == want || l == h.Path {
			n++
		}
	}
	return n
}

func TestRevokeForbidsALateFault(t *testing.T) {
	w := newWorld(t)
	spec := engine.Spec{ID: "late", Target: engine.Target{NetnsPath: w.pod.Path}, Duration: time.Minute,
		HTTP: &engine.HTTPFault{Port: 8080, Fault: httpfault.Fault{ErrorRate: 1, ErrorCode: 503}}}
	if _, err := w.eng.Revoke("late", false); !errdefs.IsNotFound(err) {
		t.Fatalf("revoke of an unknown id: %v", err)
	}
	f, err := w.eng.Start(spec) // without forbidLater the id stays free
	if err != nil {
		t.Fatal(err)
	}
	f.Stop(engine.ReasonRevoked)
	if _, err := w.eng.Revoke("late", true); !errdefs.IsNotFound(err) {
		t.Fatalf("revoke of an ended id: %v", err)
	}
	if _, err := w.eng.Start(spec); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), `fault "late" was revoked before it arrived`) {
		t.Fatalf("a forbidden id started: %v", err)
	}
	if n := len(netnstest.AttachedPrograms(t, w.pod.NS)); n != 0 {
		t.Errorf("%d programs attached", n)
	}
}

func TestRevokeStopsAFaultBeingSetUp(t *testing.T) {
	w := newWorld(t)
	spec := engine.Spec{ID: "racing", Target: engine.Target{NetnsPath: w.pod.Path}, Duration: time.Minute,
		HTTP: &engine.HTTPFault{Port: 8080, Fault: httpfault.Fault{ErrorRate: 1, ErrorCode: 503}}}
	started := make(chan *engine.Fault, 1)
	go func() {
		f, _ := w.eng.Start(spec)
		started <- f
	}()
	var st engine.Status
	var err error
	for i := 0; i < 1000; i++ { // Revoke until the fault is there, set up or not
		if st, err = w.eng.Revoke("racing", false); err == nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err != nil || st.EndReason != engine.ReasonRevoked {
		t.Fatalf("revoke: %v %v", st, err)
	}
	<-started
	if r := do(t, w.http, "GET", w.url+"/", nil); r.status != 200 {
		t.Errorf("after the revoke: %d", r.status)
	}
	if n := len(w.eng.List()); n != 0 {
		t.Errorf("List shows %d faults", n)
	}
}
