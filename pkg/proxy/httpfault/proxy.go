package httpfault

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Counters are the request counts of one proxy.
type Counters struct {
	Requests       uint64 // requests seen
	Unmatched      uint64 // not matched by the fault, or excluded: forwarded untouched
	Delayed        uint64 // given a delay (errored ones included)
	Errored        uint64 // answered with the injected error
	UpstreamErrors uint64 // answered 502 because the application could not be reached
}

// Proxy is a transparent HTTP/1.1 fault proxy. Set its fields, then call
// Serve with one or more listeners; Shutdown stops it.
type Proxy struct {
	// Fault is applied to every HTTP request (HTTP/1.1 and HTTP/2). Nil
	// passes them through. It must not change once Serve has been called.
	Fault *Fault
	// GRPC is applied to gRPC calls instead of Fault. Nil passes them
	// through (or applies Fault, if set).
	GRPC *GRPCFault
	// Dial connects to the application. Required.
	Dial func(ctx context.Context) (net.Conn, error)
	// Logger receives connection-level errors. Nil discards them.
	Logger *slog.Logger

	requests, unmatched, delayed, errored, upstreamErrors atomic.Uint64

	initOnce  sync.Once
	ctx       context.Context // cancelled by Shutdown: ends delays
	cancel    context.CancelFunc
	killCtx   context.Context // cancelled when Shutdown gives up: ends dials
	kill      context.CancelFunc
	closing   atomic.Bool
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	wg        sync.WaitGroup
}

// dialTimeout bounds a connection attempt to the application.
const dialTimeout = 5 * time.Second

// ErrClosed is returned by Serve after Shutdown.
var ErrClosed = errors.New("httpfault: proxy closed")

func (p *Proxy) init() {
	p.initOnce.Do(func() {
		p.ctx, p.cancel = context.WithCancel(context.Background())
		p.killCtx, p.kill = context.WithCancel(context.Background())
		p.listeners = map[net.Listener]struct{}{}
		p.conns = map[*conn]struct{}{}
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
		go p.track(c).serve()
	}
}

// track registers a connection; it is served even while shutting down,
// since it was steered here before steering stopped.
func (p *Proxy) track(c net.Conn) *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	cc := &conn{p: p, c: c}
	p.conns[cc] = struct{}{}
	p.wg.Add(1)
	return cc
}

// acceptDrain is how long Shutdown keeps accepting connections that were
// steered to the listener before steering stopped.
const acceptDrain = 50 * time.Millisecond

// Shutdown stops the proxy gracefully; call it after steering has stopped.
// It accepts what is still queued on the listeners for a moment, closes
// keep-alive connections that sit idle between requests, and lets requests
// in flight and connections yet to send their first request finish, with
// no fault (delays end early), until ctx is done; then it closes
// everything. It is safe to call more than once.
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
		if c.idle.Load() {
			c.closeAll()
		}
		c.upMu.Lock()
		if c.relay != nil {
			c.drainHTTP2()
		}
		c.upMu.Unlock()
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
			c.closeAll()
		}
		p.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// sleep waits for d, or less if the proxy shuts down.
func (p *Proxy) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-p.ctx.Done():
	}
}

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, maxHead) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}
)

// conn is one client connection and, once a request is forwarded, its own
// connection to the application: one upstream connection per client
// connection, opened and closed with it, as without the proxy.
type conn struct {
	p    *Proxy
	c    net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	idle atomic.Bool // between requests, after at least one

	upMu  sync.Mutex
	up    net.Conn
	upbr  *bufio.Reader
	upbw  *bufio.Writer
	relay *h2relay // HTTP/2 connections only

	drainers sync.WaitGroup // drainHTTP2's goroutine
}

// drainHTTP2 ends an HTTP/2 connection gracefully: the client gets a
// GOAWAY, and the connection closes once its relay has no stream left (or
// when Shutdown gives up). Shutdown calls it for relays that exist, and a
// relay that starts during Shutdown calls it itself.
// Call it with upMu held; serveHTTP2 waits for its goroutine before the
// connection's buffers go back to their pools.
func (c *conn) drainHTTP2() {
	r := c.relay
	r.shutdown()
	c.drainers.Add(1)
	go func() {
		defer c.drainers.Done()
		select {
		case <-r.drained:
			_ = r.flush(r.client) // the frames that ended the last streams
		case <-r.ended:
		case <-c.p.killCtx.Done():
		}
		c.closeAll()
	}()
}

