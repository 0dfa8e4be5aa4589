package httpfault

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/faultline-dev/faultline/pkg/fault"
)

var (
	readerPool      = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, maxHead) }}
	smallReaderPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, smallHead) }}
	writerPool      = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}
)

// h1 is one HTTP/1.1 client connection and, once a request is forwarded,
// its own connection to the application: one upstream connection per
// client connection, opened and closed with it, as without the proxy. A
// connection whose first bytes are the HTTP/2 preface becomes an h2.
type h1 struct {
	p        *Proxy
	c        net.Conn
	br       *bufio.Reader // smallHead, or maxHead after a large head
	bw       *bufio.Writer
	budgeted bool        // br is a maxHead buffer reading a head, counted in the head budget
	idle     atomic.Bool // between requests, after at least one
	draining atomic.Bool

	upMu sync.Mutex // guards up against closeAll from other goroutines
	up   net.Conn
	upbr *bufio.Reader
	upbw *bufio.Writer
}

func newH1(p *Proxy, c net.Conn) *h1 { return &h1{p: p, c: c} }

// drain closes the connection now if it is idle, else after the request
// in flight.
func (c *h1) drain() {
	c.draining.Store(true)
	if c.idle.Load() {
		c.close()
	}
}

func (c *h1) close() {
	c.c.Close()
	c.upMu.Lock()
	if c.up != nil {
		c.up.Close()
	}
	c.upMu.Unlock()
}

// h2Preface starts every cleartext HTTP/2 connection with prior knowledge.
var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// serve is the connection's pipeline:
//  1. wait for a request head (the connection is idle meanwhile);
//  2. ask the rule;
//  3. answer with the rule's answer, after its delay; or
//  4. delay, forward the head and stream the body to the application;
//  5. relay the response (and tunnel the bytes after a 101);
//  6. repeat while both sides keep the connection alive.
func (c *h1) serve() {
	var current connection = c
	defer func() { c.p.done(current) }()
	defer c.release()

	// A connection holds no buffers until its client sends something.
	_ = c.c.SetReadDeadline(time.Now().Add(c.p.headerTimeout()))
	if awaitInput(c.c) != nil {
		c.close()
		return
	}
	c.acquire()
	if h2, err := c.sniffH2(); err != nil {
		c.close()
		return
	} else if h2 {
		_ = c.c.SetReadDeadline(time.Time{})
		h := newH2(c.p, c.c, c.br, c.writer())
		current = h
		h.serve(c.p.swap(c, h))
		return
	}
	defer c.close()
	for served := 0; ; served++ {
		// 1. Wait for the next request. A connection that has served one
		// is idle meanwhile: Shutdown may close it, and it holds no
		// buffers unless the client has sent more already.
		if served > 0 {
			c.idle.Store(true)
			if c.draining.Load() || !c.awaitRequest() {
				return
			}
		}
		raw, err := readHead(c.br)
		if errors.Is(err, errHeadTooLarge) && c.br.Size() < maxHead && c.grow() {
			raw, err = readHead(c.br)
		}
		if c.budgeted { // a complete head is a request: the budget is for heads still coming
			c.p.heads.give()
			c.budgeted = false
		}
		c.idle.Store(false)
		if err != nil {
			if errors.Is(err, errHeadTooLarge) {
				c.writeAnswer(&fault.Answer{Status: http.StatusRequestHeaderFieldsTooLarge}, false, true)
			}
			return
		}
		var read time.Time // for the overhead, only when observed
		if c.p.Overhead != nil {
			read = time.Now()
		}
		_ = c.c.SetReadDeadline(time.Time{})
		req, err := parseRequestHead(raw)
		if err != nil {
			c.writeAnswer(&fault.Answer{Status: http.StatusBadRequest, Body: []byte("faultline: malformed request\n")}, false, true)
			return
		}
		if !c.handle(req, read) || c.draining.Load() {
			return
		}
	}
}

// awaitRequest waits, between requests, for the first byte of the next
// one, at most the idle timeout, and then gives the client HeaderTimeout
// to send the rest of the head. Meanwhile the connection's buffers go
// back to the pool when they hold nothing, so that an idle connection
// costs no more than its goroutine. It reports whether a request is
// coming.
func (c *h1) awaitRequest() bool {
	if c.br.Buffered() == 0 {
		c.releaseIdle()
		_ = c.c.SetReadDeadline(time.Now().Add(c.p.idleTimeout()))
		err := awaitInput(c.c)
		c.acquire()
		if err != nil {
			return false
		}
	}
	_ = c.c.SetReadDeadline(time.Now().Add(c.p.headerTimeout()))
	return !c.draining.Load()
}

