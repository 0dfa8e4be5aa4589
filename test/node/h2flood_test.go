package node

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/faultline-dev/faultline/internal/testkit/h2test"
	"github.com/faultline-dev/faultline/internal/testkit/proctest"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// TestHTTP2FloodsKeepFaultlinedUnder64MiB: through a real faultlined with
// an HTTP fault on an h2c application, one connection sending 100 MiB of
// CONTINUATION and eight declaring 16 MiB frames end as a Go server ends
// them (the same port, unfaulted, is the reference), and faultlined's peak
// RSS stays under 64 MiB (the DaemonSet's limit is 128 Mi).
func TestHTTP2FloodsKeepFaultlinedUnder64MiB(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "48MiB") // as deploy/daemonset.yaml
	nd := newNode(t)
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }), Protocols: &protos}
	go srv.Serve(nd.pod.Listen(t, "tcp", ":8091"))
	t.Cleanup(func() { srv.Close() })
	addr := netip.AddrPortFrom(nd.pod.Addr, 8091).String()
	dial := nd.client.Dial()

	floods := map[string]struct {
		conns int
		send  h2test.Flood
	}{
		"continuation flood": {1, h2test.Floods["continuation flood"]},
		"16 MiB frames":      {8, h2test.Floods["16 MiB frame"]},
	}
	want := map[string]string{}
	for name, f := range floods { // the reference: the Go server itself
		want[name], _ = h2test.Verdict(t, dial, addr, f.send)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := proctest.Inject(ctx, nd.api, nd.httpRequest(time.Minute, &pb.HTTPFault{Port: 8091, AverageDelay: durationpb.New(time.Millisecond)}))
		done <- err
	}()
	nd.waitFaults(t, 1)
	before := rssMiB(t, nd.daemon.Process.Pid)
	for name, f := range floods {
		var wg sync.WaitGroup
		for range f.conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, sent := h2test.Verdict(t, dial, addr, f.send)
				if got != want[name] {
					t.Errorf("%s: the proxy ended with %s, a Go server with %s", name, got, want[name])
				}
				if sent > 8<<20 {
					t.Errorf("%s: the proxy took %d MiB before ending the connection, want at most 8", name, sent>>20)
				}
			}()
		}
		wg.Wait()
	}
	peak := peakRSSMiB(t, nd.daemon.Process.Pid)
	t.Logf("faultlined RSS %.1f MiB before the floods, peak %.1f MiB over the process's life; verdicts %v", before, peak, want)
	if peak > 64 {
		t.Errorf("faultlined's peak RSS %.1f MiB, want under 64 MiB", peak)
	}
	// The fault still works.
	if code, _ := nd.get(t); code != 200 {
		t.Errorf("after the floods: %d", code)
	}
	cancel()
	<-done
}
