// Package engine owns the lifetime of faults on this node: it enters the
// target's network namespace, opens the fault proxy there and steers the
// target port into it (or attaches the kernel programs of a network
// fault), and takes it all down again on expiry, on Stop, when the target
// goes away, or when the engine closes. Faults arrive validated
// (package fault); the engine does not check them again.
//
// Requirements (see also README "Lifecycle"):
//   - Start MUST refuse a second fault whose claim collides with one on
//     the same namespace, and MUST leave nothing behind when it fails or
//     is cancelled half-way.
//   - Stopping MUST detach the steering program first, so the next
//     connection reaches the application directly, then drain the proxy.
//   - Stopping MUST release every reference to the namespace (listener,
//     link, handle): a deleted pod's namespace must not be kept alive.
//   - A crash of the process MUST NOT leave anything that changes traffic:
//     every kernel object is owned by a file descriptor of this process.
package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/faultline-dev/faultline/pkg/fault"
	"github.com/faultline-dev/faultline/pkg/netns"
	"github.com/faultline-dev/faultline/pkg/proxy/httpfault"
	"github.com/faultline-dev/faultline/pkg/proxy/tcpfault"
)

// DefaultBypassSource is the loopback address the proxy dials the
// application from; the steering program lets it through.
var DefaultBypassSource = netip.MustParseAddr("127.0.0.253")

// drainTimeout bounds how long requests in flight may finish after a fault
// ends before their connections are closed.
const drainTimeout = time.Second

// targetCheckEvery is how often a running fault checks that its target's
// namespace is still there (a deleted named netns, an exited process).
const targetCheckEvery = 250 * time.Millisecond

// Target is where a fault goes: a network namespace path or a process ID.
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

// path is the namespace file of the target.
func (t Target) path() string {
	if t.PID > 0 {
		return "/proc/" + strconv.Itoa(t.PID) + "/ns/net"
	}
	return t.NetnsPath
}

// Reason says why a fault ended.
type Reason string

const (
	ReasonExpired   Reason = "expired"
	ReasonRevoked   Reason = "revoked"
	ReasonCancelled Reason = "cancelled"
	ReasonShutdown  Reason = "shutdown"
	// ReasonTargetDeleted: the target (its namespace, process or pod)
	// went away mid-fault.
	ReasonTargetDeleted Reason = "target-deleted"
)

// State is where a fault is in its life; it only moves forward.
type State int

const (
	StateStarting State = iota // being set up
	StateActive                // steering traffic (or dropping packets)
	StateDraining              // detached: new traffic goes direct, requests in flight finish
	StateEnded                 // everything released
)

func (s State) String() string {
	return [...]string{"starting", "active", "draining", "ended"}[s]
}

// Counters are a fault's counts; each kind fills its own.
type Counters struct {
	httpfault.Counters                   // http, grpc: requests
	ConnectionsReset   uint64            // http, grpc: established connections reset at the start
	PacketsSeen        uint64            // network: inbound packets matching port and protocol
	PacketsDropped     uint64            // network
	ConnectionsRefused uint64            // network: new TCP connections refused (resetRate)
	TCP                tcpfault.Counters // tcp
}

// Status is a snapshot of a fault.
type Status struct {
	ID     string
	Kind   fault.Kind
	Target Target
	Claim  fault.Claim
	State  State
	// Started is when the fault became active (when Start was called,
	// while it is starting); it ends Duration later.
	Started, Expires time.Time
	Counters         Counters
	EndReason        Reason // once ended
	// Links is how many kernel links (bpf_link) the fault holds now.
	Links int
}

// Monitor watches faults for metrics; package metrics implements it.
type Monitor interface {
	// Observers returns what a proxy fault reports its delays and its
	// overhead to (see httpfault.Proxy); either may be nil.
	Observers(id string, kind fault.Kind, t Target) (delays, overhead httpfault.Observer)
	// Ended is called once with the final status of every fault that
	// was started, including one whose setup failed, before its Done
	// closes; it must not wait for the engine.
	Ended(Status)
}

// Options configure an Engine.
type Options struct {
	// BypassSource is the IPv4 loopback address upstream dials come from.
	// Zero means DefaultBypassSource.
	BypassSource netip.Addr
	Logger       *slog.Logger
	// AllowHostNetns lets faults target the host's own network namespace
	// (that of PID 1) and faultlined's; refused otherwise, as faults on
	// hostNetwork pods are.
	AllowHostNetns bool
	// HeaderTimeout and IdleTimeout are the HTTP/1 proxy's (see
	// httpfault.Proxy); zero means its defaults.
	HeaderTimeout, IdleTimeout time.Duration
	// HeadMemory bounds the memory that large HTTP/1 request heads (over
	// 4 KiB) hold at once, across every fault; zero means
	// httpfault.DefaultHeadBudget.
	HeadMemory int64
	// Monitor, if set, is told about every fault (see Monitor).
	Monitor Monitor

	// beforeAttach, for tests, runs during setup just before the kernel
	// program is attached.
	beforeAttach func()
}

