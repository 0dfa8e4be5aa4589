package gateway

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/faultline-dev/faultline/pkg/kubefault"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// fakeObjects is FaultObjects on no API server: each held Fault is played
// by nodes, a function that returns the status entries of its nodes at a
// time since creation (nil: no change).
type fakeObjects struct {
	nodes func(f *kubefault.Fault, since time.Duration) []kubefault.NodeStatus

	mu       sync.Mutex
	held     []*kubefault.Fault
	released int
	deleted  []string
	err      error
}

func (o *fakeObjects) Hold(ctx context.Context, f *kubefault.Fault) (*kubefault.Held[kubefault.Fault], error) {
	if o.err != nil {
		return nil, o.err
	}
	c := *f
	f = &c
	f.Name, f.UID, f.CreationTimestamp = f.GenerateName+"x1", types.UID("uid-1"), metav1.Now()
	o.mu.Lock()
	o.held = append(o.held, f)
	o.mu.Unlock()
	updates := make(chan *kubefault.Fault)
	stop := make(chan struct{})
	go func() {
		start := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if st := o.nodes(f, time.Since(start)); st != nil {
				g := *f
				g.Status.Nodes = st
				select {
				case updates <- &g:
				case <-stop:
					return
				}
			}
		}
	}()
	return kubefault.NewHeld(f, updates, func() error {
		close(stop)
		o.mu.Lock()
		defer o.mu.Unlock()
		o.released++
		return nil
	}), nil
}

func (o *fakeObjects) List(context.Context, string) ([]kubefault.Fault, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []kubefault.Fault
	for _, f := range o.held {
		g := *f
		g.Status.Nodes = o.nodes(f, 50*time.Millisecond)
		out = append(out, g)
	}
	return out, nil
}

func (o *fakeObjects) Refresh(_ context.Context, f *kubefault.Fault, _ time.Duration) (*kubefault.Fault, error) {
	return f, nil
}

func (o *fakeObjects) DeleteAll(context.Context) ([]string, error) { return o.deleted, o.err }

// playNodes: each node reports its targets active after 30 ms, and ended
// with requests=2 each after d.
func playNodes(d time.Duration, pods map[string][]string) func(*kubefault.Fault, time.Duration) []kubefault.NodeStatus {
	return func(_ *kubefault.Fault, since time.Duration) []kubefault.NodeStatus {
		if since < 30*time.Millisecond {
			return nil
		}
		var out []kubefault.NodeStatus
		for node, names := range pods {
			e := kubefault.NodeStatus{Node: node, Phase: kubefault.PhaseActive}
			for _, p := range names {
				ts := kubefault.TargetStatus{Pod: p, State: "active", ID: p + "-id"}
				if since >= d {
					ts.State, ts.EndReason, ts.Counters = "ended", "expired", map[string]uint64{"requests": 2, "errored": 2}
				}
				e.Targets = append(e.Targets, ts)
			}
			if since >= d {
				e.Phase, e.EndReason = kubefault.PhaseEnded, "expired"
			}
			out = append(out, e)
		}
		return out
	}
}

