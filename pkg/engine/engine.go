// Package engine owns the lifetime of faults on this node: it validates a
// fault, enters the target's network namespace, opens the fault proxy there,
// steers the target port into it, and takes it all down again on expiry,
// on Revoke, or when the caller goes away.
//
// Requirements (see also README "Lifecycle"):
//   - Start MUST refuse a second fault on the same namespace and port, and
//     MUST leave nothing behind when it fails half-way.
//   - Stopping MUST detach the steering program first, so the next
//     connection reaches the application directly, then drain the proxy.
//   - Stopping MUST release every reference to the namespace (listener,
//     link, handle): a deleted pod's namespace must not be kept alive.
//   - A crash of the process MUST NOT leave anything that changes traffic:
//     every kernel object is owned by a file descriptor of this process.
package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/faultline-dev/faultline/pkg/netns"
	"github.com/faultline-dev/faultline/pkg/proxy/httpfault"
	"github.com/faultline-dev/faultline/pkg/sockdiag"
	"github.com/faultline-dev/faultline/pkg/steer"
)

// DefaultBypassSource is the loopback address the proxy dials the
// application from; the steering program lets it through.
var DefaultBypassSource = netip.MustParseAddr("127.0.0.253")

// MinDuration is the shortest fault accepted.
const MinDuration = time.Second

// drainTimeout bounds how long requests in flight may finish after a fault
// ends before their connections are closed.
const drainTimeout = time.Second

// Target is where a fault goes: a network namespace path or a process ID.
// Exactly one must be set.
type Target struct {
	NetnsPath string
	PID       int
}

func (t Target) String() string {
	if t.PID > 0 {
		return "pid " + strconv.Itoa(t.PID)
	}
	return t.NetnsPath
}

// HTTPFault is an HTTP fault on one port.
type HTTPFault struct {
	Port  uint16
	Fault httpfault.Fault
	// KeepConnections leaves established connections alone at the start;
	// by default they are reset so that clients reconnect through the proxy.
	KeepConnections bool
}

// Spec describes one fault.
type Spec struct {
	// ID names the fault; empty means the engine picks one.
	ID       string
	Target   Target
	Duration time.Duration
	HTTP     *HTTPFault
}

// Reason says why a fault ended.
type Reason string

const (
	ReasonExpired   Reason = "expired"
	ReasonRevoked   Reason = "revoked"
	ReasonCancelled Reason = "cancelled"
	ReasonShutdown  Reason = "shutdown"
)

// Status is a snapshot of a fault.
type Status struct {
	ID        string
	Kind      string
	Target    Target
	Netns     netns.ID
	Port      uint16
	Started   time.Time
	Expires   time.Time
	Counters  httpfault.Counters
	Reset     int    // established connections reset at the start
	EndReason Reason // empty while running
}

// Options configure an Engine.
type Options struct {
	// BypassSource is the IPv4 loopback address upstream dials come from.
	// Zero means DefaultBypassSource.
	BypassSource netip.Addr
	Logger       *slog.Logger
}

// Engine runs faults. Its zero value is not usable; call New.
type Engine struct {
	bypass netip.Addr
	log    *slog.Logger

	mu     sync.Mutex
	faults map[string]*Fault
	byKey  map[key]*Fault
	closed bool
}

type key struct {
	ns   netns.ID
	port uint16
}

// New returns an Engine.
func New(opts Options) *Engine {
	if !opts.BypassSource.IsValid() {
		opts.BypassSource = DefaultBypassSource
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Engine{bypass: opts.BypassSource, log: opts.Logger, faults: map[string]*Fault{}, byKey: map[key]*Fault{}}
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errdefs.ErrInvalidArgument}, args...)...)
}

// Validate checks a spec without touching the system beyond looking up the
// target. Every error wraps errdefs.ErrInvalidArgument and names the field.
func (s *Spec) Validate() error {
	switch {
	case s.ID != "" && !idPattern.MatchString(s.ID):
		return invalid("id %q must be 1-63 letters, digits, '.', '_' or '-'", s.ID)
	case s.Duration < MinDuration:
		return invalid("duration must be at least 1s, got %s", s.Duration)
	case s.Target.NetnsPath == "" && s.Target.PID == 0:
		return invalid("target: give a netns path or a pid")
	case s.Target.NetnsPath != "" && s.Target.PID != 0:
		return invalid("target: give a netns path or a pid, not both")
	case s.Target.PID < 0:
		return invalid("target: pid must be positive, got %d", s.Target.PID)
	case s.HTTP == nil:
		return invalid("fault: no fault given")
	case s.HTTP.Port == 0:
		return invalid("port must be in 1-65535, got 0")
	}
	return s.HTTP.Fault.Validate()
}

