// Package nodecontroller is the controller each faultlined runs in
// Kubernetes mode: it applies the Fault objects that match pods of its
// node through the engine, and reports them in the Fault's status and in
// events.
package nodecontroller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/containerd/errdefs"
	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/fault"
	"github.com/faultline-dev/faultline/pkg/kubefault"
	"github.com/faultline-dev/faultline/pkg/nodeapi"
	"github.com/faultline-dev/faultline/pkg/targets"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// Pods lists the pods of this node.
type Pods interface {
	List(namespace string, sel labels.Selector) []*corev1.Pod
}

// DefaultTargetLimit is how many pods a Fault may match unless it says
// more (spec.maxTargets).
const DefaultTargetLimit = 20

// Controller applies the Faults that match pods of its node: it starts a
// fault on each matching pod for what is left of the Fault's duration,
// writes this node's status entry, and ends them when the Fault is
// deleted or expires. Sync and Delete are called by the Faults watch.
type Controller struct {
	Node    string
	Faults  nodeapi.Faults
	Targets nodeapi.TargetResolver
	Pods    Pods
	Cluster kubefault.Cluster
	// Protected namespaces are never faulted (kube-system, faultline's).
	Protected   []string
	TargetLimit int
	// Journal records the Faults begun here, for a restarted daemon
	// (default: in memory, this process only).
	Journal Journal
	Logger  *slog.Logger

	mu   sync.Mutex
	ctx  context.Context
	runs map[string]*run // namespace/name → the Fault's run on this node
	done map[types.UID]bool
	seen map[types.UID]time.Time // when a Fault or plan was first seen
	wg   sync.WaitGroup
}

// run is a Fault's run on this node.
type run struct {
	uid    types.UID
	cancel context.CancelFunc
	// lease is the Fault's spec.lease (0: none); renewed takes a signal
	// each time the lease annotation changes from mark.
	lease   time.Duration
	mark    string
	renewed chan struct{}
	// refresh takes each new RefreshAnnotation value (asked, the last
	// one seen).
	asked   string
	refresh chan string
}

// Start sets the lifetime of the controller's faults: when ctx ends they
// end, and their status stays as it was, for a restarted daemon to pick
// them up.
func (c *Controller) Start(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ctx, c.runs, c.done, c.seen = ctx, map[string]*run{}, map[types.UID]bool{}, map[types.UID]time.Time{}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.TargetLimit == 0 {
		c.TargetLimit = DefaultTargetLimit
	}
	if c.Journal == nil {
		c.Journal = &MemJournal{}
	}
}

// Wait returns once every run has ended (after ctx of Start ended).
func (c *Controller) Wait() { c.wg.Wait() }

// Sync is a Fault as the watch sees it now. A Fault's spec never changes,
// so a Fault already running here is left alone but for its lease.
func (c *Controller) Sync(f *kubefault.Fault) {
	key := f.Namespace + "/" + f.Name
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil || c.done[f.UID] {
		return
	}
	if r := c.runs[key]; r != nil {
		if r.uid == f.UID {
			if mark := f.Annotations[kubefault.LeaseAnnotation]; mark != r.mark {
				r.mark = mark
				select {
				case r.renewed <- struct{}{}:
				default: // a renewal is pending already
				}
			}
			if asked := f.Annotations[kubefault.RefreshAnnotation]; asked != r.asked {
				r.asked = asked
				select {
				case r.refresh <- asked:
				default: // the run is busy: the next request gets its answer
				}
			}
			return
		}
		r.cancel() // the name now holds another Fault
	}
	mine := nodeStatus(f, c.Node)
	if f.DeletionTimestamp != nil || mine != nil && mine.Phase != kubefault.PhaseActive && mine.Phase != kubefault.PhasePending {
		return // done here before
	}
	if mine == nil && c.Journal.Begun(f.UID) { // the daemon before this one was killed before it wrote the status
		mine = &kubefault.NodeStatus{Node: c.Node}
	}
	if _, _, plan := kubefault.PlanOf(f); !plan {
		f.CreationTimestamp = c.anchor(f.UID, f.CreationTimestamp)
	}
	lease, _ := f.Spec.LeaseDuration() // a bad lease fails in execute
	ctx, cancel := context.WithCancel(c.ctx)
	r := &run{uid: f.UID, cancel: cancel, lease: lease, mark: f.Annotations[kubefault.LeaseAnnotation], renewed: make(chan struct{}, 1),
		asked: f.Annotations[kubefault.RefreshAnnotation], refresh: make(chan string, 1)}
	c.runs[key] = r
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if mine != nil {
			c.endRestarted(ctx, f, mine)
		} else {
			c.execute(ctx, f, r)
		}
		if c.ctx.Err() == nil { // else the next daemon must see it
			c.Journal.End(f.UID)
		}
		c.mu.Lock()
		if c.runs[key] == r {
			delete(c.runs, key)
		}
		c.done[f.UID] = true
		c.mu.Unlock()
		cancel()
	}()
}