// Engine runs faults. Its zero value is not usable; call New.
type Engine struct {
	opts  Options
	log   *slog.Logger
	heads *httpfault.HeadBudget // shared by every fault's proxy

	mu     sync.Mutex
	faults map[string]*Running // every fault not yet ended
	closed bool
}

// New returns an Engine.
func New(opts Options) *Engine {
	if !opts.BypassSource.IsValid() {
		opts.BypassSource = DefaultBypassSource
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	heads := httpfault.NewHeadBudget(cmp.Or(opts.HeadMemory, httpfault.DefaultHeadBudget))
	return &Engine{opts: opts, log: opts.Logger, heads: heads, faults: map[string]*Running{}}
}

// isHost reports whether ns is the network namespace of PID 1 or of
// faultlined itself.
func (e *Engine) isHost(ns *netns.Handle) bool {
	for _, p := range []string{"/proc/1/ns/net", "/proc/self/ns/net"} {
		if ns.Same(p) {
			return true
		}
	}
	return false
}

// kernelLimit explains the kernel refusing one more program on a
// namespace or interface (64 of a kind: E2BIG from sk_lookup, ERANGE from
// tcx).
func kernelLimit(err error, t Target) error {
	if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ERANGE) {
		return fmt.Errorf("%w: %s: the kernel takes at most 64 programs of a kind per network namespace or interface, and faults there hold them all; end one first",
			errdefs.ErrResourceExhausted, t)
	}
	return err
}

func openTarget(t Target) (*netns.Handle, error) {
	if t.NetnsPath == "" && t.PID <= 0 {
		return nil, fmt.Errorf("%w: %s: no network namespace resolved for it", errdefs.ErrFailedPrecondition, t)
	}
	h, err := netns.Open(t.path())
	switch {
	case err == nil:
		return h, nil
	case errors.Is(err, os.ErrNotExist) && t.PID > 0:
		return nil, fault.Invalid("pid %d does not exist", t.PID)
	case errors.Is(err, os.ErrNotExist):
		return nil, fault.Invalid("netns %s does not exist", t.NetnsPath)
	case errors.Is(err, os.ErrPermission):
		return nil, fmt.Errorf("%w: faultlined may not open the network namespace of %s: %v", errdefs.ErrFailedPrecondition, t, err)
	case errors.Is(err, netns.ErrNotNetns):
		return nil, fault.Invalid("%s is not a network namespace", t)
	default:
		return nil, fmt.Errorf("open target %s: %w", t, err)
	}
}

// Start starts the fault on target and returns once it is active. ctx
// bounds the setup only: once active, the fault runs until its duration
// passes or it is stopped. A setup that fails or is cancelled (ctx, Stop,
// Close) leaves nothing behind.
func (e *Engine) Start(ctx context.Context, target Target, spec fault.Spec) (*Running, error) {
	if spec.ID == "" {
		spec.ID = fault.NewID("f")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ns, err := openTarget(target)
	if err != nil {
		return nil, err
	}
	if !e.opts.AllowHostNetns && e.isHost(ns) {
		ns.Close()
		return nil, fmt.Errorf("%w: %s is in the host's network namespace (that of PID 1 or of faultlined itself): a fault there hits the machine, not a workload; start faultlined with --allow-host-netns to allow it",
			errdefs.ErrFailedPrecondition, target)
	}
	f := &Running{e: e, spec: spec, target: target, ns: ns, claim: spec.Fault.Claim(),
		started: time.Now(), stopReq: make(chan Reason, 1), done: make(chan struct{})}
	f.log = e.log.With("fault_id", spec.ID)
	// Reserve the claim before the slow part so a concurrent Start is refused.
	if err := e.reserve(f); err != nil {
		ns.Close()
		return nil, err
	}
	if err := f.setup(ctx); err != nil {
		err = kernelLimit(err, target)
		reason := ReasonCancelled
		select {
		case reason = <-f.stopReq: // stopped during the setup
		default:
		}
		f.end(reason)
		return nil, err
	}
	e.mu.Lock()
	f.state = StateActive
	f.started = time.Now()
	f.expires = f.started.Add(spec.Duration)
	e.mu.Unlock()
	if t, ok := spec.Fault.(fault.Timed); ok {
		t.Begin(f.started) // a timeline counts from now
	}
	go f.run()
	f.log.Info("fault started", "kind", spec.Fault.Kind(), "target", target.String(), "claim", f.claim.String(), "duration", spec.Duration)
	return f, nil
}

// reserve registers f unless the engine is closed, its id is taken, or its
// claim collides with a fault's that is still attached.
func (e *Engine) reserve(f *Running) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return fmt.Errorf("%w: faultlined is shutting down", errdefs.ErrUnavailable)
	case e.faults[f.spec.ID] != nil:
		return fmt.Errorf("%w: a fault with id %q is already active", errdefs.ErrAlreadyExists, f.spec.ID)
	}
	ns := f.ns.ID()
	for _, other := range e.faults {
		if other.ns.ID() == ns && other.state <= StateActive && other.claim.Collides(f.claim) {
			return fmt.Errorf("%w: %s already has %s fault %q on %s, active until %s; revoke it first",
				errdefs.ErrFailedPrecondition, f.target, other.spec.Fault.Kind(), other.spec.ID, other.claim, other.expiresLocked().Format(time.RFC3339))
		}
	}
	e.faults[f.spec.ID] = f
	return nil
}