func openTarget(t Target) (*netns.Handle, error) {
	var h *netns.Handle
	var err error
	if t.PID > 0 {
		h, err = netns.OpenPID(t.PID)
	} else {
		h, err = netns.Open(t.NetnsPath)
	}
	switch {
	case err == nil:
		return h, nil
	case errors.Is(err, os.ErrNotExist) && t.PID > 0:
		return nil, invalid("pid %d does not exist", t.PID)
	case errors.Is(err, os.ErrNotExist):
		return nil, invalid("netns %s does not exist", t.NetnsPath)
	case errors.Is(err, netns.ErrNotNetns):
		return nil, invalid("%s is not a network namespace", t)
	default:
		return nil, fmt.Errorf("open target %s: %w", t, err)
	}
}

// Start validates spec and starts the fault. The fault runs until its
// duration passes or Stop is called; Start does not block.
func (e *Engine) Start(spec Spec) (*Fault, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if spec.ID == "" {
		spec.ID = newID()
	}
	ns, err := openTarget(spec.Target)
	if err != nil {
		return nil, err
	}
	k := key{ns: ns.ID(), port: spec.HTTP.Port}
	f := &Fault{e: e, spec: spec, ns: ns, key: k, done: make(chan struct{}), stopReq: make(chan Reason, 1)}
	f.started = time.Now()
	f.expires = f.started.Add(spec.Duration)

	e.mu.Lock()
	switch {
	case e.closed:
		e.mu.Unlock()
		ns.Close()
		return nil, fmt.Errorf("%w: faultlined is shutting down", errdefs.ErrUnavailable)
	case e.faults[spec.ID] != nil:
		e.mu.Unlock()
		ns.Close()
		return nil, fmt.Errorf("%w: a fault with id %q is already active", errdefs.ErrAlreadyExists, spec.ID)
	case e.byKey[k] != nil:
		other := e.byKey[k]
		e.mu.Unlock()
		ns.Close()
		return nil, fmt.Errorf("%w: port %d of %s already has fault %q (kind %s) active until %s; revoke it first",
			errdefs.ErrFailedPrecondition, k.port, spec.Target, other.spec.ID, "http", other.expires.Format(time.RFC3339))
	}
	// Reserve the slot before the slow part so a concurrent Start is refused.
	e.faults[spec.ID] = f
	e.byKey[k] = f
	e.mu.Unlock()

	if err := f.setup(); err != nil {
		f.teardown()
		e.forget(f)
		ns.Close()
		return nil, err
	}
	e.mu.Lock()
	f.ready = true
	e.mu.Unlock()
	go f.run()
	e.log.Info("fault started", "fault_id", spec.ID, "netns", spec.Target.String(), "port", k.port, "duration", spec.Duration, "reset", f.reset)
	return f, nil
}

func (e *Engine) forget(f *Fault) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.faults[f.spec.ID] == f {
		delete(e.faults, f.spec.ID)
	}
	if e.byKey[f.key] == f {
		delete(e.byKey, f.key)
	}
}

// Get returns the running fault with this id.
func (e *Engine) Get(id string) (*Fault, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := e.faults[id]
	if f == nil || !f.ready {
		return nil, fmt.Errorf("%w: no active fault with id %q", errdefs.ErrNotFound, id)
	}
	return f, nil
}