// Delete is a Fault gone: its faults here end at once.
func (c *Controller) Delete(namespace, name string, uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := namespace + "/" + name
	if r := c.runs[key]; r != nil && (uid == "" || r.uid == uid) {
		r.cancel()
		delete(c.runs, key)
	}
	delete(c.done, uid)
	delete(c.seen, uid)
}

// anchor is when a Fault's (or plan's) duration counts from: the API
// server's creation time has whole seconds, so a Fault seen within
// anchorWindow of it counts from when this node first saw it, else from
// its creation.
func (c *Controller) anchor(uid types.UID, created metav1.Time) metav1.Time {
	seen, ok := c.seen[uid]
	if !ok {
		seen = time.Now()
		c.seen[uid] = seen
	}
	if seen.Sub(created.Time) < anchorWindow {
		return metav1.NewTime(seen)
	}
	return created
}

// anchorWindow: a Fault's creation time is truncated to the second, and
// the watch brings it within milliseconds.
const anchorWindow = 2 * time.Second

// SyncPlan is a FaultPlan as the watch sees it now: each step is synced
// as a Fault of its namespace that starts at its offset (a step the fault
// model refuses fails in its own status, as a Fault would).
func (c *Controller) SyncPlan(p *kubefault.FaultPlan) {
	c.mu.Lock()
	p.CreationTimestamp = c.anchor(p.UID, p.CreationTimestamp)
	c.mu.Unlock()
	for i := range p.Spec.Steps {
		if f, err := p.StepFault(i); err == nil {
			c.Sync(f)
		}
	}
}

// DeletePlan is a FaultPlan gone: every step's faults here end at once.
func (c *Controller) DeletePlan(name string, uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, r := range c.runs {
		if strings.HasPrefix(string(r.uid), string(uid)+"/") {
			r.cancel()
			delete(c.runs, key)
			delete(c.done, r.uid)
		}
	}
	delete(c.seen, uid)
}

func nodeStatus(f *kubefault.Fault, node string) *kubefault.NodeStatus {
	for i := range f.Status.Nodes {
		if f.Status.Nodes[i].Node == node {
			return &f.Status.Nodes[i]
		}
	}
	return nil
}

// errRefused is a Fault this node will not apply; its message goes to
// the status.
var errRefused = errors.New("refused")

// report writes a Fault's status entry of this node and its events, each
// bounded in time and done even when the run's context has ended.
type report struct {
	c   *Controller
	f   *kubefault.Fault
	log *slog.Logger
	// events, when set, takes the events to record in order, so that
	// recording them never delays acting on the Fault.
	events chan<- func()
}

// eventQueue starts recording rep's events in the background, in order;
// the returned function waits for the last.
func (r *report) eventQueue() (wait func()) {
	q := make(chan func(), 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range q {
			ev()
		}
	}()
	r.events = q
	return func() { close(q); <-done }
}

func (r report) status(ctx context.Context, st *kubefault.NodeStatus) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	snap := *st
	snap.Targets = slices.Clone(st.Targets) // the targets go on changing
	if err := r.c.Cluster.ApplyStatus(ctx, r.f.Namespace, r.f.Name, snap); err != nil {
		r.log.Warn("write the Fault's status", "err", err)
	}
}