// grow moves the client side to a maxHead read buffer, if the head budget
// has room, keeping what the small one holds. The buffer stays until the
// connection is idle; its share of the budget, until the head is complete.
func (c *h1) grow() bool {
	p := c.p
	if !p.heads.take() {
		p.Logger.Debug("request head refused: the head budget is spent")
		return false
	}
	held, _ := c.br.Peek(c.br.Buffered())
	big := readerPool.Get().(*bufio.Reader)
	big.Reset(io.MultiReader(bytes.NewReader(held), c.c))
	if _, err := big.Peek(len(held)); err != nil { // copies held: the reader can go
		big.Reset(nil)
		readerPool.Put(big)
		p.heads.give()
		return false
	}
	c.putClientReader()
	p.buffers.Add(1)
	c.br, c.budgeted = big, true
	return true
}

// putClientReader gives the client side's read buffer back, and its share
// of the head budget if it had one.
func (c *h1) putClientReader() {
	if c.budgeted {
		c.p.heads.give()
		c.budgeted = false
	}
	c.p.putReader(&c.br)
}

// acquire gives the client side its read buffer; its write buffer comes
// with the first response (writer), so that a client still sending its
// head holds no more than the head.
func (c *h1) acquire() {
	if c.br == nil {
		c.p.buffers.Add(1)
		c.br = smallReaderPool.Get().(*bufio.Reader)
		c.br.Reset(c.c)
	}
}

// writer returns the client side's write buffer, getting it if need be.
func (c *h1) writer() *bufio.Writer {
	if c.bw == nil {
		c.bw = c.p.getWriter(c.c)
	}
	return c.bw
}

// acquireUp gives the application side its buffers.
func (c *h1) acquireUp() {
	if c.upbr == nil {
		c.upbr = c.p.getReader(c.up)
		c.upbw = c.p.getWriter(c.up)
	}
}

// releaseIdle returns the buffers that hold nothing: the client's (empty
// when called) and the application side's unless it sent bytes nobody
// asked for yet.
func (c *h1) releaseIdle() {
	c.putClientReader()
	c.p.putWriter(&c.bw)
	if c.upbr != nil && c.upbr.Buffered() == 0 && c.upbw.Buffered() == 0 {
		c.p.putReader(&c.upbr)
		c.p.putWriter(&c.upbw)
	}
}

// release gives every buffer back once the connection has ended.
func (c *h1) release() {
	c.putClientReader()
	c.p.putWriter(&c.bw)
	c.p.putReader(&c.upbr)
	c.p.putWriter(&c.upbw)
}

// The proxy's buffers come from pools shared by its connections, and are
// counted so that tests (and metrics) see what idle connections hold.
func (p *Proxy) getReader(r io.Reader) *bufio.Reader {
	p.buffers.Add(1)
	b := readerPool.Get().(*bufio.Reader)
	b.Reset(r)
	return b
}

func (p *Proxy) getWriter(w io.Writer) *bufio.Writer {
	p.buffers.Add(1)
	b := writerPool.Get().(*bufio.Writer)
	b.Reset(w)
	return b
}

func (p *Proxy) putReader(b **bufio.Reader) {
	if *b != nil {
		p.buffers.Add(-1)
		(*b).Reset(nil)
		if (*b).Size() == smallHead {
			smallReaderPool.Put(*b)
		} else {
			readerPool.Put(*b)
		}
		*b = nil
	}
}

func (p *Proxy) putWriter(b **bufio.Writer) {
	if *b != nil {
		p.buffers.Add(-1)
		(*b).Reset(nil)
		writerPool.Put(*b)
		*b = nil
	}
}

// awaitInput waits until c has bytes to read, or has ended, without
// reading them; c's read deadline applies.
func awaitInput(c net.Conn) error {
	rc, err := rawConn(c)
	if err != nil {
		return nil // not a socket (tests): the next read waits instead
	}
	var b [1]byte
	return rc.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return !errors.Is(err, unix.EAGAIN)
	})
}