// List returns the faults that have not ended, oldest first.
func (e *Engine) List() []Status {
	e.mu.Lock()
	fs := make([]*Running, 0, len(e.faults))
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

// Revoke stops a fault, in whatever state it is, and returns its final
// status.
func (e *Engine) Revoke(id string) (Status, error) {
	e.mu.Lock()
	f := e.faults[id]
	e.mu.Unlock()
	if f == nil {
		return Status{}, fmt.Errorf("%w: no active fault with id %q", errdefs.ErrNotFound, id)
	}
	return f.Stop(ReasonRevoked), nil
}

// EndWhere stops, for reason, every fault whose target matches, in
// whatever state, and returns how many. It does not wait for them to end.
func (e *Engine) EndWhere(match func(Target) bool, reason Reason) int {
	e.mu.Lock()
	var fs []*Running
	for _, f := range e.faults {
		if match(f.target) {
			fs = append(fs, f)
		}
	}
	e.mu.Unlock()
	for _, f := range fs {
		go f.Stop(reason)
	}
	return len(fs)
}

// Close stops every fault, whatever its state, waits until each has
// released everything, and refuses new ones.
func (e *Engine) Close() {
	e.mu.Lock()
	e.closed = true
	fs := make([]*Running, 0, len(e.faults))
	for _, f := range e.faults {
		fs = append(fs, f)
	}
	e.mu.Unlock()
	var wg sync.WaitGroup
	for _, f := range fs {
		wg.Add(1)
		go func() { defer wg.Done(); f.Stop(ReasonShutdown) }()
	}
	wg.Wait()
}

// Running is one fault the engine runs.
type Running struct {
	e      *Engine
	spec   fault.Spec
	target Target
	ns     *netns.Handle
	claim  fault.Claim
	log    *slog.Logger
	impl   impl

	state            State // guarded by e.mu
	started, expires time.Time
	stopReq          chan Reason
	done             chan struct{}
	reason           Reason   // set before done closes
	final            Counters // set before done closes
}

// impl is the kind-specific part of a running fault.
type impl interface {
	counters() Counters
	// links is how many kernel links it holds now.
	links() int
	// detach stops new traffic reaching the fault, after which its claim
	// is free; it is safe to call more than once.
	detach()
	// release detaches if needed and releases everything; called once.
	release()
}

func (f *Running) setup(ctx context.Context) error {
	// A Stop or Close during the setup cancels it too: the watcher takes
	// the reason and puts it back, for run or for Start to find.
	ctx, cancel := context.WithCancel(ctx)
	watching := make(chan struct{})
	defer func() { cancel(); <-watching }()
	go func() {
		defer close(watching)
		select {
		case r := <-f.stopReq:
			cancel()
			select {
			case f.stopReq <- r:
			default: // another Stop's reason is there already
			}
		case <-ctx.Done():
		}
	}()
	var err error
	switch k := f.spec.Fault.(type) {
	case fault.ProxyFault:
		f.impl, err = f.setupProxy(ctx, k.Claim().Port, k.ResetsConnections(), func(p *proxyFault, dial dialFunc) server {
			hp := &httpfault.Proxy{Rule: k, Dial: dial, Logger: p.log,
				HeaderTimeout: f.e.opts.HeaderTimeout, IdleTimeout: f.e.opts.IdleTimeout, HeadBudget: f.e.heads}
			if m := f.e.opts.Monitor; m != nil {
				hp.Delays, hp.Overhead = m.Observers(f.spec.ID, k.Kind(), f.target)
			}
			p.counts = func(c *Counters) { c.Counters = hp.Counters() }
			return hp
		})
	case *fault.TCP:
		// Established connections are reset, as for HTTP, so that their
		// clients reconnect through the relay.
		f.impl, err = f.setupProxy(ctx, k.Port, true, func(p *proxyFault, dial dialFunc) server {
			tp := &tcpfault.Proxy{Fault: k, Dial: dial, Logger: p.log}
			p.counts = func(c *Counters) { c.TCP = tp.Counters() }
			return tp
		})
	case *fault.Network:
		f.impl, err = f.setupNetwork(ctx, k)
	default:
		err = fmt.Errorf("%w: fault kind %s", errdefs.ErrNotImplemented, k.Kind())
	}
	if err == nil && ctx.Err() != nil {
		f.impl.release()
		err = ctx.Err()
	}
	if errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("%w: %v", errdefs.ErrNotImplemented, err)
	}
	return err
}

