// Package tcpfault relays the TCP connections of one port to the
// application and applies a fault.TCP's toxics to their bytes, as
// Toxiproxy does, without parsing them: databases, caches and TLS services
// alike. A direction without a toxic is relayed by the kernel (io.Copy
// between TCP connections splices); a toxic direction is read by one
// goroutine and written by another, so that a latency delays each chunk
// from when it was read without slowing the stream to one chunk per delay.
package tcpfault

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/faultline-dev/faultline/pkg/fault"
)

// Counters are a relay's counts so far.
type Counters struct {
	Connections uint64 // relayed
	Toxic       uint64 // with at least one toxic applied
	Cut         uint64 // closed or reset by a toxic
	// Bytes relayed client → application and back; a direction without
	// toxics (spliced by the kernel) counts its bytes when it ends.
	BytesUp, BytesDown uint64
	// BytesDelayed went through a latency, bandwidth or slicer toxic;
	// BytesDropped were read and never delivered (timeout, limit_data, a
	// cut connection).
	BytesDelayed, BytesDropped uint64
	// TLS: ClientHellos read, and handshakes the TLS action faulted.
	TLSHandshakes, TLSFaulted uint64
}

// Proxy is the relay of one fault.
type Proxy struct {
	Fault *fault.TCP
	// Dial connects to the application. Required.
	Dial   func(ctx context.Context) (net.Conn, error)
	Logger *slog.Logger

	conns, toxic, cut, up, down          atomic.Uint64
	delayed, dropped, hellos, tlsFaulted atomic.Uint64

	certs certSource // TLS certificate action

	initOnce  sync.Once
	ctx       context.Context // cancelled by Shutdown: toxics stop
	cancel    context.CancelFunc
	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	open      map[*relay]struct{}
	wg        sync.WaitGroup
}

// ErrClosed is returned by Serve after Shutdown.
var ErrClosed = errors.New("tcpfault: relay closed")

// dialTimeout bounds connecting to the application.
const dialTimeout = 10 * time.Second

func (p *Proxy) init() {
	p.initOnce.Do(func() {
		p.ctx, p.cancel = context.WithCancel(context.Background())
		p.listeners, p.open = map[net.Listener]struct{}{}, map[*relay]struct{}{}
		if p.Logger == nil {
			p.Logger = slog.New(slog.DiscardHandler)
		}
		if t := p.Fault.TLS; t != nil && t.Certificate != nil {
			p.certs.cert = t.Certificate
		}
	})
}

// Counters returns the counts so far; safe at any time.
func (p *Proxy) Counters() Counters {
	return Counters{Connections: p.conns.Load(), Toxic: p.toxic.Load(), Cut: p.cut.Load(), BytesUp: p.up.Load(), BytesDown: p.down.Load(),
		BytesDelayed: p.delayed.Load(), BytesDropped: p.dropped.Load(), TLSHandshakes: p.hellos.Load(), TLSFaulted: p.tlsFaulted.Load()}
}

// Serve relays the connections ln accepts until Shutdown.
func (p *Proxy) Serve(ln net.Listener) error {
	p.init()
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return ErrClosed
	}
	p.listeners[ln] = struct{}{}
	p.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			p.mu.Lock()
			closing := p.closing
			p.mu.Unlock()
			if closing || errors.Is(err, net.ErrClosed) {
				return nil
			}
			p.Logger.Warn("accept failed", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		r := &relay{p: p, client: c}
		p.mu.Lock()
		if p.closing {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.open[r] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go r.run()
	}
}

// Shutdown stops accepting and ends the toxics: relayed connections go on
// untouched until they end or ctx is done, when they are closed.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.init()
	p.mu.Lock()
	p.closing = true
	p.cancel()
	for ln := range p.listeners {
		ln.Close()
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		p.mu.Lock()
		for r := range p.open {
			r.close(toNone)
		}
		p.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// relay is one client connection and its connection to the application.
type relay struct {
	p      *Proxy
	client net.Conn
	cut    atomic.Bool

	mu     sync.Mutex
	up     net.Conn // set once dialled
	closed bool
}

// Which side of a relay a reset goes to.
const (
	toNone = iota
	toClient
	toApp
)

// close ends both connections, the side reset names with a RST.
func (r *relay) close(reset int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	rst := func(c net.Conn) {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}
	if reset == toClient {
		rst(r.client)
	}
	r.client.Close()
	if r.up != nil {
		if reset == toApp {
			rst(r.up)
		}
		r.up.Close()
	}
}

// setUp records the application connection, unless the relay was closed
// meanwhile (then it closes it and reports false).
func (r *relay) setUp(up net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		up.Close()
		return false
	}
	r.up = up
	return true
}

