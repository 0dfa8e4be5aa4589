package httpfault

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
)

// Cleartext HTTP/2 (prior knowledge) is served by net/http: a connection
// that starts with the client preface is handed to an h2c-only http.Server
// through a listener fed by the proxy, and each request stream goes through
// serveH2. Upstream, each client connection gets its own h2c connection to
// the application, so the application sees one connection per client
// connection, as without the proxy.

// h2Listener hands sniffed connections to the h2c server.
type h2Listener struct {
	conns  chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func (l *h2Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *h2Listener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *h2Listener) Addr() net.Addr { return &net.TCPAddr{} }

// h2Conn is a client connection whose first bytes are in a bufio.Reader;
// Close tells the proxy's connection goroutine that HTTP/2 is done.
type h2Conn struct {
	net.Conn
	cc     *conn
	r      *bufio.Reader
	closed chan struct{}
	once   sync.Once
}

func (c *h2Conn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *h2Conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

type connKey struct{}

func (p *Proxy) startH2() {
	p.h2ln = &h2Listener{conns: make(chan net.Conn), done: make(chan struct{})}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	p.h2srv = &http.Server{
		Protocols: &protos,
		Handler:   http.HandlerFunc(p.serveH2),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if hc, ok := c.(*h2Conn); ok {
				return context.WithValue(ctx, connKey{}, hc.cc)
			}
			return ctx
		},
		ErrorLog: nil,
	}
	go p.h2srv.Serve(p.h2ln)
}

// serveHTTP2 hands the connection to the h2c server and waits until the
// server is done with it.
func (c *conn) serveHTTP2() {
	hc := &h2Conn{Conn: c.c, cc: c, r: c.br, closed: make(chan struct{})}
	select {
	case c.p.h2ln.conns <- hc:
	case <-c.p.h2ln.done:
		return
	}
	<-hc.closed
	c.upMu.Lock()
	if c.h2up != nil {
		c.h2up.CloseIdleConnections()
	}
	c.upMu.Unlock()
}

// h2Transport returns the connection's own h2c transport to the app.
func (c *conn) h2Transport() *http.Transport {
	c.upMu.Lock()
	defer c.upMu.Unlock()
	if c.h2up == nil {
		var protos http.Protocols
		protos.SetUnencryptedHTTP2(true)
		c.h2up = &http.Transport{
			Protocols:          &protos,
			DisableCompression: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return c.p.Dial(ctx)
			},
		}
	}
	return c.h2up
}

type h2Request struct{ r *http.Request }

func (q h2Request) Method() string { return q.r.Method }
func (q h2Request) Path() string   { return q.r.URL.Path }
func (q h2Request) Header(name string) (string, bool) {
	vs := q.r.Header.Values(name)
	if len(vs) == 0 {
		return "", false
	}
	return vs[0], true
}

// serveH2 is the HTTP/2 pipeline for one request stream: decide, delay,
// answer with the injected error or forward, relay the response with its
// trailers, flushing every write so streamed RPCs flow message by message.
func (p *Proxy) serveH2(w http.ResponseWriter, r *http.Request) {
	c, _ := r.Context().Value(connKey{}).(*conn)
	if c == nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	grpcCall := isGRPC(r)
	d := p.decide(h2Request{r}, grpcCall)
	if d.fail {
		p.sleep(d.delay)
		if grpcCall && p.GRPC != nil {
			writeGRPCStatus(w, p.GRPC.StatusCode, p.GRPC.StatusMessage)
			return
		}
		f := p.Fault
		for k, vs := range f.ErrorHeaders {
			w.Header()[k] = vs
		}
		if len(f.ErrorBody) > 0 && w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		}
		w.WriteHeader(f.ErrorCode)
		w.Write(f.ErrorBody)
		return
	}
	var hold = d.delay
	if p.GRPC != nil && grpcCall || p.Fault == nil || p.Fault.DelayMode == DelayRequest {
		p.sleep(d.delay)
		hold = 0
	}

	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme = "http"
	out.URL.Host = r.Host
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""} // no Go default
	}
	if r.ContentLength == 0 {
		out.Body = nil
	}
	resp, err := c.h2Transport().RoundTrip(out)
	if err != nil {
		p.upstreamErrors.Add(1)
		if grpcCall {
			writeGRPCStatus(w, 14, "faultline: the application did not answer: "+err.Error())
		} else {
			http.Error(w, "faultline: the application did not answer: "+err.Error(), http.StatusBadGateway)
		}
		return
	}
	defer resp.Body.Close()
	p.sleep(hold)
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	if resp.ContentLength == 0 {
		// No body (a 204, a trailers-only gRPC status): no flush, so the
		// headers end the stream as the application's did.
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			panic(http.ErrAbortHandler)
		}
	} else {
		rc := http.NewResponseController(w)
		_ = rc.Flush() // headers now: a stream's first message may be long in coming
		if err := copyFlushing(w, rc, resp.Body); err != nil {
			panic(http.ErrAbortHandler) // reset the stream: the client must not see a clean end
		}
	}
	for k, vs := range resp.Trailer {
		w.Header()[http.TrailerPrefix+k] = vs
	}
}

// copyFlushing copies src to w, flushing after every read.
func copyFlushing(w io.Writer, rc *http.ResponseController, src io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if ferr := rc.Flush(); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

