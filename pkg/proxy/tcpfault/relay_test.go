package tcpfault

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/faultline-dev/faultline/pkg/fault"
)

// Every test runs a real TCP server on loopback behind the relay; bounds
// come from the toxic's parameters plus slack for a loaded machine.

// start serves app connections with handle and puts a relay applying f in
// front; it returns the relay's address and the relay.
func start(t *testing.T, f *fault.TCP, handle func(net.Conn)) (string, *Proxy) {
	t.Helper()
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	go func() {
		for {
			c, err := app.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	if f.Port == 0 {
		f.Port = 1
	}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Fault: f, Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", app.Addr().String())
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return ln.Addr().String(), p
}

func echo(c net.Conn) { io.Copy(c, c) }

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

func toxic(kind fault.ToxicKind, set func(*fault.Toxic)) fault.Toxic {
	t := fault.Toxic{Kind: kind, Toxicity: 1}
	if set != nil {
		set(&t)
	}
	return t
}

// roundTrip writes one byte and reads it back.
func roundTrip(t *testing.T, c net.Conn) time.Duration {
	t.Helper()
	start := time.Now()
	if _, err := c.Write([]byte{'x'}); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

func TestLatencyEveryChunkWithinItsInterval(t *testing.T) {
	addr, p := start(t, &fault.TCP{Downstream: []fault.Toxic{toxic(fault.ToxicLatency, func(x *fault.Toxic) { x.Latency, x.Jitter = 50*time.Millisecond, 10*time.Millisecond })}}, echo)
	c := dial(t, addr)
	const n, slack = 40, 30 * time.Millisecond
	for range n {
		if d := roundTrip(t, c); d < 40*time.Millisecond || d > 60*time.Millisecond+slack {
			t.Errorf("round trip %s outside [40ms, 60ms] (+%s slack)", d, slack)
		}
	}
	c.Close() // a direction counts its last bytes when it ends: wait for both
	for i := 0; i < 200; i++ {
		if c := p.Counters(); c.BytesUp == n && c.BytesDown == n && c.BytesDelayed == n {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if c := p.Counters(); c.Connections != 1 || c.Toxic != 1 || c.BytesUp != n || c.BytesDown != n || c.BytesDelayed != n {
		t.Errorf("counters %+v", c)
	}
}

func TestLatencyKeepsThroughput(t *testing.T) {
	// 8 MiB behind a 100 ms latency: chunks are delayed from when they
	// were read, so the stream takes about the latency, not a latency per chunk.
	const size = 8 << 20
	addr, _ := start(t, &fault.TCP{Downstream: []fault.Toxic{toxic(fault.ToxicLatency, func(x *fault.Toxic) { x.Latency = 100 * time.Millisecond })}},
		func(c net.Conn) { c.Write(bytes.Repeat([]byte{'d'}, size)) })
	c := dial(t, addr)
	begin := time.Now()
	n, _ := io.Copy(io.Discard, c)
	if took := time.Since(begin); n != size || took < 100*time.Millisecond || took > 2*time.Second {
		t.Errorf("%d bytes in %s, want %d in about 100ms", n, took, size)
	}
}

func TestBandwidth(t *testing.T) {
	const size, rate = 2 << 20, 1 << 20 // 2 MiB at 1 MiB/s: 2 s
	addr, _ := start(t, &fault.TCP{Downstream: []fault.Toxic{toxic(fault.ToxicBandwidth, func(x *fault.Toxic) { x.Rate = rate })}},
		func(c net.Conn) { c.Write(bytes.Repeat([]byte{'b'}, size)) })
	c := dial(t, addr)
	begin := time.Now()
	n, _ := io.Copy(io.Discard, c)
	took := time.Since(begin)
	// The first tenth of a second's worth goes at once.
	low := time.Duration(size-rate/10) * time.Second / rate
	if n != size || took < low || took > low*13/10 {
		t.Errorf("%d bytes in %s, want %d in [%s, %s]", n, took, size, low, low*13/10)
	}
	t.Logf("%d bytes in %s at %d B/s", n, took, rate)
}

func TestLimitDataCutsAfterItsBytes(t *testing.T) {
	addr, p := start(t, &fault.TCP{Downstream: []fault.Toxic{toxic(fault.ToxicLimitData, func(x *fault.Toxic) { x.Bytes = 1000 })}},
		func(c net.Conn) { c.Write(bytes.Repeat([]byte{'l'}, 64<<10)) })
	n, _ := io.Copy(io.Discard, dial(t, addr))
	if n != 1000 {
		t.Errorf("read %d bytes, want 1000", n)
	}
	waitCut(t, p, 1)
	// The chunk that crossed the limit lost its tail; what the app sent
	// after it may still be read and dropped, or never leave its buffer.
	if c := p.Counters(); c.BytesDown != 1000 || c.BytesDropped == 0 || c.BytesDropped > 64<<10-1000 {
		t.Errorf("counters %+v, want 1000 bytes down and some of the other %d dropped", c, 64<<10-1000)
	}
}

func TestResetPeerSendsRST(t *testing.T) {
	addr, p := start(t, &fault.TCP{Downstream: []fault.Toxic{toxic(fault.ToxicResetPeer, func(x *fault.Toxic) { x.Timeout = 200 * time.Millisecond })}}, echo)
	c := dial(t, addr)
	begin := time.Now()
	_, err := io.Copy(io.Discard, c)
	if took := time.Since(begin); !errors.Is(err, syscall.ECONNRESET) || took < 200*time.Millisecond || took > time.Second {
		t.Errorf("after %s: %v, want connection reset after 200ms", took, err)
	}
	waitCut(t, p, 1)
}

func TestTimeoutDeliversNothingThenCloses(t *testing.T) {
	addr, p := start(t, &fault.TCP{Upstream: []fault.Toxic{toxic(fault.ToxicTimeout, func(x *fault.Toxic) { x.Timeout = 300 * time.Millisecond })}}, echo)
	c := dial(t, addr)
	c.Write([]byte("ping"))
	begin := time.Now()
	n, _ := io.Copy(io.Discard, c)
	if took := time.Since(begin); n != 0 || took < 250*time.Millisecond || took > time.Second {
		t.Errorf("%d bytes, closed after %s; want nothing, closed after 300ms", n, took)
	}
	if c := p.Counters(); c.BytesDropped != 4 || c.BytesUp != 0 {
		t.Errorf("counters %+v, want the 4 bytes sent dropped", c)
	}
}

func TestSlowCloseDelaysTheFIN(t *testing.T) {
	addr, _ := start(t, &fault.TCP{Downstream: []fault.Toxic{toxic(fault.ToxicSlowClose, func(x *fault.Toxic) { x.Delay = 300 * time.Millisecond })}},
		func(c net.Conn) { c.Write([]byte("bye")) })
	c := dial(t, addr)
	b := make([]byte, 3)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if _, err := c.Read(b); err != io.EOF {
		t.Fatalf("after the data: %v, want EOF", err)
	}
	if took := time.Since(begin); took < 250*time.Millisecond || took > time.Second {
		t.Errorf("EOF %s after the data, want about 300ms", took)
	}
}

func TestSlicerSplitsIntoDelayedWrites(t *testing.T) {
	const size = 16 << 10 // 256 slices of 64 bytes, 2 ms apart: at least 510 ms
	addr, _ := start(t, &fault.TCP{Downstream: []fault.Toxic{toxic(fault.ToxicSlicer, func(x *fault.Toxic) { x.AverageSize, x.Delay = 64, 2*time.Millisecond })}},
		func(c net.Conn) { c.Write(bytes.Repeat([]byte{'s'}, size)) })
	c := dial(t, addr)
	begin := time.Now()
	n, _ := io.Copy(io.Discard, c)
	if took := time.Since(begin); n != size || took < 510*time.Millisecond || took > 5*time.Second {
		t.Errorf("%d bytes in %s, want %d in at least 510ms", n, took, size)
	}
}

func TestToxicityZeroLeavesConnectionsAlone(t *testing.T) {
	addr, p := start(t, &fault.TCP{Downstream: []fault.Toxic{toxic(fault.ToxicLatency, func(x *fault.Toxic) { x.Latency, x.Toxicity = time.Second, 0 })}}, echo)
	for range 5 {
		if d := roundTrip(t, dial(t, addr)); d > 500*time.Millisecond {
			t.Errorf("round trip %s with toxicity 0", d)
		}
	}
	if c := p.Counters(); c.Connections != 5 || c.Toxic != 0 {
		t.Errorf("counters %+v, want 5 connections, none toxic", c)
	}
}

// TestFidelity: 50 MB each way arrive byte-identical, one direction through
// the toxic path, the other spliced.
func TestFidelity(t *testing.T) {
	const size = 50 << 20
	pattern := func(w io.Writer) { io.CopyN(w, &counting{}, size) }
	addr, p := start(t, &fault.TCP{Upstream: []fault.Toxic{toxic(fault.ToxicLatency, func(x *fault.Toxic) { x.Latency = time.Millisecond })}},
		func(c net.Conn) {
			h := sha256.New()
			io.Copy(h, c) // the upload, until the client's FIN
			c.Write(h.Sum(nil))
			pattern(c)
		})
	c := dial(t, addr).(*net.TCPConn)
	pattern(c)
	c.CloseWrite()
	sum := make([]byte, 32)
	if _, err := io.ReadFull(c, sum); err != nil {
		t.Fatal(err)
	}
	want := sha256.New()
	pattern(want)
	if !bytes.Equal(sum, want.Sum(nil)) {
		t.Error("the upload arrived changed")
	}
	got := sha256.New()
	if n, _ := io.Copy(got, c); n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Errorf("the download: %d bytes, identical %v", n, bytes.Equal(got.Sum(nil), want.Sum(nil)))
	}
	if c := p.Counters(); c.BytesUp != size || c.BytesDown != size+32 {
		t.Errorf("counters %+v", c)
	}
}

// TestShutdownEndsToxicsNotConnections: after the fault, a relayed
// connection goes on untouched.
func TestShutdownEndsToxicsNotConnections(t *testing.T) {
	addr, p := start(t, &fault.TCP{Downstream: []fault.Toxic{toxic(fault.ToxicLatency, func(x *fault.Toxic) { x.Latency = 300 * time.Millisecond })}}, echo)
	c := dial(t, addr)
	if d := roundTrip(t, c); d < 300*time.Millisecond {
		t.Fatalf("round trip %s during the fault", d)
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	}()
	time.Sleep(50 * time.Millisecond)
	if d := roundTrip(t, c); d > 200*time.Millisecond {
		t.Errorf("round trip %s after the fault, want no latency", d)
	}
}

func TestValidation(t *testing.T) {
	for _, tc := range []struct {
		f    fault.TCP
		want string
	}{
		{fault.TCP{Port: 1}, "at least one toxic"},
		{fault.TCP{Port: 1, Downstream: []fault.Toxic{{Kind: fault.ToxicBandwidth, Toxicity: 1}}}, "downstream[0].bandwidth.rate must be a positive"},
		{fault.TCP{Port: 1, Upstream: []fault.Toxic{{Kind: "teleport", Toxicity: 1}}}, "upstream[0]: give one toxic"},
		{fault.TCP{Port: 1, Upstream: []fault.Toxic{{Kind: fault.ToxicLatency, Latency: time.Second, Toxicity: 2}}}, "upstream[0].toxicity must be in the range [0, 1]"},
		{fault.TCP{Port: 1, Upstream: []fault.Toxic{{Kind: fault.ToxicLatency, Latency: time.Second, Jitter: 2 * time.Second, Toxicity: 1}}}, "jitter must be in [0, latency]"},
		{fault.TCP{Port: 1, Upstream: []fault.Toxic{{Kind: fault.ToxicTimeout, Timeout: -time.Second, Toxicity: 1}}}, "must not be negative"},
		{fault.TCP{Port: 1, Upstream: []fault.Toxic{{Kind: fault.ToxicLimitData, Bytes: 1, Toxicity: 1}, {Kind: fault.ToxicLimitData, Bytes: 2, Toxicity: 1}}}, "appears twice"},
	} {
		if err := tc.f.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.f, err, tc.want)
		}
	}
}

func waitCut(t *testing.T, p *Proxy, n uint64) {
	t.Helper()
	for range 200 {
		if p.Counters().Cut == n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Errorf("cut %d connections, want %d", p.Counters().Cut, n)
}

// counting is an endless reader of a byte pattern.
type counting struct{ i byte }

func (c *counting) Read(p []byte) (int, error) {
	for k := range p {
		p[k] = c.i
		c.i = c.i*7 + 1
	}
	return len(p), nil
}

func TestResetPeerUpstreamResetsTheApp(t *testing.T) {
	appErr := make(chan error, 1)
	addr, _ := start(t, &fault.TCP{Upstream: []fault.Toxic{toxic(fault.ToxicResetPeer, func(x *fault.Toxic) { x.Timeout = 100 * time.Millisecond })}},
		func(c net.Conn) {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			_, err := io.Copy(io.Discard, c)
			appErr <- err
		})
	dial(t, addr)
	if err := <-appErr; !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the application read %v, want a reset", err)
	}
}
