package node

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faultline-dev/faultline/internal/testkit/proctest"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// rssMiB returns a process's resident set size.
func rssMiB(t *testing.T, pid int) float64 { return statusMiB(t, pid, "VmRSS:") }

// peakRSSMiB returns the largest resident set size a process has had.
func peakRSSMiB(t *testing.T, pid int) float64 { return statusMiB(t, pid, "VmHWM:") }

// statusMiB returns a size field of /proc/PID/status.
func statusMiB(t *testing.T, pid int, field string) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	t.Fatal("no " + field)
	return 0
}

// faultedApp serves handler on :8090 in the pod, behind a 1 ms HTTP fault
// of a faultlined with the DaemonSet's GOMEMLIMIT, until the test ends. It
// returns the node, the app's address and faultlined's RSS with the fault
// alone.
func faultedApp(t *testing.T, handler http.HandlerFunc) (*node, string, float64) {
	t.Helper()
	t.Setenv("GOMEMLIMIT", "48MiB") // as deploy/daemonset.yaml
	nd := newNode(t)
	srv := &http.Server{Handler: handler}
	go srv.Serve(nd.pod.Listen(t, "tcp", ":8090"))
	t.Cleanup(func() { srv.Close() })

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := proctest.Inject(ctx, nd.api, nd.httpRequest(2*time.Minute, &pb.HTTPFault{Port: 8090, AverageDelay: durationpb.New(time.Millisecond)}))
		done <- err
	}()
	t.Cleanup(func() { cancel(); <-done })
	nd.waitFaults(t, 1)
	return nd, netip.AddrPortFrom(nd.pod.Addr, 8090).String(), rssMiB(t, nd.daemon.Process.Pid)
}

// TestIdleConnectionsAfterLargeResponsesStayUnder64MiB: 1,000 keep-alive
// clients, each idle after one 256 KiB response through an HTTP fault,
// keep faultlined (with the DaemonSet's GOMEMLIMIT) under 64 MiB: idle
// connections hold no buffers.
func TestIdleConnectionsAfterLargeResponsesStayUnder64MiB(t *testing.T) {
	big := strings.Repeat("x", 256<<10)
	nd, addr, before := faultedApp(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) })
	ctx := context.Background()

	const clients, conc = 1000, 50
	conns := make([]net.Conn, clients)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	next := make(chan int)
	dial := nd.client.Dial()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := dial(ctx, "tcp", addr)
				if err != nil {
					errs <- err
					continue
				}
				conns[i] = c
				c.SetDeadline(time.Now().Add(20 * time.Second))
				fmt.Fprint(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err == nil {
					var n int64
					n, err = io.Copy(io.Discard, resp.Body)
					if err == nil && n != int64(len(big)) {
						err = fmt.Errorf("body of %d bytes", n)
					}
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range clients {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("client: %v", err)
	}
	time.Sleep(2 * time.Second) // let the GC settle, as it would on a node
	after := rssMiB(t, nd.daemon.Process.Pid)
	t.Logf("faultlined RSS: %.1f MiB with the fault and no clients, %.1f MiB with %d idle clients after 256 KiB each", before, after, clients)
	if after > 64 {
		t.Errorf("faultlined RSS %.1f MiB with %d idle connections, want under 64 MiB", after, clients)
	}
}

// TestIdleAndPartialHeadsStayUnder100MiB: 10,000 connections that send
// nothing and 1,000 that stall in the middle of a 60 KiB head keep
// faultlined (with the DaemonSet's GOMEMLIMIT) under 100 MiB, while normal
// requests through the same fault keep succeeding; the stalled heads are
// held within the head budget, and those past it answered 431.
func TestIdleAndPartialHeadsStayUnder100MiB(t *testing.T) {
	nd, addr, before := faultedApp(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	ctx := context.Background()

	const idle, partial, conc = 10000, 1000, 50
	dial := nd.client.Dial()
	pad := "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("p", 60<<10)
	conns := make([]net.Conn, idle+partial)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	next := make(chan int)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := dial(ctx, "tcp", addr)
				if err == nil && i >= idle {
					_, err = io.WriteString(c, pad)
				}
				if err != nil {
					select {
					case errs <- fmt.Errorf("connection %d: %w", i, err):
					default:
					}
					continue
				}
				conns[i] = c
			}
		}()
	}
	start := time.Now()
	for i := range conns {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	opened := time.Since(start)
	time.Sleep(2 * time.Second) // the proxy reads the heads; the GC settles
	held := rssMiB(t, nd.daemon.Process.Pid)

	// Normal requests still pass, on fresh connections.
	hc := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}, Timeout: 5 * time.Second}
	for i := range 20 {
		resp, err := hc.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("request %d beside the held connections: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d beside the held connections: %d", i, resp.StatusCode)
		}
	}
	// Heads past the head budget (8 MiB: 128 of them) were answered 431.
	refused := 0
	for _, c := range conns[idle:] {
		c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if b, _ := io.ReadAll(c); strings.HasPrefix(string(b), "HTTP/1.1 431 ") {
			refused++
		}
	}
	t.Logf("faultlined RSS: %.1f MiB with the fault alone, %.1f MiB with %d idle and %d partial 60 KiB heads (opened in %s); %d heads answered 431",
		before, held, idle, partial, opened.Round(time.Millisecond), refused)
	if refused < partial-128 || refused == partial {
		t.Errorf("%d of %d stalled 60 KiB heads answered 431, want all but the head budget's 128", refused, partial)
	}
	if held > 100 {
		t.Errorf("faultlined RSS %.1f MiB, want under 100 MiB", held)
	}
	if opened > 20*time.Second {
		t.Fatalf("opening took %s: the header timeout may have closed heads before the measurement", opened)
	}
}
