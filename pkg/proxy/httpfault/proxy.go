// Package httpfault is faultline's transparent fault proxy for HTTP/1.1 and
// cleartext HTTP/2 (gRPC included), opened inside a target's network
// namespace. A fault.Rule decides each request; the proxy carries the
// decision out: it delays the request (or its response), answers it
// itself, or forwards it, and otherwise stays out of the way.
//
// A client connection is relayed to a connection of its own to the
// application, one for one, as without the proxy. HTTP/1.1 (http1.go) is
// read one request head at a time and forwarded as the bytes received, so
// Host, header order and case, chunk extensions and trailers reach the
// application as the client sent them. HTTP/2 (http2.go) is relayed frame
// by frame with x/net/http2's Framer; only request header blocks are
// decoded and re-encoded. Upgrades (WebSocket) become byte tunnels.
package httpfault

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/faultline-dev/faultline/pkg/fault"
)

// Counters are the request counts of one proxy.
type Counters struct {
	Requests       uint64 // requests seen
	Unmatched      uint64 // not matched by the rule: forwarded untouched
	Delayed        uint64 // given a delay (answered ones included)
	Errored        uint64 // answered by the proxy with the rule's answer
	UpstreamErrors uint64 // answered 502 because the application could not be reached
}

// Proxy is a transparent fault proxy. Set its fields, then call Serve
// with one or more listeners; Shutdown stops it.
type Proxy struct {
	// Rule decides each request. Nil passes every request through.
	Rule fault.Rule
	// Dial connects to the application. Required.
	Dial func(ctx context.Context) (net.Conn, error)
	// Logger receives connection-level errors. Nil discards them.
	Logger *slog.Logger
	// HeaderTimeout bounds the time an HTTP/1 client takes to send a
	// request head: from the accept for the first request, from its first
	// byte for the next ones. Beyond it the connection is closed (slowloris).
	// Zero means DefaultHeaderTimeout.
	HeaderTimeout time.Duration
	// IdleTimeout closes an HTTP/1 connection idle between requests for
	// that long. Zero means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// HeadBudget bounds the memory of large request heads being read; nil
	// gives the proxy one of DefaultHeadBudget for itself.
	HeadBudget *HeadBudget
	// Delays, if set, observes every delay the proxy spends, in seconds,
	// as measured: one that the fault's end cuts short counts what was
	// spent; one whose client leaves during it is not observed.
	Delays Observer
	// Overhead, if set, observes what the proxy adds to a request it does
	// not delay or answer, in seconds: from its head being read to its
	// head being sent to the application, a dial included.
	Overhead Observer

	requests, unmatched, delayed, errored, upstreamErrors atomic.Uint64
	pace                                                  pacer
	buffers                                               atomic.Int64 // pooled buffers held by connections

	initOnce  sync.Once
	heads     *HeadBudget
	ctx       context.Context // cancelled by Shutdown: ends delays
	cancel    context.CancelFunc
	killCtx   context.Context // cancelled when Shutdown gives up: ends dials
	kill      context.CancelFunc
	closing   atomic.Bool
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[connection]struct{}
	wg        sync.WaitGroup
}

// Observer takes measurements; a prometheus.Histogram is one. It must be
// safe for concurrent use and cheap: it runs on the request path.
type Observer interface{ Observe(float64) }

// observe adds the time since start to o, if set.
func observe(o Observer, start time.Time) {
	if o != nil {
		o.Observe(time.Since(start).Seconds())
	}
}

// connection is one client connection, HTTP/1.1 or HTTP/2; Shutdown
// knows connections only through it.
type connection interface {
	// drain ends the connection gracefully: at once if it is idle between
	// requests, else once the requests in flight are answered.
	drain()
	// close ends it now.
	close()
}

// Defaults of the proxy's timeouts. An application's own shorter idle
// timeout still applies: it closes its side, and the proxy then opens a
// new connection to it for the client's next request.
const (
	DefaultHeaderTimeout = 20 * time.Second
	DefaultIdleTimeout   = 2 * time.Minute
)

func (p *Proxy) headerTimeout() time.Duration { return cmp.Or(p.HeaderTimeout, DefaultHeaderTimeout) }
func (p *Proxy) idleTimeout() time.Duration   { return cmp.Or(p.IdleTimeout, DefaultIdleTimeout) }

// dialTimeout bounds a connection attempt to the application.
const dialTimeout = 5 * time.Second

// ErrClosed is returned by Serve after Shutdown.
var ErrClosed = errors.New("httpfault: proxy closed")

