package node

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/durationpb"

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

	block := bytes.Repeat([]byte{0x40, 0x01, 'x', 0x7f, 0x00}, 16<<10/5)
	floods := map[string]struct {
		conns int
		send  func(w io.Writer, fr *http2.Framer) error
	}{
		"continuation flood": {1, func(_ io.Writer, fr *http2.Framer) error {
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:100]}); err != nil {
				return err
			}
			for range 6400 { // 100 MiB at most
				if err := fr.WriteContinuation(1, false, block); err != nil {
					return err
				}
			}
			return nil
		}},
		"16 MiB frames": {8, func(w io.Writer, _ *http2.Framer) error {
			if _, err := w.Write([]byte{0xff, 0xff, 0xff, byte(http2.FrameHeaders), 0x4, 0, 0, 0, 1}); err != nil {
				return err
			}
			chunk := make([]byte, 64<<10)
			for range 256 {
				if _, err := w.Write(chunk); err != nil {
					return err
				}
			}
			return nil
		}},
	}
	want := map[string]string{}
	for name, f := range floods { // the reference: the Go server itself
		want[name], _ = h2Verdict(t, dial, addr, f.send)
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
				got, sent := h2Verdict(t, dial, addr, f.send)
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

// h2Verdict sends a flood on a new HTTP/2 connection and returns how the
// server ended it (its GOAWAY code, or "closed") and the bytes it took.
func h2Verdict(t *testing.T, dial func(context.Context, string, string) (net.Conn, error), addr string, send func(io.Writer, *http2.Framer) error) (string, int64) {
	t.Helper()
	c, err := dial(context.Background(), "tcp", addr)
	if err != nil {
		t.Error(err)
		return "", 0
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	cw := &countingWriter{w: c}
	io.WriteString(cw, http2.ClientPreface)
	fr := http2.NewFramer(cw, c)
	fr.WriteSettings()
	verdict := make(chan string, 1)
	go func() {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				verdict <- "closed"
				return
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				verdict <- ga.ErrCode.String()
				return
			}
		}
	}()
	go send(cw, fr) // ends with a write error once the server closes
	select {
	case v := <-verdict:
		return v, cw.n.Load()
	case <-time.After(10 * time.Second):
		t.Error("the server neither sent GOAWAY nor closed within 10s")
		return "", 0
	}
}

type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}