// List returns the running faults, oldest first.
func (e *Engine) List() []Status {
	e.mu.Lock()
	fs := make([]*Fault, 0, len(e.faults))
	for _, f := range e.faults {
		if f.ready {
			fs = append(fs, f)
		}
	}
	e.mu.Unlock()
	out := make([]Status, 0, len(fs))
	for _, f := range fs {
		out = append(out, f.Status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out
}

// Revoke stops a running fault and returns its final status.
func (e *Engine) Revoke(id string) (Status, error) {
	f, err := e.Get(id)
	if err != nil {
		return Status{}, err
	}
	return f.Stop(ReasonRevoked), nil
}

// Close stops every fault and refuses new ones.
func (e *Engine) Close() {
	e.mu.Lock()
	e.closed = true
	fs := make([]*Fault, 0, len(e.faults))
	for _, f := range e.faults {
		if f.ready {
			fs = append(fs, f)
		}
	}
	e.mu.Unlock()
	for _, f := range fs {
		f.Stop(ReasonShutdown)
	}
}

// Fault is one running fault.
type Fault struct {
	e     *Engine
	spec  Spec
	ns    *netns.Handle
	key   key
	ready bool // set up and running; guarded by e.mu

	listeners []*net.TCPListener
	proxy     *httpfault.Proxy
	steering  *steer.Steering
	reset     int

	started, expires time.Time
	stopReq          chan Reason
	done             chan struct{}
	reason           Reason
	final            httpfault.Counters
}

// setup opens the listeners in the namespace, starts the proxy, attaches
// the steering program and resets established connections, in that order,
// so that at no point is a connection steered to a listener not yet served.
func (f *Fault) setup() error {
	ctx := context.Background()
	h := f.spec.HTTP
	ln4, err := f.ns.Listen(ctx, "tcp4", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("open proxy listener: %w", err)
	}
	f.listeners = append(f.listeners, ln4)
	// IPv6 is optional: the namespace may have it disabled.
	ln6, err := f.ns.Listen(ctx, "tcp6", "[::1]:0")
	if err == nil {
		f.listeners = append(f.listeners, ln6)
	} else {
		f.e.log.Debug("no ipv6 proxy listener", "netns", f.spec.Target.String(), "err", err)
	}

	fault := h.Fault
	upstream := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(h.Port)))
	dial := f.ns.Dialer(&net.TCPAddr{IP: f.e.bypass.AsSlice()})
	f.proxy = &httpfault.Proxy{
		Fault:  &fault,
		Dial:   func(ctx context.Context) (net.Conn, error) { return dial(ctx, "tcp4", upstream) },
		Logger: f.e.log.With("fault_id", f.spec.ID),
	}
	for _, ln := range f.listeners {
		go f.proxy.Serve(ln)
	}

	f.steering, err = steer.Attach(f.ns, steer.Options{Port: h.Port, IPv4: ln4, IPv6: ln6, BypassSource: f.e.bypass})
	if err != nil {
		if errors.Is(err, steer.ErrNotSupported) {
			return fmt.Errorf("%w: %v", errdefs.ErrNotImplemented, err)
		}
		return err
	}
	if !h.KeepConnections {
		bypass := f.e.bypass
		f.reset, err = sockdiag.DestroyEstablished(f.ns, h.Port, func(remote netip.Addr) bool { return remote == bypass })
		if err != nil {
			// Not fatal: clients that connected before keep going direct.
			f.e.log.Warn("could not reset established connections", "fault_id", f.spec.ID, "err", err)
		}
	}
	return nil
}

// teardown undoes setup: steering first, then the proxy, then the listeners.
func (f *Fault) teardown() {
	if f.steering != nil {
		if err := f.steering.Close(); err != nil {
			f.e.log.Warn("detach steering", "fault_id", f.spec.ID, "err", err)
		}
	}
	if f.proxy != nil {
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		_ = f.proxy.Shutdown(ctx)
		cancel()
	}
	for _, ln := range f.listeners {
		ln.Close()
	}
}

func (f *Fault) run() {
	t := time.NewTimer(time.Until(f.expires))
	defer t.Stop()
	var reason Reason
	select {
	case <-t.C:
		reason = ReasonExpired
	case reason = <-f.stopReq:
	}
	f.teardown()
	f.final = f.proxy.Counters()
	f.reason = reason
	f.e.forget(f)
	f.ns.Close()
	f.e.log.Info("fault ended", "fault_id", f.spec.ID, "reason", reason,
		"requests", f.final.Requests, "delayed", f.final.Delayed, "errored", f.final.Errored)
	close(f.done)
}

// ID returns the fault's id.
func (f *Fault) ID() string { return f.spec.ID }

// Done is closed once the fault has ended and released everything.
func (f *Fault) Done() <-chan struct{} { return f.done }

// Stop ends the fault (if it is still running), waits until everything is
// released and returns the final status.
func (f *Fault) Stop(reason Reason) Status {
	select {
	case f.stopReq <- reason:
	default:
	}
	<-f.done
	return f.Status()
}

// Status returns a snapshot; counters are live while the fault runs.
func (f *Fault) Status() Status {
	st := Status{
		ID: f.spec.ID, Kind: "http", Target: f.spec.Target, Netns: f.key.ns, Port: f.key.port,
		Started: f.started, Expires: f.expires, Reset: f.reset,
	}
	select {
	case <-f.done:
		st.Counters, st.EndReason = f.final, f.reason
	default:
		st.Counters = f.proxy.Counters()
	}
	return st
}

func newID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "f-" + hex.EncodeToString(b)
}