// h2Preface starts every cleartext HTTP/2 connection with prior knowledge.
var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// serve is the connection's pipeline:
//  1. wait for a request head (the connection is idle meanwhile);
//  2. decide the request's fate from the fault;
//  3. answer with the injected error, after its delay; or
//  4. delay, forward the head and stream the body to the application;
//  5. relay the response (and tunnel the bytes after a 101);
//  6. repeat while both sides keep the connection alive.
func (c *conn) serve() {
	p := c.p
	c.br = readerPool.Get().(*bufio.Reader)
	c.br.Reset(c.c)
	c.bw = writerPool.Get().(*bufio.Writer)
	c.bw.Reset(c.c)
	defer func() {
		c.closeAll()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.br.Reset(nil)
		readerPool.Put(c.br)
		c.bw.Reset(nil)
		writerPool.Put(c.bw)
		if c.upbr != nil {
			c.upbr.Reset(nil)
			readerPool.Put(c.upbr)
			c.upbw.Reset(nil)
			writerPool.Put(c.upbw)
		}
		p.wg.Done()
	}()

	if h2, err := c.sniffH2(); err != nil {
		return
	} else if h2 {
		c.serveHTTP2()
		return
	}
	for served := 0; ; served++ {
		// 1. Wait for the next request. A connection that has served one
		// is idle meanwhile: Shutdown may close it.
		if served > 0 {
			c.idle.Store(true)
			if p.closing.Load() {
				return
			}
		}
		raw, err := readHead(c.br)
		c.idle.Store(false)
		if err != nil {
			if errors.Is(err, errHeadTooLarge) {
				c.writeResponse(http.StatusRequestHeaderFieldsTooLarge, nil, nil, false, true)
			}
			return
		}
		req, err := parseRequestHead(raw)
		if err != nil {
			c.writeResponse(http.StatusBadRequest, nil, []byte("faultline: malformed request\n"), false, true)
			return
		}
		if !c.handle(req) {
			return
		}
	}
}

func (c *conn) sniffH2() (bool, error) {
	for {
		buf, _ := c.br.Peek(c.br.Buffered())
		n := min(len(buf), len(h2Preface))
		if !bytes.Equal(buf[:n], h2Preface[:n]) {
			return false, nil
		}
		if n == len(h2Preface) {
			return true, nil
		}
		if _, err := c.br.Peek(len(buf) + 1); err != nil {
			return false, err
		}
	}
}

// handle runs steps 2-5 for one request and reports whether the connection
// stays open for another.
func (c *conn) handle(req *requestHead) bool {
	p := c.p
	// 2. Decide.
	d := p.decide(req, false)
	// 3. The injected error, delayed too.
	if d.fail {
		p.sleep(d.delay)
		return c.answerError(req)
	}
	// 4. Delay where the fault says, then forward.
	var hold time.Duration
	if p.Fault != nil && p.Fault.DelayMode == DelayResponse {
		hold = d.delay
	} else {
		p.sleep(d.delay)
	}
	return c.forward(req, hold)
}

// decide draws the fate of one request and counts it.
func (p *Proxy) decide(req request, grpcCall bool) decision {
	p.requests.Add(1)
	var d decision
	switch {
	case p.closing.Load():
	case grpcCall && p.GRPC != nil:
		d = p.GRPC.decide(req)
	case p.Fault != nil:
		d = p.Fault.decide(req)
	}
	if !d.faulted {
		p.unmatched.Add(1)
	}
	if d.delay > 0 {
		p.delayed.Add(1)
	}
	if d.fail {
		p.errored.Add(1)
	}
	return d
}

func (c *conn) answerError(req *requestHead) bool {
	f := c.p.Fault
	closeAfter := req.close
	_, _ = c.br.Discard(len(req.raw))
	if req.hasBody() {
		if req.expect100 {
			// The client waits for a go-ahead that will not come: answer
			// and close rather than wait for a body that is not sent.
			closeAfter = true
		} else if err := copyRequestBody(discardWriter(), c.br, req.framing); err != nil {
			return false
		}
	}
	if err := c.writeResponse(f.ErrorCode, f.ErrorHeaders, f.ErrorBody, req.method == "HEAD", closeAfter); err != nil {
		return false
	}
	return !closeAfter
}

