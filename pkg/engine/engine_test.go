package engine_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/faultline-dev/faultline/internal/testkit/netnstest"
	"github.com/faultline-dev/faultline/internal/testkit/topo"
	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/fault"
)

// world is a test pod with a real HTTP server on :8080 and :8081, and a
// client host on the same bridge.
type world struct {
	net         *netnstest.Net
	pod, client *netnstest.Host
	eng         *engine.Engine
	url, other  string
	http        *http.Client
}

func newWorld(t *testing.T) *world {
	return newWorldWith(t, nil, nil)
}

// newWorldWith serves h on :8080 instead of the default handler, and runs
// the engine with a hook called in each setup just before attaching.
func newWorldWith(t *testing.T, h http.Handler, beforeAttach func()) *world {
	t.Helper()
	n := netnstest.NewNet(t)
	w := &world{net: n, pod: n.AddHost("pod"), client: n.AddHost("client"), eng: engine.New(engine.Options{})}
	if beforeAttach != nil {
		w.eng = engine.NewWithHook(beforeAttach)
	}
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

// spec is a one-minute fault, validated as the node API validates it.
func spec(t *testing.T, f fault.Fault) fault.Spec {
	t.Helper()
	if v, ok := f.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	return fault.Spec{Duration: time.Minute, Fault: f}
}

func (w *world) target() engine.Target { return engine.Target{NetnsPath: w.pod.Path} }

// start starts an HTTP fault on port 8080 of the pod.
func (w *world) start(t *testing.T, f *fault.HTTP) *engine.Running {
	t.Helper()
	f.Port = 8080
	r, err := w.eng.Start(context.Background(), w.target(), spec(t, f))
	if err != nil {
		t.Fatalf("start fault: %+v", err)
	}
	t.Cleanup(func() { r.Stop(engine.ReasonRevoked) })
	return r
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

func TestOtherPortUntouchedAndLoopbackFaulted(t *testing.T) {
	w := newWorld(t)
	w.start(t, &fault.HTTP{ErrorRate: 1, ErrorStatus: 503})
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
	f := w.start(t, &fault.HTTP{Delay: fault.Delay{Average: 50 * time.Millisecond, Rate: 1}})
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
	f := w.start(t, &fault.HTTP{ErrorRate: 1, ErrorStatus: 503})
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
	first := w.start(t, &fault.HTTP{Delay: fault.Delay{Average: time.Millisecond, Rate: 1}})
	_, err := w.eng.Start(context.Background(), w.target(), spec(t, &fault.HTTP{Port: 8080}))
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), first.ID()) {
		t.Fatalf("second fault: %v, want FailedPrecondition naming %s", err, first.ID())
	}
	// Another port of the same namespace runs side by side.
	other, err := w.eng.Start(context.Background(), w.target(), spec(t, &fault.HTTP{Port: 8081, ErrorRate: 1, ErrorStatus: 502}))
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
			sp := spec(t, &fault.HTTP{Port: 8080, Delay: fault.Delay{Average: 3 * time.Second, Rate: 1}})
			sp.Duration = time.Second
			f, err := w.eng.Start(context.Background(), w.target(), sp)
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
				if _, err := w.eng.Revoke(f.ID()); err != nil {
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
	id := h.NS.ID()
	n := 0
	for _, e := range ents {
		var st unix.Stat_t // the file the descriptor is, deleted mount or not
		if unix.Stat("/proc/self/fd/"+e.Name(), &st) == nil && st.Dev == id.Dev && st.Ino == id.Ino {
			n++
		}
	}
	return n
}

func TestRevokeStopsAFaultBeingSetUp(t *testing.T) {
	attaching := make(chan struct{})
	proceed := make(chan struct{})
	w := newWorldWith(t, nil, func() { close(attaching); <-proceed })
	sp := spec(t, &fault.HTTP{Port: 8080, ErrorRate: 1, ErrorStatus: 503})
	sp.ID = "racing"
	started := make(chan error, 1)
	go func() {
		_, err := w.eng.Start(context.Background(), w.target(), sp)
		started <- err
	}()
	<-attaching
	if st := w.eng.List(); len(st) != 1 || st[0].State != engine.StateStarting {
		t.Errorf("during the setup: %+v, want one fault starting", st)
	}
	revoked := make(chan engine.Status, 1)
	go func() {
		st, err := w.eng.Revoke("racing")
		if err != nil {
			t.Error(err)
		}
		revoked <- st
	}()
	time.Sleep(50 * time.Millisecond) // the revoke waits for the setup
	close(proceed)
	if err := <-started; err == nil {
		t.Error("a fault revoked during its setup started")
	}
	if st := <-revoked; st.EndReason != engine.ReasonRevoked || st.State != engine.StateEnded {
		t.Errorf("revoke: %+v", st)
	}
	w.assertClean(t)
}

// TestCloseEndsAFaultMidSetup: closing the engine ends faults in every
// state, those being set up included; none starts afterwards.
func TestCloseEndsAFaultMidSetup(t *testing.T) {
	var once sync.Once
	attaching := make(chan struct{})
	hook := func() {}
	w := newWorldWith(t, nil, func() { hook() })
	active := w.start(t, &fault.HTTP{ErrorRate: 1, ErrorStatus: 503})
	hook = func() { once.Do(func() { close(attaching) }); time.Sleep(100 * time.Millisecond) }
	started := make(chan error, 1)
	go func() {
		_, err := w.eng.Start(context.Background(), w.target(), spec(t, &fault.HTTP{Port: 8081, ErrorRate: 1, ErrorStatus: 502}))
		started <- err
	}()
	<-attaching
	w.eng.Close()
	if err := <-started; err == nil {
		t.Error("a fault being set up during Close started")
	}
	if st := active.Status(); st.State != engine.StateEnded || st.EndReason != engine.ReasonShutdown {
		t.Errorf("active fault after Close: %+v", st)
	}
	if _, err := w.eng.Start(context.Background(), w.target(), spec(t, &fault.HTTP{Port: 8080})); !errdefs.IsUnavailable(err) {
		t.Errorf("Start after Close: %v, want Unavailable", err)
	}
	w.assertClean(t)
}

// TestCancelledStartLeavesNothing: the context of Start bounds the setup.
func TestCancelledStartLeavesNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	w := newWorldWith(t, nil, cancel)
	_, err := w.eng.Start(ctx, w.target(), spec(t, &fault.HTTP{Port: 8080, ErrorRate: 1, ErrorStatus: 503}))
	if err != context.Canceled {
		t.Errorf("Start with its context cancelled mid-setup: %v", err)
	}
	w.assertClean(t)
}

