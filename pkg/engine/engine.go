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

	"github.com/cilium/ebpf"
	"github.com/containerd/errdefs"

	"github.com/faultline-dev/faultline/pkg/netfault"
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
	// Pod, when set, is the Kubernetes pod that owns the namespace: it
	// names the target in statuses, and EndWhere can end its faults.
	Pod PodRef
}

// PodRef names a Kubernetes pod.
type PodRef struct {
	Namespace, Name, UID string
}

func (t Target) String() string {
	if t.Pod.Name != "" {
		return "pod " + t.Pod.Namespace + "/" + t.Pod.Name
	}
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

// GRPCFault is a gRPC fault on one port.
type GRPCFault struct {
	Port  uint16
	Fault httpfault.GRPCFault
	// ResetConnections resets established connections at the start. Off by
	// default: gRPC connections are long-lived and carry long-lived streams,
	// which a reset would break; new connections get the fault.
	ResetConnections bool
}

// NetworkFault drops packets and refuses connections.
type NetworkFault struct {
	Port      uint16 // 0 = all ports
	Protocol  string // "tcp", "udp", or "" for all
	DropRate  float64
	ResetRate float64
}

// Spec describes one fault. Exactly one of HTTP, GRPC and Network is set.
type Spec struct {
	// ID names the fault; empty means the engine picks one.
	ID       string
	Target   Target
	Duration time.Duration
	HTTP     *HTTPFault
	GRPC     *GRPCFault
	Network  *NetworkFault
}

// Kind returns "http", "grpc" or "network".
func (s *Spec) Kind() string {
	switch {
	case s.HTTP != nil:
		return "http"
	case s.GRPC != nil:
		return "grpc"
	case s.Network != nil:
		return "network"
	}
	return ""
}

// Reason says why a fault ended.
type Reason string

const (
	ReasonExpired   Reason = "expired"
	ReasonRevoked   Reason = "revoked"
	ReasonCancelled Reason = "cancelled"
	ReasonShutdown  Reason = "shutdown"
	// ReasonTargetDeleted: the target (its pod) went away mid-fault.
	ReasonTargetDeleted Reason = "target-deleted"
)

// Counters are a fault's counts; each kind fills its own.
type Counters struct {
	httpfault.Counters        // http, grpc: requests
	ConnectionsReset   uint64 // http, grpc: established connections reset at the start
	PacketsSeen        uint64 // network: inbound packets matching port and protocol
	PacketsDropped     uint64 // network
	ConnectionsRefused uint64 // network: new TCP connections refused (resetRate)
}

// Status is a snapshot of a fault.
type Status struct {
	ID        string
	Kind      string
	Target    Target
	Netns     netns.ID
	Port      uint16
	Protocol  string // network faults
	Started   time.Time
	Expires   time.Time
	Counters  Counters
	Ready     bool   // set up and active (or ended)
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

	mu        sync.Mutex
	faults    map[string]*Fault
	forbidden map[string]time.Time // ids revoked before they arrived
	closed    bool
}

// forbidFor is how long Revoke(id, true) refuses a late fault with id.
const forbidFor = time.Minute

// claim is what a fault holds in a namespace; two faults whose claims
// collide cannot run at once.
type claim struct {
	ns       netns.ID
	proxy    bool   // http or grpc: the port is steered into a proxy
	port     uint16 // 0 = all (network only)
	protocol string // network only: "tcp", "udp", "" = all
}

func (c claim) covers(protocol string) bool { return c.protocol == "" || c.protocol == protocol }

func (a claim) collides(b claim) bool {
	if a.ns != b.ns {
		return false
	}
	switch {
	case a.proxy && b.proxy:
		return a.port == b.port
	case !a.proxy && !b.proxy:
		return (a.port == 0 || b.port == 0 || a.port == b.port) &&
			(a.protocol == "" || b.protocol == "" || a.protocol == b.protocol)
	case a.proxy:
		return b.covers("tcp") && (b.port == 0 || b.port == a.port)
	default:
		return b.collides(a)
	}
}

// New returns an Engine.
func New(opts Options) *Engine {
	if !opts.BypassSource.IsValid() {
		opts.BypassSource = DefaultBypassSource
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Engine{bypass: opts.BypassSource, log: opts.Logger, faults: map[string]*Fault{}, forbidden: map[string]time.Time{}}
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
	case s.Target.NetnsPath == "" && s.Target.PID == 0 && s.Target.Pod.Name == "":
		return invalid("target: give a netns path, a pid or a pod")
	case s.Target.NetnsPath != "" && s.Target.PID != 0:
		return invalid("target: give a netns path or a pid, not both")
	case s.Target.PID < 0:
		return invalid("target: pid must be positive, got %d", s.Target.PID)
	}
	kinds := 0
	for _, set := range []bool{s.HTTP != nil, s.GRPC != nil, s.Network != nil} {
		if set {
			kinds++
		}
	}
	switch {
	case kinds == 0:
		return invalid("fault: no fault given")
	case kinds > 1:
		return invalid("fault: give one fault kind per fault")
	case s.HTTP != nil && s.HTTP.Port == 0, s.GRPC != nil && s.GRPC.Port == 0:
		return invalid("port must be in 1-65535, got 0")
	case s.HTTP != nil:
		return s.HTTP.Fault.Validate()
	case s.GRPC != nil:
		return s.GRPC.Fault.Validate()
	}
	n := s.Network
	switch {
	case n.Protocol != "" && n.Protocol != "tcp" && n.Protocol != "udp":
		return invalid("protocol must be tcp, udp, or empty for all, got %q", n.Protocol)
	case n.DropRate < 0 || n.DropRate > 1 || n.DropRate != n.DropRate:
		return invalid("dropRate must be in the range [0, 1], got %v", n.DropRate)
	case n.ResetRate < 0 || n.ResetRate > 1 || n.ResetRate != n.ResetRate:
		return invalid("resetRate must be in the range [0, 1], got %v", n.ResetRate)
	case n.ResetRate > 0 && n.Protocol == "udp":
		return invalid("resetRate applies to TCP connections; it cannot be used with protocol udp")
	}
	return nil
}

func (s *Spec) claim(ns netns.ID) claim {
	switch {
	case s.HTTP != nil:
		return claim{ns: ns, proxy: true, port: s.HTTP.Port}
	case s.GRPC != nil:
		return claim{ns: ns, proxy: true, port: s.GRPC.Port}
	default:
		return claim{ns: ns, port: s.Network.Port, protocol: s.Network.Protocol}
	}
}

func openTarget(t Target) (*netns.Handle, error) {
	var h *netns.Handle
	var err error
	switch {
	case t.PID > 0:
		h, err = netns.OpenPID(t.PID)
	case t.NetnsPath == "":
		return nil, fmt.Errorf("%w: %s: no network namespace resolved for it", errdefs.ErrFailedPrecondition, t)
	default:
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
	k := spec.claim(ns.ID())
	f := &Fault{e: e, spec: spec, ns: ns, claim: k, setupDone: make(chan struct{}), done: make(chan struct{}), stopReq: make(chan Reason, 1)}
	f.started = time.Now()
	f.expires = f.started.Add(spec.Duration)

	// Reserve the claim before the slow part so a concurrent Start is refused.
	if err := e.reserve(f); err != nil {
		ns.Close()
		return nil, err
	}
	if err := f.setup(); err != nil {
		e.mu.Lock()
		f.setupFailed = true
		e.mu.Unlock()
		e.forget(f)
		close(f.setupDone)
		ns.Close()
		return nil, err
	}
	e.mu.Lock()
	f.ready = true
	e.mu.Unlock()
	go f.run()
	close(f.setupDone)
	e.log.Info("fault started", "fault_id", spec.ID, "kind", spec.Kind(), "netns", spec.Target.String(), "port", k.port, "duration", spec.Duration)
	return f, nil
}

// reserve registers f unless the engine is closed, its id is taken, or its
// claim collides with a fault already there.
func (e *Engine) reserve(f *Fault) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return fmt.Errorf("%w: faultlined is shutting down", errdefs.ErrUnavailable)
	case e.faults[f.spec.ID] != nil:
		return fmt.Errorf("%w: a fault with id %q is already active", errdefs.ErrAlreadyExists, f.spec.ID)
	case time.Since(e.forbidden[f.spec.ID]) < forbidFor:
		return fmt.Errorf("%w: fault %q was revoked before it arrived", errdefs.ErrFailedPrecondition, f.spec.ID)
	}
	for _, other := range e.faults {
		if !other.detached && other.claim.collides(f.claim) {
			return fmt.Errorf("%w: %s already has %s fault %q on %s, active until %s; revoke it first",
				errdefs.ErrFailedPrecondition, f.spec.Target, other.spec.Kind(), other.spec.ID, other.claim.describe(), other.expires.Format(time.RFC3339))
		}
	}
	e.faults[f.spec.ID] = f
	return nil
}