func (r report) event(ctx context.Context, on kubefault.Ref, warning bool, reason, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	record := func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := r.c.Cluster.Event(ctx, on, warning, reason, msg); err != nil {
			r.log.Warn("record an event", "reason", reason, "err", err)
		}
	}
	if r.events == nil {
		record()
		return
	}
	select {
	case r.events <- record:
	default:
		r.log.Warn("event dropped: too many queued", "reason", reason)
	}
}

// The engine's end reasons for kubefault's.
const (
	ReasonDaemonRestarted = engine.Reason(kubefault.EndDaemonRestarted)
	ReasonLeaseExpired    = engine.Reason(kubefault.EndLeaseExpired)
)

// endRestarted reports the faults of a Fault that this node had started
// before its faultlined restarted: they ended when it stopped (every hook
// is the process's own), and are not started again, so that an
// experiment never silently resumes after a gap.
func (c *Controller) endRestarted(ctx context.Context, f *kubefault.Fault, before *kubefault.NodeStatus) {
	rep := report{c: c, f: f, log: c.Logger.With("fault", f.Namespace+"/"+f.Name)}
	st := *before
	st.Targets = slices.Clone(before.Targets)
	now := metav1.Now()
	st.Phase, st.EndReason, st.EndTime = kubefault.PhaseEnded, string(ReasonDaemonRestarted), &now
	st.Message = "faultlined restarted mid-fault: its faults on this node ended when it stopped, and traffic has flowed unfaulted since"
	for i := range st.Targets {
		if t := &st.Targets[i]; t.State == "active" || t.State == "starting" {
			t.State, t.EndReason = "ended", string(ReasonDaemonRestarted)
		}
	}
	rep.status(ctx, &st)
	rep.event(ctx, kubefault.FaultRef(f), true, "Ended", "node %s: %s", c.Node, st.Message)
	rep.log.Info("Fault ended by a restart of faultlined")
}

