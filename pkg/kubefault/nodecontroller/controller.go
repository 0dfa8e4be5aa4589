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

	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/fault"
	"github.com/faultline-dev/faultline/pkg/kubefault"
	"github.com/faultline-dev/faultline/pkg/nodeapi"
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
	Logger      *slog.Logger

	mu   sync.Mutex
	ctx  context.Context
	runs map[string]*run // namespace/name → the Fault's run on this node
	wg   sync.WaitGroup
}

type run struct {
	uid    types.UID
	cancel context.CancelFunc
}

// Start sets the lifetime of the controller's faults: when ctx ends they
// end, and their status stays as it was, for a restarted daemon to pick
// them up.
func (c *Controller) Start(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ctx, c.runs = ctx, map[string]*run{}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.TargetLimit == 0 {
		c.TargetLimit = DefaultTargetLimit
	}
}

// Wait returns once every run has ended (after ctx of Start ended).
func (c *Controller) Wait() { c.wg.Wait() }

// Sync is a Fault as the watch sees it now. A Fault's spec never changes,
// so a Fault already running here is left alone.
func (c *Controller) Sync(f *kubefault.Fault) {
	key := f.Namespace + "/" + f.Name
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil {
		return
	}
	if r := c.runs[key]; r != nil {
		if r.uid == f.UID {
			return
		}
		r.cancel() // the name now holds another Fault
	}
	mine := nodeStatus(f, c.Node)
	if f.DeletionTimestamp != nil || mine != nil && mine.Phase != kubefault.PhaseActive && mine.Phase != kubefault.PhasePending {
		return // done here before
	}
	ctx, cancel := context.WithCancel(c.ctx)
	r := &run{uid: f.UID, cancel: cancel}
	c.runs[key] = r
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.execute(ctx, f, mine)
		c.mu.Lock()
		if c.runs[key] == r {
			delete(c.runs, key)
		}
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

// execute runs one Fault on this node from start to end.
func (c *Controller) execute(ctx context.Context, f *kubefault.Fault, before *kubefault.NodeStatus) {
	log := c.Logger.With("fault", f.Namespace+"/"+f.Name)
	st := kubefault.NodeStatus{Node: c.Node, Phase: kubefault.PhasePending}
	write := func() {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		snap := st
		snap.Targets = slices.Clone(st.Targets) // the targets go on changing
		if err := c.Cluster.ApplyStatus(wctx, f.Namespace, f.Name, snap); err != nil {
			log.Warn("write the Fault's status", "err", err)
		}
	}
	event := func(on kubefault.Ref, warning bool, reason, format string, args ...any) {
		ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := c.Cluster.Event(ectx, on, warning, reason, fmt.Sprintf(format, args...)); err != nil {
			log.Warn("record an event", "reason", reason, "err", err)
		}
	}
	req, pods, err := c.plan(ctx, f)
	if err != nil {
		st.Phase, st.Message = kubefault.PhaseFailed, strings.TrimPrefix(err.Error(), "invalid argument: ")
		log.Info("Fault refused", "reason", st.Message)
		write()
		event(kubefault.FaultRef(f), true, "Refused", "node %s: %s", c.Node, st.Message)
		return
	}
	if len(pods) == 0 {
		if before != nil {
			st.Phase, st.EndReason, st.Message = kubefault.PhaseEnded, string(engine.ReasonTargetDeleted), "no pod of this node matches any more"
			write()
		}
		return
	}
	expires := f.CreationTimestamp.Add(req.GetDuration().AsDuration())
	remaining := time.Until(expires).Truncate(time.Millisecond)
	if remaining < fault.MinDuration {
		if before != nil {
			st.Phase, st.EndReason = kubefault.PhaseEnded, string(engine.ReasonExpired)
			st.StartTime, st.EndTime = before.StartTime, &metav1.Time{Time: expires}
			write()
		}
		return
	}
	if f.Spec.DryRun {
		st.Phase, st.Message = kubefault.PhaseDryRun, fmt.Sprintf("%d target(s) on this node; dry run: none touched", len(pods))
		for _, p := range pods {
			st.Targets = append(st.Targets, kubefault.TargetStatus{Pod: p.Name, State: "dry-run"})
		}
		write()
		return
	}

	started := c.startAll(ctx, f, req, pods, remaining, &st, log)
	now := metav1.Now()
	st.StartTime = &now
	switch {
	case len(started) == 0:
		st.Phase, st.Message = kubefault.PhaseFailed, "no target could be faulted: see targets"
		write()
		return
	case before != nil:
		st.Message = fmt.Sprintf("faultlined restarted: the fault was picked up again for the %s left", remaining.Round(time.Second))
	}
	st.Phase = kubefault.PhaseActive
	write()
	log.Info("Fault active on this node", "targets", len(started), "remaining", remaining)
	kind := req.ProtoReflect().WhichOneof(req.ProtoReflect().Descriptor().Oneofs().ByName("fault")).Name()
	event(kubefault.FaultRef(f), false, "Started", "node %s: %s fault on %d pod(s) for %s", c.Node, kind, len(started), remaining.Round(time.Second))
	for _, sf := range started {
		event(kubefault.PodRef(pods[sf.at]), false, "FaultStarted", "Fault %s (%s, %s) started on this pod for %s: fault id %s",
			f.Name, kind, f.UID, remaining.Round(time.Second), st.Targets[sf.at].ID)
	}

	deleted := false
	for _, sf := range started {
		var fs engine.Status
		select {
		case <-sf.Done():
			fs = sf.Status()
		case <-ctx.Done():
			deleted = true
			reason := engine.ReasonRevoked // the kubefault.Fault was deleted
			if c.ctx.Err() != nil {
				reason = engine.ReasonShutdown
			}
			fs = sf.Stop(reason)
		}
		ts := &st.Targets[sf.at]
		c.finish(ts, fs)
		st.EndReason = string(fs.EndReason)
		why := ts.EndReason
		if fs.EndReason == engine.ReasonRevoked {
			why = "Fault deleted"
		}
		event(kubefault.PodRef(pods[sf.at]), false, "FaultEnded", "Fault %s ended on this pod (%s): %s", f.Name, why, countersText(ts.Counters))
	}
	if deleted {
		return // the Fault is gone (or the daemon is stopping): no status to write
	}
	end := metav1.Now()
	st.Phase, st.EndTime = kubefault.PhaseEnded, &end
	write()
	event(kubefault.FaultRef(f), false, "Ended", "node %s: ended (%s) on %d pod(s)", c.Node, st.EndReason, len(started))
	log.Info("Fault ended on this node", "reason", st.EndReason)
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
				st.Targets[i].State, st.Targets[i].Message = "failed", err.Error()
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
		return nil, nil, fmt.Errorf("%w: namespace %s is never faulted (kube-system and faultline's own namespace are protected)", errRefused, f.Namespace)
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
	if sel.Empty() {
		return nil, nil, fault.Invalid("spec.selector selects every pod of the namespace: give labels")
	}
	limit := c.TargetLimit
	if f.Spec.MaxTargets > 0 {
		limit = f.Spec.MaxTargets
	}
	n, err := c.Cluster.CountPods(ctx, f.Namespace, sel, limit)
	if err != nil {
		return nil, nil, fmt.Errorf("count the target pods: %w", err)
	}
	if n > limit {
		return nil, nil, fmt.Errorf("%w: more than %d pods match (%d or more): set spec.maxTargets to fault that many", errRefused, limit, n)
	}
	var pods []*corev1.Pod
	for _, p := range c.Pods.List(f.Namespace, sel) {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			pods = append(pods, p)
		}
	}
	slices.SortFunc(pods, func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return req, pods, nil
}

// faultID names a target's fault on the node: the Fault's name and a hash
// of its UID and the pod's.
func faultID(f *kubefault.Fault, p *corev1.Pod) string {
	h := sha256.Sum256([]byte(string(f.UID) + "/" + string(p.UID)))
	name := f.Name
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
