package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/faultline-dev/faultline/pkg/kubefault"
	"github.com/faultline-dev/faultline/pkg/targets"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// FaultObjects are the Fault objects of a cluster (kubefault.API). In
// Kubernetes mode each inject call is one Fault the gateway holds: the
// caller's RBAC on Faults in the target namespace decides, and the nodes'
// faultlined act on it; nothing reaches a node directly.
type FaultObjects interface {
	// Hold creates a leased Fault and renews its lease until released.
	Hold(ctx context.Context, f *kubefault.Fault) (*kubefault.Held[kubefault.Fault], error)
	// List lists the Faults of a namespace ("": every namespace).
	List(ctx context.Context, namespace string) ([]kubefault.Fault, error)
	// Refresh asks the nodes of an active Fault for their live counters
	// and returns it with their answers (or as it is after timeout).
	Refresh(ctx context.Context, f *kubefault.Fault, timeout time.Duration) (*kubefault.Fault, error)
	// DeleteAll deletes every Fault of every namespace and returns them
	// as namespace/name.
	DeleteAll(ctx context.Context) ([]string, error)
}

// Defaults of the gateway's Faults.
const (
	// DefaultLease: when the gateway dies its faults end within this (plus
	// the nodes' reaction); it is renewed every quarter of it.
	DefaultLease = time.Second
	// reportTimeout bounds the wait for every node with targets to take a
	// Fault up, and for their last report after its end.
	reportTimeout = 15 * time.Second
	// refreshTimeout bounds the wait for the nodes' live counters.
	refreshTimeout = 2 * time.Second
)

// ManagedBy labels the Faults the gateway creates.
const ManagedBy = "faultline-gateway"

// objectSpec is the Fault of an inject call: the set's pods or service,
// and the one fault every target's request carries.
func (s *Server) objectSpec(set targets.Set, reqs []*pb.InjectRequest, d time.Duration) (kubefault.Spec, error) {
	strip := func(r *pb.InjectRequest) *pb.InjectRequest {
		c := proto.Clone(r).(*pb.InjectRequest)
		c.Id, c.Target, c.Duration = "", nil, nil
		return c
	}
	first := strip(reqs[0])
	for i, r := range reqs[1:] {
		if !proto.Equal(strip(r), first) {
			return kubefault.Spec{}, fmt.Errorf("%w: the targets' faults differ (target %d's port is not the first's): name a port number", errdefs.ErrFailedPrecondition, i+1)
		}
	}
	spec := kubefault.Spec{Duration: d.String(), Lease: s.lease().String(), MaxTargets: s.FaultTargetLimit}
	if err := spec.SetFault(first); err != nil {
		return spec, err
	}
	if set.Service != nil {
		spec.Service = set.Service.Name
		return spec, nil
	}
	sel := &metav1.LabelSelector{MatchLabels: set.Pods.Select}
	for _, k := range slices.Sorted(maps.Keys(set.Pods.Exclude)) {
		sel.MatchExpressions = append(sel.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpNotIn, Values: []string{set.Pods.Exclude[k]}})
	}
	spec.Selector = sel
	return spec, nil
}

func (s *Server) lease() time.Duration {
	if s.Lease > 0 {
		return s.Lease
	}
	return DefaultLease
}