// execute runs one Fault on this node from start to end.
func (c *Controller) execute(ctx context.Context, f *kubefault.Fault, r *run) {
	rep := report{c: c, f: f, log: c.Logger.With("fault", f.Namespace+"/"+f.Name)}
	defer rep.eventQueue()()
	st := kubefault.NodeStatus{Node: c.Node, Phase: kubefault.PhasePending}
	if wait := time.Until(f.CreationTimestamp.Time); wait > 0 { // a plan's later step
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	req, pods, err := c.plan(ctx, f)
	if err != nil {
		st.Phase, st.Message = kubefault.PhaseFailed, message(err)
		rep.log.Info("Fault refused", "reason", st.Message)
		rep.status(ctx, &st)
		rep.event(ctx, kubefault.FaultRef(f), true, "Refused", "node %s: %s", c.Node, st.Message)
		return
	}
	if len(pods) == 0 {
		return // nothing here: no entry, so the status lists only nodes with targets
	}
	expires := f.CreationTimestamp.Add(req.GetDuration().AsDuration())
	remaining := time.Until(expires).Truncate(time.Millisecond)
	if remaining < fault.MinDuration {
		return
	}
	if f.Spec.DryRun {
		st.Phase, st.Message = kubefault.PhaseDryRun, fmt.Sprintf("%d target(s) on this node; dry run: none touched", len(pods))
		for _, p := range pods {
			st.Targets = append(st.Targets, kubefault.TargetStatus{Pod: p.Name, State: "dry-run"})
		}
		rep.status(ctx, &st)
		return
	}

	if err := c.Journal.Begin(f.UID); err != nil {
		rep.log.Warn("journal the Fault: a restart before its status is written would start it again", "err", err)
	}
	started := c.startAll(ctx, f, req, pods, remaining, &st, rep.log)
	now := metav1.Now()
	st.StartTime = &now
	if len(started) == 0 {
		st.Phase, st.Message = kubefault.PhaseFailed, "no target could be faulted: see targets"
		rep.status(ctx, &st)
		return
	}
	st.Phase = kubefault.PhaseActive
	rep.status(ctx, &st)
	rep.log.Info("Fault active on this node", "targets", len(started), "remaining", remaining)
	kind := req.ProtoReflect().WhichOneof(req.ProtoReflect().Descriptor().Oneofs().ByName("fault")).Name()
	rep.event(ctx, kubefault.FaultRef(f), false, "Started", "node %s: %s fault on %d pod(s) for %s", c.Node, kind, len(started), remaining.Round(time.Second))
	for _, sf := range started {
		rep.event(ctx, kubefault.PodRef(pods[sf.at]), false, "FaultStarted", "Fault %s (%s, %s) started on this pod for %s: fault id %s",
			f.Name, kind, f.UID, remaining.Round(time.Second), st.Targets[sf.at].ID)
	}

	stop := c.await(ctx, started, r, func(asked string) {
		for _, sf := range started {
			st.Targets[sf.at].Counters = countersMap(nodeapi.StatusToProto(sf.Status()).GetCounters())
		}
		st.Refreshed = asked
		rep.status(ctx, &st)
	})
	ended := make([]engine.Status, len(started))
	var wg sync.WaitGroup
	for i, sf := range started { // every target at once
		wg.Add(1)
		go func() {
			defer wg.Done()
			if stop == "" {
				<-sf.Done()
				ended[i] = sf.Status()
			} else {
				ended[i] = sf.Stop(stop)
			}
		}()
	}
	wg.Wait()
	for i, sf := range started {
		fs := ended[i]
		ts := &st.Targets[sf.at]
		c.finish(ts, fs)
		st.EndReason = string(fs.EndReason)
		why := ts.EndReason
		if fs.EndReason == engine.ReasonRevoked {
			why = "Fault deleted"
		}
		rep.event(ctx, kubefault.PodRef(pods[sf.at]), false, "FaultEnded", "Fault %s ended on this pod (%s): %s", f.Name, why, countersText(ts.Counters))
	}
	if ctx.Err() != nil {
		return // the Fault is gone (or the daemon is stopping): no status to write
	}
	end := metav1.Now()
	st.Phase, st.EndTime = kubefault.PhaseEnded, &end
	rep.status(ctx, &st)
	rep.event(ctx, kubefault.FaultRef(f), false, "Ended", "node %s: ended (%s) on %d pod(s)", c.Node, st.EndReason, len(started))
	rep.log.Info("Fault ended on this node", "reason", st.EndReason)
}

// await waits for the end of a run's faults: "" when they all ended on
// their own, else why the rest must stop (the Fault deleted, the daemon
// stopping, the lease lapsed). It calls refresh for each request of live
// counters.
func (c *Controller) await(ctx context.Context, started []startedFault, r *run, refresh func(asked string)) engine.Reason {
	var lapse <-chan time.Time
	if r.lease > 0 {
		t := time.NewTimer(r.lease)
		defer t.Stop()
		lapse = t.C
		go func() { // renewals reset the timer until the run ends
			for {
				select {
				case <-r.renewed:
					t.Reset(r.lease)
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	for _, sf := range started {
		for ended := false; !ended; {
			select {
			case <-sf.Done():
				ended = true
			case asked := <-r.refresh:
				refresh(asked)
			case <-ctx.Done():
				if c.ctx.Err() != nil {
					return engine.ReasonShutdown
				}
				return engine.ReasonRevoked // the Fault was deleted
			case <-lapse:
				return ReasonLeaseExpired
			}
		}
	}
	return ""
}

// startedFault is a target's running fault and its place in the status.
type startedFault struct {
	nodeapi.Fault
	at int
}

func (c *Controller) finish(ts *kubefault.TargetStatus, fs engine.Status) {
	ts.State, ts.EndReason = "ended", string(fs.EndReason)
	ts.Counters = countersMap(nodeapi.StatusToProto(fs).GetCounters())
}

// startAll starts the fault on every pod (at most 8 at once) and records
// each target's state.
func (c *Controller) startAll(ctx context.Context, f *kubefault.Fault, req *pb.InjectRequest, pods []*corev1.Pod, remaining time.Duration, st *kubefault.NodeStatus, log *slog.Logger) []startedFault {
	st.Targets = make([]kubefault.TargetStatus, len(pods))
	out := make([]nodeapi.Fault, len(pods))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, p := range pods {
		st.Targets[i] = kubefault.TargetStatus{Pod: p.Name, State: "starting", ID: faultID(f, p)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			sf, err := c.startOne(ctx, f, req, p, remaining, st.Targets[i].ID)
			if err != nil {
				st.Targets[i].State, st.Targets[i].Message = "failed", message(err)
				log.Info("target not faulted", "pod", p.Name, "err", err)
				return
			}
			st.Targets[i].State = "active"
			out[i] = sf
		}()
	}
	wg.Wait()
	var started []startedFault
	for i, sf := range out {
		if sf != nil {
			started = append(started, startedFault{sf, i})
		}
	}
	return started
}

func (c *Controller) startOne(ctx context.Context, f *kubefault.Fault, req *pb.InjectRequest, p *corev1.Pod, remaining time.Duration, id string) (nodeapi.Fault, error) {
	r := proto.Clone(req).(*pb.InjectRequest)
	r.Id, r.Duration = id, durationpb.New(remaining)
	if f.Spec.PortName != "" {
		port, ok := namedPort(p, f.Spec.PortName)
		if !ok {
			return nil, fmt.Errorf("pod %s has no container port named %q", p.Name, f.Spec.PortName)
		}
		setPort(r, port)
	}
	spec, err := fault.FromProto(r) // a fresh fault per target: rules keep state
	if err != nil {
		return nil, err
	}
	t, err := c.Targets.ResolveTarget(ctx, engine.Target{Pod: engine.PodRef{Namespace: p.Namespace, Name: p.Name, UID: string(p.UID)}})
	if err != nil {
		return nil, err
	}
	return c.Faults.Start(ctx, t, spec)
}

// plan checks a Fault against the fault model and the guardrails and
// returns its request and the pods of this node it targets.
func (c *Controller) plan(ctx context.Context, f *kubefault.Fault) (*pb.InjectRequest, []*corev1.Pod, error) {
	req, _, err := f.Spec.Request()
	if err != nil {
		return nil, nil, err
	}
	if slices.Contains(c.Protected, f.Namespace) {
		return nil, nil, fmt.Errorf("%w: namespace %s is never faulted (kube-system and faultline's own namespace are protected unless faultlined runs with --allow-protected-namespaces)", errRefused, f.Namespace)
	}
	nsLabels, err := c.Cluster.NamespaceLabels(ctx, f.Namespace)
	if err != nil {
		return nil, nil, fmt.Errorf("read namespace %s: %w", f.Namespace, err)
	}
	if nsLabels[kubefault.OptInLabel] != kubefault.OptInValue {
		return nil, nil, fmt.Errorf("%w: namespace %s has not opted in to faults: label it %s=%s (kubectl label namespace %s %s=%s)",
			errRefused, f.Namespace, kubefault.OptInLabel, kubefault.OptInValue, f.Namespace, kubefault.OptInLabel, kubefault.OptInValue)
	}
	var sel labels.Selector
	if f.Spec.Service != "" {
		m, err := c.Cluster.ServiceSelector(ctx, f.Namespace, f.Spec.Service)
		if err != nil {
			return nil, nil, fmt.Errorf("spec.service %s: %w", f.Spec.Service, err)
		}
		if len(m) == 0 {
			return nil, nil, fmt.Errorf("%w: spec.service %s has no pod selector", errRefused, f.Spec.Service)
		}
		sel = labels.SelectorFromSet(m)
	} else if sel, err = metav1.LabelSelectorAsSelector(f.Spec.Selector); err != nil {
		return nil, nil, fault.Invalid("spec.selector: %v", err)
	}
	limit := c.TargetLimit
	if f.Spec.MaxTargets > 0 {
		limit = f.Spec.MaxTargets
	}
	listLimit := limit
	if f.Spec.Count != "" {
		listLimit = 0 // the share is of all of them
	}
	all, err := c.Cluster.ListPods(ctx, f.Namespace, sel, listLimit)
	if err != nil {
		return nil, nil, fmt.Errorf("list the target pods: %w", err)
	}
	chosen, err := choose(f, all)
	if err != nil {
		return nil, nil, err
	}
	if len(chosen) > limit {
		return nil, nil, fmt.Errorf("%w: more than %d pods match (%d or more): set spec.maxTargets to fault that many", errRefused, limit, len(chosen))
	}
	var pods []*corev1.Pod
	for _, p := range c.Pods.List(f.Namespace, sel) {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && chosen[p.UID] {
			pods = append(pods, p)
		}
	}
	slices.SortFunc(pods, func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return req, pods, nil
}

// choose picks the Fault's targets among the matching pods of the
// cluster: all, or spec.count of them, ranked by a hash of the Fault's
// UID and the pod's so that every node picks the same ones.
func choose(f *kubefault.Fault, all []kubefault.PodID) (map[types.UID]bool, error) {
	n := len(all)
	if f.Spec.Count != "" {
		var err error
		if n, err = targets.SampleSize(f.Spec.Count, len(all)); err != nil {
			return nil, fmt.Errorf("%w: spec.count: cannot fault %s of the %d matching pods", errRefused, f.Spec.Count, len(all))
		}
		rank := func(p kubefault.PodID) string {
			h := sha256.Sum256([]byte(string(f.UID) + "/" + string(p.UID)))
			return string(h[:])
		}
		all = slices.Clone(all)
		slices.SortFunc(all, func(a, b kubefault.PodID) int { return strings.Compare(rank(a), rank(b)) })
	}
	chosen := make(map[types.UID]bool, n)
	for _, p := range all[:n] {
		chosen[p.UID] = true
	}
	return chosen, nil
}

// message is an error for a status: without the class prefix of the
// errdefs errors ("failed precondition: ").
func message(err error) string {
	msg := err.Error()
	for _, class := range []error{errdefs.ErrFailedPrecondition, errdefs.ErrInvalidArgument, errdefs.ErrNotFound, errdefs.ErrUnavailable, errdefs.ErrPermissionDenied} {
		msg = strings.TrimPrefix(msg, class.Error()+": ")
	}
	return msg
}

// faultID names a target's fault on the node: the Fault's name and a hash
// of its UID and the pod's.
func faultID(f *kubefault.Fault, p *corev1.Pod) string {
	h := sha256.Sum256([]byte(string(f.UID) + "/" + string(p.UID)))
	name := strings.ReplaceAll(f.Name, "/", ".") // a plan step: PLAN.STEP
	if len(name) > 40 {
		name = name[:40]
	}
	return strings.Trim(name, "-.") + "-" + hex.EncodeToString(h[:4])
}

func namedPort(p *corev1.Pod, name string) (uint32, bool) {
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == name {
				return uint32(port.ContainerPort), true
			}
		}
	}
	return 0, false
}

// setPort sets the port of the request's fault, whatever its kind.
func setPort(r *pb.InjectRequest, port uint32) {
	m := r.ProtoReflect()
	oneof := m.Descriptor().Oneofs().ByName("fault")
	fd := m.WhichOneof(oneof)
	if fd == nil {
		return
	}
	fm := m.Mutable(fd).Message()
	if pf := fm.Descriptor().Fields().ByName("port"); pf != nil {
		fm.Set(pf, protoreflect.ValueOfUint32(port))
	}
}

// countersMap keeps a Counters message's non-zero fields, by JSON name.
func countersMap(c *pb.Counters) map[string]uint64 {
	out := map[string]uint64{}
	c.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		out[fd.JSONName()] = v.Uint()
		return true
	})
	return out
}

// countersText is a target's counters for an event: "requests=12 errored=12".
func countersText(c map[string]uint64) string {
	if len(c) == 0 {
		return "nothing counted"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(c)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, c[k]))
	}
	return strings.Join(parts, " ")
}