// checkpoint is called between setup steps: a cancelled setup stops there.
func (f *Running) checkpoint(ctx context.Context) error {
	if f.e.opts.beforeAttach != nil {
		f.e.opts.beforeAttach()
	}
	return ctx.Err()
}

func (f *Running) run() {
	t := time.NewTimer(time.Until(f.expires))
	defer t.Stop()
	check := time.NewTicker(targetCheckEvery)
	defer check.Stop()
	var reason Reason
	for reason == "" {
		select {
		case <-t.C:
			reason = ReasonExpired
		case reason = <-f.stopReq:
		case <-check.C:
			if !f.ns.Same(f.target.path()) {
				f.log.Info("target gone mid-fault", "target", f.target.String())
				reason = ReasonTargetDeleted
			}
		}
	}
	f.impl.detach()
	f.e.mu.Lock()
	f.state = StateDraining // a new fault may claim the port while this one drains
	f.e.mu.Unlock()
	f.impl.release()
	f.final = f.impl.counters() // after the drain, so it counts too
	f.end(reason)
	f.log.Info("fault ended", "reason", reason, "requests", f.final.Requests, "delayed", f.final.Delayed,
		"errored", f.final.Errored, "packets_dropped", f.final.PacketsDropped)
}

// end marks the fault ended and forgets it.
func (f *Running) end(reason Reason) {
	f.e.mu.Lock()
	f.state = StateEnded
	f.reason = reason
	if f.e.faults[f.spec.ID] == f {
		delete(f.e.faults, f.spec.ID)
	}
	f.e.mu.Unlock()
	f.ns.Close()
	if m := f.e.opts.Monitor; m != nil {
		m.Ended(f.Status()) // before Done: once Stop returns, the monitor knows
	}
	close(f.done)
}

// ID returns the fault's id.
func (f *Running) ID() string { return f.spec.ID }

// Done is closed once the fault has ended and released everything.
func (f *Running) Done() <-chan struct{} { return f.done }

// Stop ends the fault, in whatever state it is, waits until everything is
// released and returns the final status.
func (f *Running) Stop(reason Reason) Status {
	select {
	case f.stopReq <- reason:
	default:
	}
	<-f.done
	return f.Status()
}

func (f *Running) expiresLocked() time.Time {
	if f.state == StateStarting {
		return f.started.Add(f.spec.Duration)
	}
	return f.expires
}

// Status returns a snapshot; counters are live while the fault runs.
func (f *Running) Status() Status {
	f.e.mu.Lock()
	st := Status{ID: f.spec.ID, Kind: f.spec.Fault.Kind(), Target: f.target, Claim: f.claim, State: f.state,
		Started: f.started, Expires: f.expiresLocked()}
	f.e.mu.Unlock()
	switch st.State {
	case StateEnded:
		st.Counters, st.EndReason = f.final, f.reason
	case StateActive, StateDraining:
		st.Counters, st.Links = f.impl.counters(), f.impl.links()
	}
	return st
}

// NewWithHook returns an Engine whose setups call beforeAttach just
// before attaching, for tests that act in the middle of a setup.
func NewWithHook(beforeAttach func()) *Engine {
	e := New(Options{})
	e.opts.beforeAttach = beforeAttach
	return e
}