// injectObjects runs an inject call as a Fault that the gateway holds: it
// creates it, waits for every node with targets to report it active, then
// ended, and returns each target's counters. It deletes the Fault when it
// returns, which ends its faults (a cancelled call, a failed target); if
// the gateway dies, the lease lapses and the nodes end them.
func (s *Server) injectObjects(ctx context.Context, set targets.Set, res targets.Resolution, infos []*pb.TargetInfo, reqs []*pb.InjectRequest, requests bool) (*pb.GatewayInjectResponse, error) {
	d := reqs[0].GetDuration().AsDuration()
	spec, err := s.objectSpec(set, reqs, d)
	if err != nil {
		return nil, err
	}
	m := reqs[0].ProtoReflect()
	kind := string(m.WhichOneof(m.Descriptor().Oneofs().ByName("fault")).Name())
	f := &kubefault.Fault{ObjectMeta: metav1.ObjectMeta{GenerateName: "faultline-" + kind + "-", Namespace: set.Namespace(),
		Labels: map[string]string{"app.kubernetes.io/managed-by": ManagedBy}}, Spec: spec}
	asked := time.Now()
	h, err := s.Objects.Hold(ctx, f)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := h.Release(); err != nil {
			s.log().Warn("delete the gateway's Fault", "fault", f.Namespace+"/"+h.Object.Name, "err", err)
		}
	}()
	name := f.Namespace + "/" + h.Object.Name
	s.log().Info("Fault created", "fault", name, "targets", len(infos))

	var nodes []string
	for _, ti := range infos {
		if !slices.Contains(nodes, ti.GetNode()) {
			nodes = append(nodes, ti.GetNode())
		}
	}
	slices.Sort(nodes)
	taken := time.NewTimer(reportTimeout)
	defer taken.Stop()
	ended := time.NewTimer(d + reportTimeout)
	defer ended.Stop()
	active := false
	defer func() {
		if active && s.Metrics != nil {
			for range infos {
				s.Metrics.Ended()
			}
		}
	}()
	last := h.Object
	for {
		select {
		case f, ok := <-h.Updates:
			if !ok {
				return nil, fmt.Errorf("%w: Fault %s was deleted (faultline revoke --all, kubectl delete): its fault ended on every target", errdefs.ErrAborted, name)
			}
			last = f
		case <-taken.C:
			if missing := unreported(last, nodes); len(missing) > 0 {
				return nil, fmt.Errorf("%w: Fault %s: node(s) %s did not take it up within %s: is faultlined running there, with --faults?",
					errdefs.ErrUnavailable, name, strings.Join(missing, ", "), reportTimeout)
			}
			continue
		case <-ended.C:
			return nil, fmt.Errorf("%w: Fault %s: not every node reported its end within %s of it: %s", errdefs.ErrUnavailable, name, reportTimeout, phases(last, nodes))
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		done, err := progress(last, nodes, name)
		if err != nil {
			return nil, err
		}
		if !active && unreported(last, nodes) == nil && !pending(last, nodes) {
			active = true
			if s.Metrics != nil {
				for range infos {
					s.Metrics.Active(time.Since(asked))
				}
			}
			s.log().Info("Fault active", "fault", name, "took", time.Since(asked))
		}
		if done {
			break
		}
	}
	resp := &pb.GatewayInjectResponse{Total: &pb.Counters{}, Skipped: skippedToProto(res.Skipped), Notes: res.Notes}
	for _, ti := range infos {
		st := targetResult(last, kind, ti)
		resp.Targets = append(resp.Targets, &pb.TargetResult{Target: ti, Fault: st})
		addCounters(resp.Total, st.GetCounters())
	}
	resp.NoRequests = requests && resp.Total.GetRequests() == 0
	s.log().Info("fault ended", "fault", name, "targets", len(infos), "requests", resp.Total.GetRequests(), "no_requests", resp.NoRequests)
	return resp, nil
}

func entry(f *kubefault.Fault, node string) *kubefault.NodeStatus {
	for i := range f.Status.Nodes {
		if f.Status.Nodes[i].Node == node {
			return &f.Status.Nodes[i]
		}
	}
	return nil
}

func unreported(f *kubefault.Fault, nodes []string) []string {
	var out []string
	for _, n := range nodes {
		if entry(f, n) == nil {
			out = append(out, n)
		}
	}
	return out
}

func pending(f *kubefault.Fault, nodes []string) bool {
	return slices.ContainsFunc(nodes, func(n string) bool { e := entry(f, n); return e != nil && e.Phase == kubefault.PhasePending })
}

// progress reports whether every node has ended the Fault, or the first
// refusal or failed target as an error.
func progress(f *kubefault.Fault, nodes []string, name string) (bool, error) {
	done := true
	for _, n := range nodes {
		e := entry(f, n)
		if e == nil {
			done = false
			continue
		}
		for _, t := range e.Targets {
			if t.State == "failed" {
				return false, fmt.Errorf("%w: target %s/%s on node %s: %s", errdefs.ErrFailedPrecondition, f.Namespace, t.Pod, n, t.Message)
			}
		}
		switch {
		case e.Phase == kubefault.PhaseFailed:
			return false, fmt.Errorf("%w: Fault %s refused on node %s: %s", errdefs.ErrFailedPrecondition, name, n, strings.TrimPrefix(e.Message, "refused: "))
		case e.EndReason == kubefault.EndDaemonRestarted:
			return false, fmt.Errorf("%w: Fault %s on node %s: %s", errdefs.ErrUnavailable, name, n, e.Message)
		}
		if e.Phase != kubefault.PhaseEnded && e.Phase != kubefault.PhaseDryRun {
			done = false
		}
	}
	return done, nil
}