// forward sends the request to the application and relays the response,
// holding the response head for hold first.
func (c *conn) forward(req *requestHead, hold time.Duration) bool {
	p := c.p
	fresh := false
	if c.up == nil {
		if err := c.dialUp(); err != nil {
			return c.badGateway(err)
		}
		fresh = true
	}
	hasBody := req.hasBody()
	var bodyDone chan error

	// 4b. Send the head. A request without a body stays in the client
	// buffer until the response starts, so it can be resent once if a
	// reused upstream connection turns out to have been closed.
	send := func() error {
		if _, err := c.upbw.Write(req.raw); err != nil {
			return err
		}
		return c.upbw.Flush()
	}
	if !hasBody {
		if err := send(); err != nil {
			if fresh || !c.redial() || send() != nil {
				return c.badGateway(err)
			}
			fresh = true
		}
	} else {
		_, _ = c.upbw.Write(req.raw)
		_, _ = c.br.Discard(len(req.raw))
		if !req.expect100 && !req.chunked && int64(c.br.Buffered()) >= req.contentLength {
			// The whole body is here: send it with the head.
			if err := copyN(c.upbw, c.br, req.contentLength); err != nil {
				return false
			}
			if err := c.upbw.Flush(); err != nil {
				return c.badGateway(err)
			}
		} else {
			// Stream the body while waiting for the response: the
			// application may answer 100 Continue, or early.
			bodyDone = make(chan error, 1)
			go c.streamBody(req.framing, bodyDone)
		}
	}

	// 5. Relay interim responses, then the final one.
	headSent := false
	for {
		raw, err := readHead(c.upbr)
		if err != nil {
			if !hasBody && !fresh && !headSent && isConnGone(err) && c.redial() && send() == nil {
				fresh = true
				continue
			}
			if !headSent {
				c.waitBody(bodyDone)
				return c.badGateway(err)
			}
			return false
		}
		if !hasBody && !headSent {
			_, _ = c.br.Discard(len(req.raw))
		}
		headSent = true
		resp, err := parseResponseHead(raw)
		if err != nil {
			c.waitBody(bodyDone)
			return c.badGateway(err)
		}
		kind := resp.body(req.method)
		if resp.status/100 == 1 && kind != bodyTunnel {
			_, _ = c.bw.Write(raw)
			_, _ = c.upbr.Discard(len(raw))
			if err := c.bw.Flush(); err != nil {
				return false
			}
			continue
		}
		p.sleep(hold)
		_, _ = c.bw.Write(raw)
		_, _ = c.upbr.Discard(len(raw))
		switch kind {
		case bodyTunnel:
			if c.bw.Flush() != nil || c.waitBody(bodyDone) != nil {
				return false
			}
			c.tunnel()
			return false
		case bodyLength:
			err = copyN(c.bw, c.upbr, resp.contentLength)
		case bodyChunked:
			err = copyChunked(c.bw, c.upbr)
		case bodyUntilClose:
			err = copyUntilEOF(c.bw, c.upbr)
		}
		if err == nil {
			err = c.bw.Flush()
		}
		if berr := c.waitBody(bodyDone); err == nil {
			err = berr
		}
		return err == nil && !req.close && !resp.close && kind != bodyUntilClose
	}
}

func (c *conn) streamBody(f framing, done chan<- error) {
	err := copyRequestBody(c.upbw, c.br, f)
	if err == nil {
		err = c.upbw.Flush()
	}
	if err != nil {
		// Unblock the response reader: the exchange cannot complete.
		c.upMu.Lock()
		if c.up != nil {
			c.up.Close()
		}
		c.upMu.Unlock()
	}
	done <- err
}

func (c *conn) waitBody(done <-chan error) error {
	if done == nil {
		return nil
	}
	return <-done
}

func (c *conn) dialUp() error {
	ctx, cancel := context.WithTimeout(c.p.killCtx, dialTimeout)
	defer cancel()
	up, err := c.p.Dial(ctx)
	if err != nil {
		return err
	}
	c.upMu.Lock()
	defer c.upMu.Unlock()
	c.up = up
	if c.upbr == nil {
		c.upbr = readerPool.Get().(*bufio.Reader)
		c.upbw = writerPool.Get().(*bufio.Writer)
	}
	c.upbr.Reset(up)
	c.upbw.Reset(up)
	return nil
}

func (c *conn) redial() bool {
	c.upMu.Lock()
	c.up.Close()
	c.upMu.Unlock()
	return c.dialUp() == nil
}

func isConnGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func (c *conn) badGateway(err error) bool {
	c.p.upstreamErrors.Add(1)
	c.p.Logger.Debug("application unreachable", "err", err)
	body := fmt.Appendf(nil, "faultline: the application did not answer: %v\n", err)
	c.writeResponse(http.StatusBadGateway, nil, body, false, true)
	return false
}

// tunnel copies bytes both ways until both directions end.
func (c *conn) tunnel() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.upbr.WriteTo(c.c)
		closeWrite(c.c)
	}()
	_, _ = c.br.WriteTo(c.up)
	closeWrite(c.up)
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	} else {
		c.Close()
	}
}

// writeResponse writes a response made by the proxy itself.
func (c *conn) writeResponse(code int, hdr http.Header, body []byte, isHead, closeConn bool) error {
	w := c.bw
	w.WriteString("HTTP/1.1 " + strconv.Itoa(code) + " " + http.StatusText(code) + "\r\n")
	for k, vs := range hdr {
		for _, v := range vs {
			w.WriteString(k + ": " + v + "\r\n")
		}
	}
	if len(body) > 0 && hdr.Get("Content-Type") == "" {
		w.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	}
	w.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
	if closeConn {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
	if !isHead {
		w.Write(body)
	}
	return w.Flush()
}

func (c *conn) closeAll() {
	c.c.Close()
	c.upMu.Lock()
	if c.up != nil {
		c.up.Close()
	}
	c.upMu.Unlock()
}