// TestObjectsInject: an inject call in Kubernetes mode is one leased
// Fault of the set's namespace with the call's fault; the nodes' reports
// give each target's counters, and the Fault is deleted at the end.
func TestObjectsInject(t *testing.T) {
	obj := &fakeObjects{nodes: playNodes(300*time.Millisecond, map[string][]string{"n1": {"a"}, "n2": {"b", "c"}})}
	s := &Server{Source: staticSource{target("a", "n1"), target("b", "n2"), target("c", "n2")}, Objects: obj, FaultTargetLimit: 40}
	req := httpRequest(time.Second, map[string]string{"app": "web"})
	req.GetTargets().GetPods().Exclude = &pb.LabelSet{Labels: map[string]string{"tier": "canary"}}
	resp, err := s.InjectHTTP(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetTargets()) != 3 || resp.GetTotal().GetRequests() != 6 || resp.GetTotal().GetErrored() != 6 ||
		resp.GetTargets()[2].GetFault().GetId() != "c-id" || resp.GetTargets()[2].GetFault().GetEndReason() != "expired" {
		t.Errorf("response %v", resp)
	}
	f := obj.held[0]
	sel := f.Spec.Selector
	if f.Namespace != "shop" || f.GenerateName != "faultline-http-" || f.Spec.Lease != "1s" || f.Spec.Duration != "1s" || f.Spec.MaxTargets != 40 ||
		sel.MatchLabels["app"] != "web" || len(sel.MatchExpressions) != 1 || sel.MatchExpressions[0].Key != "tier" || sel.MatchExpressions[0].Operator != metav1.LabelSelectorOpNotIn ||
		f.Spec.HTTP["port"] != float64(8080) || f.Spec.HTTP["errorCode"] != float64(503) {
		t.Errorf("Fault %+v", f)
	}
	if obj.released != 1 {
		t.Errorf("released %d times", obj.released)
	}
}

// TestObjectsRefused: a node's refusal fails the call with its message
// (and the Fault is deleted, ending it on the other nodes).
func TestObjectsRefused(t *testing.T) {
	obj := &fakeObjects{nodes: func(*kubefault.Fault, time.Duration) []kubefault.NodeStatus {
		return []kubefault.NodeStatus{{Node: "n1", Phase: kubefault.PhaseActive}, {Node: "n2", Phase: kubefault.PhaseFailed,
			Message: "refused: namespace shop has not opted in to faults: label it faultline.dev/faults=enabled"}}
	}}
	s := &Server{Source: staticSource{target("a", "n1"), target("b", "n2")}, Objects: obj}
	_, err := s.InjectHTTP(context.Background(), httpRequest(time.Minute, map[string]string{"app": "web"}))
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "refused on node n2: namespace shop has not opted in to faults: label it faultline.dev/faults=enabled") {
		t.Errorf("error %v", err)
	}
	if obj.released != 1 {
		t.Errorf("released %d times", obj.released)
	}
}

// TestObjectsCancel: the caller going away deletes the Fault at once.
func TestObjectsCancel(t *testing.T) {
	obj := &fakeObjects{nodes: playNodes(time.Minute, map[string][]string{"n1": {"a"}})}
	s := &Server{Source: staticSource{target("a", "n1")}, Objects: obj}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := s.InjectHTTP(ctx, httpRequest(time.Minute, map[string]string{"app": "web"}))
	if !errors.Is(err, context.DeadlineExceeded) || obj.released != 1 {
		t.Errorf("error %v, released %d", err, obj.released)
	}
	st, err := s.Status(context.Background(), &pb.StatusRequest{})
	if err != nil || len(st.GetFaults()) != 1 || st.GetFaults()[0].GetTarget().GetNode() != "n1" || st.GetFaults()[0].GetFault().GetId() != "a-id" {
		t.Errorf("status %v, %v", st, err)
	}
}

// TestObjectsCreateRefused: RBAC's refusal is the caller's error, as is.
func TestObjectsCreateRefused(t *testing.T) {
	denied := errors.Join(errdefs.ErrPermissionDenied, errors.New(`faults.faultline.dev is forbidden: User "alice" cannot create resource "faults" in the namespace "other"`))
	s := &Server{Source: staticSource{target("a", "n1")}, Objects: &fakeObjects{err: denied}}
	if _, err := s.InjectHTTP(context.Background(), httpRequest(time.Minute, map[string]string{"app": "web"})); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("error %v", err)
	}
}

// TestObjectsRevokeAll: in Kubernetes mode revoke --all deletes the Faults.
func TestObjectsRevokeAll(t *testing.T) {
	s := &Server{Objects: &fakeObjects{deleted: []string{"Fault shop/catalog-down"}}}
	resp, err := s.RevokeAll(context.Background(), &pb.RevokeAllRequest{})
	if err != nil || len(resp.GetFaultsDeleted()) != 1 {
		t.Errorf("response %v, %v", resp, err)
	}
}