func (e *Engine) forget(f *Fault) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.faults[f.spec.ID] == f {
		delete(e.faults, f.spec.ID)
	}
}

func (c claim) describe() string {
	if c.proxy {
		return fmt.Sprintf("port %d", c.port)
	}
	port, proto := "all ports", "all protocols"
	if c.port != 0 {
		port = fmt.Sprintf("port %d", c.port)
	}
	if c.protocol != "" {
		proto = c.protocol
	}
	return port + " (" + proto + ")"
}

// List returns the running faults, and those still starting, oldest first.
func (e *Engine) List() []Status {
	e.mu.Lock()
	fs := make([]*Fault, 0, len(e.faults))
	for _, f := range e.faults {
		fs = append(fs, f)
	}
	e.mu.Unlock()
	out := make([]Status, 0, len(fs))
	for _, f := range fs {
		out = append(out, f.Status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out
}

// Revoke stops a fault and returns its final status. A fault still being
// set up is stopped as soon as it is. With forbidLater, an id not known
// yet is refused if it arrives within a minute: a caller that cancelled
// an Inject still on its way can be sure it never starts.
func (e *Engine) Revoke(id string, forbidLater bool) (Status, error) {
	notFound := fmt.Errorf("%w: no active fault with id %q", errdefs.ErrNotFound, id)
	e.mu.Lock()
	f := e.faults[id]
	if f == nil {
		if forbidLater {
			for old, at := range e.forbidden {
				if time.Since(at) >= forbidFor {
					delete(e.forbidden, old)
				}
			}
			e.forbidden[id] = time.Now()
		}
		e.mu.Unlock()
		return Status{}, notFound
	}
	e.mu.Unlock()
	st, ok := f.stopOnceSetUp(ReasonRevoked)
	if !ok {
		return Status{}, notFound
	}
	return st, nil
}

// stopOnceSetUp waits for f's setup to finish and stops it; false means
// the setup failed, so there was nothing to stop.
func (f *Fault) stopOnceSetUp(reason Reason) (Status, bool) {
	<-f.setupDone
	f.e.mu.Lock()
	failed := f.setupFailed
	f.e.mu.Unlock()
	if failed {
		return Status{}, false
	}
	return f.Stop(reason), true
}

// EndWhere stops, for reason, every fault whose target matches, including
// faults still being set up (once they are), and returns how many it
// stopped. It does not wait for them to end.
func (e *Engine) EndWhere(match func(Target) bool, reason Reason) int {
	e.mu.Lock()
	var fs []*Fault
	for _, f := range e.faults {
		if match(f.spec.Target) {
			fs = append(fs, f)
		}
	}
	e.mu.Unlock()
	for _, f := range fs {
		go f.stopOnceSetUp(reason)
	}
	return len(fs)
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
	e           *Engine
	spec        Spec
	ns          *netns.Handle
	claim       claim
	ready       bool // set up and running; guarded by e.mu
	setupFailed bool // guarded by e.mu
	// detached: steering is gone and only a drain is left, so the claim
	// is free for a new fault; guarded by e.mu.
	detached  bool
	setupDone chan struct{}

	impl impl

	started, expires time.Time
	stopReq          chan Reason
	done             chan struct{}
	reason           Reason
	final            Counters
}

// impl is the kind-specific part of a running fault.
type impl interface {
	counters() Counters
	// detach stops new traffic reaching the fault, after which its claim
	// is free; it is safe to call more than once.
	detach()
	// teardown detaches if needed and releases everything; the engine
	// calls it once.
	teardown()
}

func (f *Fault) setup() error {
	var err error
	switch s := f.spec; {
	case s.HTTP != nil:
		fault := s.HTTP.Fault
		f.impl, err = f.setupProxy(s.HTTP.Port, func(p *httpfault.Proxy) { p.Fault = &fault }, !s.HTTP.KeepConnections)
	case s.GRPC != nil:
		fault := s.GRPC.Fault
		f.impl, err = f.setupProxy(s.GRPC.Port, func(p *httpfault.Proxy) { p.GRPC = &fault }, s.GRPC.ResetConnections)
	case s.Network != nil:
		f.impl, err = f.setupNetwork(s.Network)
	}
	if errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("%w: %v", errdefs.ErrNotImplemented, err)
	}
	return err
}

// proxyFault is an http or grpc fault: a proxy in the namespace and the
// steering program in front of it.
type proxyFault struct {
	log       *slog.Logger
	listeners []*net.TCPListener
	proxy     *httpfault.Proxy
	steering  *steer.Steering
	reset     int
}

// setupProxy opens the listeners in the namespace, starts the proxy,
// attaches the steering program and resets established connections, in
// that order, so that no connection is ever steered to a listener that is
// not served. On error it releases what it made.
func (f *Fault) setupProxy(port uint16, configure func(*httpfault.Proxy), resetConns bool) (_ impl, err error) {
	ctx := context.Background()
	pf := &proxyFault{log: f.e.log.With("fault_id", f.spec.ID)}
	defer func() {
		if err != nil {
			pf.teardown()
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
		pf.log.Debug("no ipv6 proxy listener", "netns", f.spec.Target.String(), "err", err)
	}

	upstream := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	dial := f.ns.Dialer(&net.TCPAddr{IP: f.e.bypass.AsSlice()})
	pf.proxy = &httpfault.Proxy{
		Dial:   func(ctx context.Context) (net.Conn, error) { return dial(ctx, "tcp4", upstream) },
		Logger: pf.log,
	}
	configure(pf.proxy)
	for _, ln := range pf.listeners {
		go pf.proxy.Serve(ln)
	}

	pf.steering, err = steer.Attach(f.ns, steer.Options{Port: port, IPv4: ln4, IPv6: ln6, BypassSource: f.e.bypass})
	if err != nil {
		return nil, err
	}
	if resetConns {
		bypass := f.e.bypass
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
	if pf.proxy != nil {
		c.Counters = pf.proxy.Counters()
	}
	return c
}

// detach removes the steering: new connections go to the application.
func (pf *proxyFault) detach() {
	if pf.steering != nil {
		if err := pf.steering.Close(); err != nil {
			pf.log.Warn("detach steering", "err", err)
		}
		pf.steering = nil
	}
}

// teardown undoes setupProxy: steering first, then the proxy (a drain),
// then the listeners.
func (pf *proxyFault) teardown() {
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

// networkFault is a network fault: tcx drop and sk_lookup refuse programs.
type networkFault struct {
	nf     *netfault.Fault
	closed sync.Once

	mu   sync.Mutex // counters runs on List calls and on the fault's own goroutine
	last netfault.Stats
}

func (f *Fault) setupNetwork(n *NetworkFault) (impl, error) {
	proto := netfault.ProtocolAll
	switch n.Protocol {
	case "tcp":
		proto = netfault.ProtocolTCP
	case "udp":
		proto = netfault.ProtocolUDP
	}
	nf, err := netfault.Attach(f.ns, netfault.Options{Port: n.Port, Protocol: proto, DropRate: n.DropRate, ResetRate: n.ResetRate})
	if err != nil {
		return nil, err
	}
	return &networkFault{nf: nf}, nil
}

// counters reads the programs' counters, or the last reading once they are
// closed.
func (nf *networkFault) counters() Counters {
	nf.mu.Lock()
	defer nf.mu.Unlock()
	if st, err := nf.nf.Stats(); err == nil {
		nf.last = st
	}
	return Counters{PacketsSeen: nf.last.PacketsSeen, PacketsDropped: nf.last.PacketsDropped, ConnectionsRefused: nf.last.ConnectionsRefused}
}

// detach is the whole teardown of a network fault: nothing drains.
func (nf *networkFault) detach() {
	nf.closed.Do(func() {
		nf.counters() // keep the last reading
		nf.nf.Close()
	})
}

func (nf *networkFault) teardown() { nf.detach() }

func (f *Fault) run() {
	t := time.NewTimer(time.Until(f.expires))
	defer t.Stop()
	var reason Reason
	select {
	case <-t.C:
		reason = ReasonExpired
	case reason = <-f.stopReq:
	}
	f.impl.detach()
	f.e.mu.Lock()
	f.detached = true // a new fault on the port may start while this one drains
	f.e.mu.Unlock()
	f.impl.teardown()
	f.final = f.impl.counters() // after the drain, so it counts too
	f.reason = reason
	f.e.forget(f)
	f.ns.Close()
	f.e.log.Info("fault ended", "fault_id", f.spec.ID, "reason", reason, "requests", f.final.Requests,
		"delayed", f.final.Delayed, "errored", f.final.Errored, "packets_dropped", f.final.PacketsDropped)
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
		ID: f.spec.ID, Kind: f.spec.Kind(), Target: f.spec.Target, Netns: f.claim.ns, Port: f.claim.port,
		Protocol: f.claim.protocol, Started: f.started, Expires: f.expires,
	}
	f.e.mu.Lock()
	ready := f.ready
	f.e.mu.Unlock()
	st.Ready = ready
	select {
	case <-f.done:
		st.Counters, st.EndReason = f.final, f.reason
	default:
		if ready {
			st.Counters = f.impl.counters()
		}
	}
	return st
}

func newID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "f-" + hex.EncodeToString(b)
}