// cutBy is a toxic ending the connection; it counts once.
func (r *relay) cutBy(reset int) {
	if r.cut.CompareAndSwap(false, true) {
		r.p.cut.Add(1)
	}
	r.close(reset)
}

func (r *relay) run() {
	p := r.p
	defer func() {
		r.close(toNone)
		p.mu.Lock()
		delete(p.open, r)
		p.mu.Unlock()
		p.wg.Done()
	}()
	p.conns.Add(1)
	// A TLS fault reads the ClientHello first: it decides whether the
	// connection is faulted at all, and the handshake's fate.
	faulted, action := true, fault.TLSMatchOnly
	var h hello
	if t := p.Fault.TLS; t != nil {
		h = readHello(r.client)
		if h.info != nil {
			p.hellos.Add(1)
		}
		faulted = h.info != nil && t.Matches(h.info.ServerName)
		if faulted && t.Action != fault.TLSMatchOnly && t.Applies() {
			action = t.Action
			p.tlsFaulted.Add(1)
		}
	}
	switch action {
	case fault.TLSReset:
		r.cutBy(toClient)
		return
	case fault.TLSAlert:
		_ = r.client.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = r.client.Write(alertRecord(p.Fault.TLS.Alert.Code))
		r.cutBy(toNone)
		return
	case fault.TLSDelay:
		wait(p.ctx, time.Now().Add(p.Fault.TLS.HandshakeDelay))
	}
	ctx, cancel := context.WithTimeout(p.ctx, dialTimeout)
	up, err := p.Dial(ctx)
	cancel()
	if err != nil {
		p.Logger.Debug("dial the application", "err", err)
		r.close(toClient) // as a refused connection would, without the proxy
		return
	}
	if !r.setUp(up) {
		return
	}
	var upT, downT []fault.Toxic
	if faulted {
		upT, downT = draw(p.Fault.Upstream), draw(p.Fault.Downstream)
	}
	if len(upT)+len(downT) > 0 {
		p.toxic.Add(1)
	}
	// from and to are the client's two directions: one net.Conn, but for
	// a replayed ClientHello or the fault's own TLS.
	from, to := r.client, r.client
	switch {
	case action == fault.TLSCertificate:
		var ok bool
		if from, up, ok = r.terminate(p.ctx, h, up); !ok {
			return
		}
		to = from
	case len(h.raw) > 0 && len(upT) > 0:
		from = newReplayConn(r.client, h.raw) // the ClientHello goes through the toxics too
	case len(h.raw) > 0:
		if _, err := up.Write(h.raw); err != nil {
			r.close(toClient)
			return
		}
		p.up.Add(uint64(len(h.raw)))
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.pipe(up, from, upT, &p.up, true) }()
	go func() { defer wg.Done(); r.pipe(to, up, downT, &p.down, false) }()
	wg.Wait()
}

// draw picks the toxics that apply to a new connection.
func draw(ts []fault.Toxic) []fault.Toxic {
	var out []fault.Toxic
	for _, t := range ts {
		if t.Applies() {
			out = append(out, t)
		}
	}
	return out
}

