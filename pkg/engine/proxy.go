package engine

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"

	"github.com/containerd/errdefs"
	"github.com/faultline-dev/faultline/pkg/sockdiag"
	"github.com/faultline-dev/faultline/pkg/steer"
)

// proxyFault is a fault the proxy applies: the proxy in the namespace and
// the steering program in front of it.
type proxyFault struct {
	log       *slog.Logger
	listeners []*net.TCPListener
	proxy     server
	counts    func(*Counters) // the server's counters
	steering  *steer.Steering
	attached  atomic.Bool // steering holds its link: read by Status from any goroutine
	reset     int
}

// server is what serves the steered connections: the HTTP proxy or the
// TCP relay.
type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// dialFunc connects to the application, bypassing the steering.
type dialFunc func(ctx context.Context) (net.Conn, error)

// setupProxy opens the listeners in the namespace, starts the proxy,
// attaches the steering program and resets established connections, in
// that order, so that no connection is ever steered to a listener that is
// not served. On error or cancellation it releases what it made.
func (f *Running) setupProxy(ctx context.Context, port uint16, resets bool, newServer func(*proxyFault, dialFunc) server) (_ impl, err error) {
	pf := &proxyFault{log: f.log}
	defer func() {
		if err != nil {
			pf.release()
		}
	}()
	ln4, err := f.ns.Listen(ctx, "tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("open proxy listener: %w", err)
	}
	pf.listeners = append(pf.listeners, ln4)
	// IPv6 is optional: the namespace may have it disabled.
	ln6, err := f.ns.Listen(ctx, "tcp6", "[::1]:0")
	if err == nil {
		pf.listeners = append(pf.listeners, ln6)
	} else {
		pf.log.Debug("no ipv6 proxy listener", "target", f.target.String(), "err", err)
	}

	bypass := f.e.opts.BypassSource
	upstream := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	dial := f.ns.Dialer(&net.TCPAddr{IP: bypass.AsSlice()})
	pf.proxy = newServer(pf, func(ctx context.Context) (net.Conn, error) { return dial(ctx, "tcp4", upstream) })
	for _, ln := range pf.listeners {
		go pf.proxy.Serve(ln)
	}
	if err := f.checkpoint(ctx); err != nil {
		return nil, err
	}
	// This daemon's own faults are kept apart by their claims; another
	// faultlined's steering on the port would make both take it.
	if id, taken, err := steer.Steered(f.ns, port); err != nil {
		pf.log.Debug("cannot look for other steering programs", "err", err)
	} else if taken {
		return nil, fmt.Errorf("%w: port %d of %s is already steered by another process (sk_lookup program %d): another faultlined has a fault there",
			errdefs.ErrFailedPrecondition, port, f.target, id)
	}
	pf.steering, err = steer.Attach(f.ns, steer.Options{Port: port, IPv4: ln4, IPv6: ln6, BypassSource: bypass})
	if err != nil {
		return nil, err
	}
	pf.attached.Store(true)
	if resets {
		pf.reset, err = sockdiag.DestroyEstablished(f.ns, port, func(remote netip.Addr) bool { return remote == bypass })
		if err != nil {
			// Not fatal: clients that connected before keep going direct.
			pf.log.Warn("could not reset established connections", "err", err)
		}
	}
	return pf, nil
}

func (pf *proxyFault) counters() Counters {
	c := Counters{ConnectionsReset: uint64(pf.reset)}
	if pf.counts != nil {
		pf.counts(&c)
	}
	return c
}

func (pf *proxyFault) links() int {
	if pf.attached.Load() {
		return 1
	}
	return 0
}

// detach removes the steering: new connections go to the application.
func (pf *proxyFault) detach() {
	if pf.steering != nil {
		pf.attached.Store(false)
		if err := pf.steering.Close(); err != nil {
			pf.log.Warn("detach steering", "err", err)
		}
		pf.steering = nil
	}
}

// release undoes setupProxy: steering first, then the proxy (a drain),
// then the listeners.
func (pf *proxyFault) release() {
	pf.detach()
	if pf.proxy != nil {
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		_ = pf.proxy.Shutdown(ctx)
		cancel()
	}
	for _, ln := range pf.listeners {
		ln.Close()
	}
}