func phases(f *kubefault.Fault, nodes []string) string {
	var parts []string
	for _, n := range nodes {
		phase := "no report"
		if e := entry(f, n); e != nil {
			phase = e.Phase
		}
		parts = append(parts, n+" "+phase)
	}
	return strings.Join(parts, ", ")
}

// targetResult is a target's fault as its node reported it.
func targetResult(f *kubefault.Fault, kind string, ti *pb.TargetInfo) *pb.FaultStatus {
	fs := &pb.FaultStatus{Kind: kind, Target: ti.GetTarget(), Counters: &pb.Counters{}, State: pb.FaultState_FAULT_STATE_ENDED}
	e := entry(f, ti.GetNode())
	if e == nil {
		return fs
	}
	if e.StartTime != nil {
		fs.Started = timestamppb.New(e.StartTime.Time)
	}
	if d, err := time.ParseDuration(f.Spec.Duration); err == nil {
		fs.Expires = timestamppb.New(f.CreationTimestamp.Add(d))
	}
	if e.EndTime != nil {
		fs.Expires = timestamppb.New(e.EndTime.Time)
	}
	switch port := f.Spec.Fault()["port"].(type) { // JSON's number, or the API server's
	case float64:
		fs.Port = uint32(port)
	case int64:
		fs.Port = uint32(port)
	}
	for _, t := range e.Targets {
		if t.Pod != ti.GetName() {
			continue
		}
		fs.Id, fs.EndReason = t.ID, t.EndReason
		fs.Counters = countersFromMap(t.Counters)
		switch t.State {
		case "active":
			fs.State = pb.FaultState_FAULT_STATE_ACTIVE
		case "starting":
			fs.State = pb.FaultState_FAULT_STATE_STARTING
		}
	}
	return fs
}

// countersFromMap reads the counters of a Fault's status (JSON names).
func countersFromMap(m map[string]uint64) *pb.Counters {
	c := &pb.Counters{}
	if b, err := json.Marshal(m); err == nil {
		_ = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(b, c)
	}
	return c
}

// statusObjects is Status in Kubernetes mode: the targets of the Faults
// running now, with the counters their nodes last reported.
func (s *Server) statusObjects(ctx context.Context, req *pb.StatusRequest) (*pb.StatusResponse, error) {
	resp := &pb.StatusResponse{Total: &pb.Counters{}}
	namespace := ""
	var want map[string]*pb.TargetInfo // namespace/pod → target; nil: all
	if req.GetTargets() != nil {
		res, err := s.resolve(ctx, req.GetTargets())
		if err != nil {
			return nil, err
		}
		resp.Notes = res.Notes
		want = map[string]*pb.TargetInfo{}
		for _, t := range res.Targets {
			want[t.Ref()] = targetToProto(t)
			namespace = t.Namespace
		}
	}
	faults, err := s.Objects.List(ctx, namespace)
	if err != nil {
		return nil, err
	}
	for i := range faults {
		f := &faults[i]
		if !slices.ContainsFunc(f.Status.Nodes, func(n kubefault.NodeStatus) bool { return n.Phase == kubefault.PhaseActive }) {
			continue
		}
		if g, err := s.Objects.Refresh(ctx, f, refreshTimeout); err != nil {
			resp.Unreachable = append(resp.Unreachable, fmt.Sprintf("Fault %s/%s: %s", f.Namespace, f.Name, errorMessage(err)))
		} else {
			f = g
		}
		kind := f.Spec.Kind()
		for _, e := range f.Status.Nodes {
			for _, t := range e.Targets {
				if t.State != "active" && t.State != "starting" {
					continue
				}
				ti := &pb.TargetInfo{Name: t.Pod, Namespace: f.Namespace, Node: e.Node,
					Target: &pb.Target{Kind: &pb.Target_Pod{Pod: &pb.PodRef{Namespace: f.Namespace, Name: t.Pod}}}}
				if want != nil {
					if ti = want[f.Namespace+"/"+t.Pod]; ti == nil {
						continue
					}
				}
				fs := targetResult(f, kind, ti)
				resp.Faults = append(resp.Faults, &pb.TargetResult{Target: ti, Fault: fs})
				addCounters(resp.Total, fs.GetCounters())
			}
		}
	}
	return resp, nil
}