func (p *Proxy) init() {
	p.initOnce.Do(func() {
		p.ctx, p.cancel = context.WithCancel(context.Background())
		p.killCtx, p.kill = context.WithCancel(context.Background())
		p.listeners = map[net.Listener]struct{}{}
		p.conns = map[connection]struct{}{}
		p.heads = p.HeadBudget
		if p.heads == nil {
			p.heads = NewHeadBudget(DefaultHeadBudget)
		}
		if p.Logger == nil {
			p.Logger = slog.New(slog.DiscardHandler)
		}
	})
}

// Counters returns the counts so far. It is safe to call at any time.
func (p *Proxy) Counters() Counters {
	return Counters{
		Requests:       p.requests.Load(),
		Unmatched:      p.unmatched.Load(),
		Delayed:        p.delayed.Load(),
		Errored:        p.errored.Load(),
		UpstreamErrors: p.upstreamErrors.Load(),
	}
}

// Serve accepts connections on ln until Shutdown. It returns nil after
// Shutdown and the accept error otherwise.
func (p *Proxy) Serve(ln net.Listener) error {
	p.init()
	p.mu.Lock()
	if p.closing.Load() {
		p.mu.Unlock()
		return ErrClosed
	}
	p.listeners[ln] = struct{}{}
	p.wg.Add(1) // Shutdown waits for the accept loop too: it drains the queue
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.listeners, ln)
		p.mu.Unlock()
		p.wg.Done()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.closing.Load() || errors.Is(err, net.ErrClosed) {
				ln.Close()
				return nil
			}
			// Out of file descriptors or similar: back off briefly.
			p.Logger.Warn("accept failed", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		h1 := newH1(p, c)
		p.track(h1)
		go h1.serve()
	}
}

// track registers a connection; it is served even while shutting down,
// since it was steered here before steering stopped.
func (p *Proxy) track(c connection) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns[c] = struct{}{}
	p.wg.Add(1)
}

// swap replaces a tracked connection by another (HTTP/1 turning HTTP/2)
// and reports whether the proxy is shutting down, so that the new one
// drains at once.
func (p *Proxy) swap(old, c connection) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, old)
	p.conns[c] = struct{}{}
	return p.closing.Load()
}

// done unregisters a connection that has ended.
func (p *Proxy) done(c connection) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	p.wg.Done()
}

// acceptDrain is how long Shutdown keeps accepting connections that were
// steered to the listener before steering stopped.
const acceptDrain = 50 * time.Millisecond

// Shutdown stops the proxy gracefully; call it after steering has stopped.
// It accepts what is still queued on the listeners for a moment, drains
// every connection (idle ones close at once, requests in flight finish
// with no fault: delays end early), and when ctx is done closes what is
// left. It is safe to call more than once.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.init()
	p.mu.Lock()
	p.closing.Store(true)
	p.cancel()
	for ln := range p.listeners {
		if dl, ok := ln.(interface{ SetDeadline(time.Time) error }); ok {
			_ = dl.SetDeadline(time.Now().Add(acceptDrain))
		} else {
			ln.Close()
		}
	}
	for c := range p.conns {
		c.drain()
	}
	p.mu.Unlock()

	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		p.kill()
		return nil
	case <-ctx.Done():
		p.kill()
		p.mu.Lock()
		for c := range p.conns {
			c.close()
		}
		p.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// decide asks the rule about one request and counts the decision; once
// the proxy is shutting down, the fault is over and nothing is decided.
func (p *Proxy) decide(r fault.Request) fault.Decision {
	p.requests.Add(1)
	var d fault.Decision
	if p.Rule != nil && !p.closing.Load() {
		d = p.Rule.Decide(r)
	}
	if !d.Matched {
		p.unmatched.Add(1)
	}
	if d.Delay > 0 {
		p.delayed.Add(1)
	}
	if d.Answer != nil {
		p.errored.Add(1)
	}
	return d
}

// wait spends d, or less: it ends early when the proxy shuts down (the
// fault is over) and reports false when gone is closed first (the client
// went away).
func (p *Proxy) wait(d time.Duration, gone <-chan struct{}) bool {
	if d <= 0 {
		return true
	}
	start := time.Now()
	rang := make(chan struct{})
	defer p.pace.after(d, func() { close(rang) }).Stop()
	select {
	case <-rang:
	case <-p.ctx.Done():
	case <-gone:
		return false
	}
	observe(p.Delays, start)
	return true
}

func (p *Proxy) dial() (net.Conn, error) {
	ctx, cancel := context.WithTimeout(p.killCtx, dialTimeout)
	defer cancel()
	return p.Dial(ctx)
}