// TestDeletedTargetEndsItsFault: ip netns del of the target ends its fault
// within a second, releasing everything that kept the namespace alive.
func TestDeletedTargetEndsItsFault(t *testing.T) {
	w := newWorld(t)
	victim := w.net.AddHost("victim")
	f, err := w.eng.Start(context.Background(), engine.Target{NetnsPath: victim.Path}, spec(t, &fault.HTTP{Port: 8080, ErrorRate: 1, ErrorStatus: 503}))
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.DeleteNetns(victim.Name); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	select {
	case <-f.Done():
	case <-time.After(time.Second):
		t.Fatal("the fault outlived its deleted namespace by a second")
	}
	if st := f.Status(); st.EndReason != engine.ReasonTargetDeleted {
		t.Errorf("end reason %q, want target-deleted", st.EndReason)
	}
	if k := openNetnsFiles(t, victim); k != 1 { // the test's own handle
		t.Errorf("%d open files of the deleted namespace, want only the test's own", k)
	}
	t.Logf("ended %s after the namespace was deleted", time.Since(deleted).Round(time.Millisecond))
}

// assertClean checks that no fault is left, nothing is attached to the
// pod, and its port answers directly.
func (w *world) assertClean(t *testing.T) {
	t.Helper()
	if n := len(w.eng.List()); n != 0 {
		t.Errorf("List shows %d faults", n)
	}
	if n := len(netnstest.AttachedPrograms(t, w.pod.NS)); n != 0 {
		t.Errorf("%d programs attached", n)
	}
	if r := do(t, w.http, "GET", w.url+"/", nil); r.status != 200 {
		t.Errorf("the app answered %d through what is left", r.status)
	}
}