// chunk is what one read gave, and when.
type chunk struct {
	b  []byte
	at time.Time
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// pipe copies src to dst through the toxics, then half-closes dst. A
// read or write error ends the whole connection.
func (r *relay) pipe(dst, src net.Conn, toxics []fault.Toxic, count *atomic.Uint64, upstream bool) {
	if len(toxics) == 0 {
		n, err := io.Copy(dst, src) // splice(2) between TCP connections
		count.Add(uint64(n))
		r.halfClose(dst, err)
		return
	}
	var t toxicSet
	for _, x := range toxics {
		t.add(x)
	}
	ctx := r.p.ctx
	// Timers of the connection's life.
	if t.timeout != nil && t.timeout.Timeout > 0 {
		tm := time.AfterFunc(t.timeout.Timeout, func() { r.cutBy(toNone) })
		defer tm.Stop()
	}
	if t.reset != nil {
		side := toClient // downstream: the client gets the RST
		if upstream {
			side = toApp
		}
		tm := time.AfterFunc(t.reset.Timeout, func() { r.cutBy(side) })
		defer tm.Stop()
	}
	chunks := make(chan chunk, 16)
	readErr := make(chan error, 1)
	go func() {
		defer close(chunks)
		for {
			bp := bufPool.Get().(*[]byte)
			n, err := src.Read(*bp)
			if n > 0 {
				chunks <- chunk{b: (*bp)[:n], at: time.Now()}
			} else {
				bufPool.Put(bp)
			}
			if err != nil {
				readErr <- err
				return
			}
		}
	}()
	var passed int64
	var next time.Time // bandwidth: when the next byte may go
	dead := false      // cut or failed: the rest is read off and dropped
	shaped := t.latency != nil || t.bandwidth != nil || t.slicer != nil
	for c := range chunks {
		b := c.b[:cap(c.b)]
		live := ctx.Err() == nil // after the fault, the rest goes untouched
		if dead || (live && t.timeout != nil) {
			r.p.dropped.Add(uint64(len(c.b)))
			bufPool.Put(&b) // delivered nowhere
			continue
		}
		if live && t.latency != nil {
			wait(ctx, c.at.Add(t.latency.Latency+jitter(t.latency.Jitter)))
		}
		data := c.b
		limited := false
		if live && t.limit != nil && passed+int64(len(data)) >= t.limit.Bytes {
			data, limited = data[:t.limit.Bytes-passed], true
			r.p.dropped.Add(uint64(len(c.b) - len(data)))
		}
		if err := r.write(ctx, dst, data, &t, &next); err != nil {
			r.p.dropped.Add(uint64(len(data)))
			r.close(toNone)
			dead = true
		} else {
			passed += int64(len(data))
			count.Add(uint64(len(data)))
			if live && shaped {
				r.p.delayed.Add(uint64(len(data)))
			}
		}
		bufPool.Put(&b)
		if limited {
			r.cutBy(toNone)
			dead = true
		}
	}
	err := <-readErr
	if t.slowClose != nil && ctx.Err() == nil && errors.Is(err, io.EOF) {
		wait(ctx, time.Now().Add(t.slowClose.Delay))
	}
	r.halfClose(dst, err)
}

// write sends data, shaped by the slicer and the bandwidth while the fault
// lasts.
func (r *relay) write(ctx context.Context, dst net.Conn, data []byte, t *toxicSet, next *time.Time) error {
	for len(data) > 0 {
		piece := data
		live := ctx.Err() == nil
		if live && t.slicer != nil {
			size := t.slicer.AverageSize
			if v := t.slicer.SizeVariation; v > 0 {
				size += rand.IntN(2*v+1) - v
			}
			piece = data[:min(len(data), max(size, 1))]
		}
		if live && t.bandwidth != nil {
			// At most a tenth of a second's worth per write, so that the
			// rate holds over short spans too.
			piece = piece[:min(len(piece), int(max(t.bandwidth.Rate/10, 1)))]
			now := time.Now()
			if next.Before(now) {
				*next = now
			}
			wait(ctx, *next)
			*next = next.Add(time.Duration(float64(len(piece)) / float64(t.bandwidth.Rate) * float64(time.Second)))
		}
		if _, err := dst.Write(piece); err != nil {
			return err
		}
		data = data[len(piece):]
		if live && t.slicer != nil && len(data) > 0 && t.slicer.Delay > 0 {
			wait(ctx, time.Now().Add(t.slicer.Delay))
		}
	}
	return nil
}

// halfClose passes the end of one direction on: a FIN after EOF, the end
// of the whole connection after an error.
func (r *relay) halfClose(dst net.Conn, err error) {
	if err != nil && !errors.Is(err, io.EOF) {
		r.close(toNone)
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		return
	}
	r.close(toNone)
}

// toxicSet is one direction's toxics by kind (validation allows one of each).
type toxicSet struct {
	latency, bandwidth, timeout, reset, slowClose, limit, slicer *fault.Toxic
}

func (s *toxicSet) add(t fault.Toxic) {
	switch t.Kind {
	case fault.ToxicLatency:
		s.latency = &t
	case fault.ToxicBandwidth:
		s.bandwidth = &t
	case fault.ToxicTimeout:
		s.timeout = &t
	case fault.ToxicResetPeer:
		s.reset = &t
	case fault.ToxicSlowClose:
		s.slowClose = &t
	case fault.ToxicLimitData:
		s.limit = &t
	case fault.ToxicSlicer:
		s.slicer = &t
	}
}

// jitter draws uniformly from [-j, j].
func jitter(j time.Duration) time.Duration {
	if j <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(2*j)+1)) - j
}

// wait sleeps until t, or until ctx is done.
func wait(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
}
