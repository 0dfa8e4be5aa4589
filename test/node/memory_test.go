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
func rssMiB(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestIdleConnectionsAfterLargeResponsesStayUnder64MiB: 1,000 keep-alive
// clients, each idle after one 256 KiB response through an HTTP fault,
// keep faultlined (with the DaemonSet's GOMEMLIMIT) under 64 MiB: idle
// connections hold no buffers.
func TestIdleConnectionsAfterLargeResponsesStayUnder64MiB(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "48MiB") // as deploy/daemonset.yaml
	nd := newNode(t)
	big := strings.Repeat("x", 256<<10)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) })}
	go srv.Serve(nd.pod.Listen(t, "tcp", ":8090"))
	t.Cleanup(func() { srv.Close() })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := proctest.Inject(ctx, nd.api, nd.httpRequest(2*time.Minute, &pb.HTTPFault{Port: 8090, AverageDelay: durationpb.New(time.Millisecond)}))
		done <- err
	}()
	nd.waitFaults(t, 1)
	before := rssMiB(t, nd.daemon.Process.Pid)

	const clients, conc = 1000, 50
	addr := netip.AddrPortFrom(nd.pod.Addr, 8090).String()
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
	cancel()
	<-done
}