func rawConn(c net.Conn) (syscall.RawConn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

func (c *h1) sniffH2() (bool, error) {
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

// handle runs steps 2-5 for one request, whose head was read at read,
// and reports whether the connection stays open for another.
func (c *h1) handle(req *requestHead, read time.Time) bool {
	d := c.p.decide(req)
	if d.Answer != nil {
		c.p.wait(d.Delay, nil)
		return c.answer(req, d.Answer)
	}
	if d.Delay == 0 {
		return c.forward(req, 0, read, d.Rewrite)
	}
	var hold time.Duration
	if d.DelayResponse {
		hold = d.Delay
	} else if d.Delay > 0 {
		// A client that gives up during the delay never reaches the
		// application, as behind a slow network or a queue.
		gone, stop := watchGone(c.c)
		present := c.p.wait(d.Delay, gone)
		stop()
		if !present {
			return false
		}
	}
	return c.forward(req, hold, time.Time{}, d.Rewrite)
}

// watchGone closes gone when the client closes or resets its side of c
// before stop is called. It peeks at the socket without reading from it,
// so nothing the client sends is lost: more bytes (a body, a pipelined
// request) end the watch with the client present. An end of stream counts
// as gone, as net/http's server cancels a request on it.
func watchGone(c net.Conn) (gone <-chan struct{}, stop func()) {
	ch := make(chan struct{})
	rc, err := rawConn(c)
	if err != nil {
		return ch, func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var b [1]byte
		_ = rc.Read(func(fd uintptr) bool {
			n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EAGAIN) {
				return false // nothing yet: wait for the socket
			}
			if n == 0 || err != nil {
				close(ch)
			}
			return true
		})
	}()
	return ch, func() {
		_ = c.SetReadDeadline(time.Unix(1, 0)) // ends the wait
		<-done
		_ = c.SetReadDeadline(time.Time{})
	}
}

// answer sends the rule's answer instead of forwarding the request.
func (c *h1) answer(req *requestHead, a *fault.Answer) bool {
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
	if err := c.writeAnswer(a, req.method == "HEAD", closeAfter); err != nil {
		return false
	}
	return !closeAfter
}

// forward sends the request to the application and relays the response,
// holding the response head for hold first. A request not delayed gives
// the time its head was read, to observe the proxy's overhead.
func (c *h1) forward(req *requestHead, hold time.Duration, read time.Time, rw *fault.Rewrite) bool {
	p := c.p
	fresh := false
	if c.up != nil && c.upStale() {
		// The application closed its side while the client was idle (its
		// own keep-alive timeout): open another, as a client would.
		c.closeUp()
	}
	if c.up == nil {
		if err := c.dialUp(); err != nil {
			return c.badGateway(err)
		}
		fresh = true
	}
	c.acquireUp()
	hasBody := req.hasBody()
	var bodyDone chan error

	// 4b. Send the head. A request without a body stays in the client
	// buffer until the response starts, so that, if it is safe to repeat,
	// it can be resent once when a reused upstream connection turns out
	// to have been closed.
	retry := !hasBody && idempotent(req.method)
	send := func() error {
		if _, err := c.upbw.Write(req.raw); err != nil {
			return err
		}
		return c.upbw.Flush()
	}
	if !hasBody {
		if err := send(); err != nil {
			if fresh || !retry || !c.redial() || send() != nil {
				return c.badGateway(err)
			}
			fresh = true
		}
		if !read.IsZero() {
			observe(p.Overhead, read)
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
			if !read.IsZero() {
				observe(p.Overhead, read)
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
			if retry && !fresh && !headSent && isConnGone(err) && c.redial() && send() == nil {
				fresh = true
				continue
			}
			if !headSent {
				if errors.Is(c.waitBody(bodyDone), errBadChunk) {
					// The client's body is at fault, not the application
					// (which got it up to the bad chunk, then a close).
					c.writeAnswer(&fault.Answer{Status: http.StatusBadRequest, Body: []byte("faultline: malformed chunked request body\n")}, false, true)
					return false
				}
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
		bw := c.writer()
		if resp.status/100 == 1 && kind != bodyTunnel {
			_, _ = bw.Write(raw)
			_, _ = c.upbr.Discard(len(raw))
			if err := bw.Flush(); err != nil {
				return false
			}
			continue
		}
		p.wait(hold, nil)
		head, body := raw, bw // what the client gets: the app's head, its body
		if rw != nil && kind != bodyTunnel {
			head = rewriteHead(raw, rw, resp.status)
			if rw.ReplaceBody {
				body = bufio.NewWriterSize(io.Discard, 16) // read to its end, dropped
			}
		}
		_, _ = bw.Write(head)
		_, _ = c.upbr.Discard(len(raw))
		switch kind {
		case bodyTunnel:
			if bw.Flush() != nil || c.waitBody(bodyDone) != nil {
				return false
			}
			c.tunnel()
			return false
		case bodyLength:
			err = copyN(body, c.upbr, resp.contentLength)
		case bodyChunked:
			err = copyChunked(body, c.upbr)
		case bodyUntilClose:
			err = copyUntilEOF(body, c.upbr)
		}
		if rw != nil && rw.ReplaceBody && req.method != "HEAD" && !fault.Bodyless(cmp.Or(rw.Status, resp.status)) {
			_, _ = bw.Write(rw.Body)
		}
		if err == nil {
			err = bw.Flush()
		}
		if berr := c.waitBody(bodyDone); err == nil {
			err = berr
		}
		return err == nil && !req.close && !resp.close && kind != bodyUntilClose
	}
}

// idempotent methods may be sent twice (RFC 9110 §9.2.2), as net/http's
// Transport retries them.
func idempotent(method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

func (c *h1) streamBody(f framing, done chan<- error) {
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

func (c *h1) waitBody(done <-chan error) error {
	if done == nil {
		return nil
	}
	return <-done
}

func (c *h1) dialUp() error {
	up, err := c.p.dial()
	if err != nil {
		return err
	}
	c.upMu.Lock()
	defer c.upMu.Unlock()
	c.up = up
	if c.upbr == nil {
		c.acquireUp()
	} else {
		c.upbr.Reset(up)
		c.upbw.Reset(up)
	}
	return nil
}

func (c *h1) redial() bool {
	c.closeUp()
	return c.dialUp() == nil
}

func (c *h1) closeUp() {
	c.upMu.Lock()
	c.up.Close()
	c.up = nil
	c.upMu.Unlock()
	if c.upbr != nil {
		c.upbr.Reset(nil)
		c.upbw.Reset(nil)
	}
}

// upStale reports whether the idle connection to the application is
// unusable: closed, reset, or holding bytes no request asked for (they
// would be taken for the next response).
func (c *h1) upStale() bool {
	if c.upbr != nil && c.upbr.Buffered() > 0 {
		return true
	}
	rc, err := rawConn(c.up)
	if err != nil {
		return false
	}
	stale := false
	var b [1]byte
	_ = rc.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		stale = !errors.Is(err, unix.EAGAIN)
		return true
	})
	return stale
}

func isConnGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func (c *h1) badGateway(err error) bool {
	c.p.upstreamErrors.Add(1)
	c.p.Logger.Debug("application unreachable", "err", err)
	body := fmt.Appendf(nil, "faultline: the application did not answer: %v\n", err)
	c.writeAnswer(&fault.Answer{Status: http.StatusBadGateway, Body: body}, false, true)
	return false
}

// tunnel copies bytes both ways until both directions end.
func (c *h1) tunnel() {
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

// writeAnswer writes a response the proxy makes itself. Statuses that
// carry no content (204, 304) get neither a body nor a Content-Length.
func (c *h1) writeAnswer(a *fault.Answer, isHead, closeConn bool) error {
	w := c.writer()
	w.WriteString("HTTP/1.1 " + strconv.Itoa(a.Status) + " " + http.StatusText(a.Status) + "\r\n")
	typed := false
	for _, h := range a.Header {
		w.WriteString(h.Name + ": " + h.Value + "\r\n")
		typed = typed || h.Name == "Content-Type"
	}
	if !fault.Bodyless(a.Status) {
		if len(a.Body) > 0 && !typed {
			w.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
		}
		w.WriteString("Content-Length: " + strconv.Itoa(len(a.Body)) + "\r\n")
	}
	if closeConn {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
	if !isHead && !fault.Bodyless(a.Status) {
		w.Write(a.Body)
	}
	return w.Flush()
}
