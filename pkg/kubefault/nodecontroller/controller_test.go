package nodecontroller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/kubefault"
	"github.com/faultline-dev/faultline/pkg/nodeapi"
)

// fakeCluster is a Cluster double: namespaces by labels, a pod count, and
// the statuses written.
type fakeCluster struct {
	mu       sync.Mutex
	ns       map[string]map[string]string
	count    int
	statuses []kubefault.NodeStatus
	events   []string
}

func (c *fakeCluster) NamespaceLabels(_ context.Context, name string) (map[string]string, error) {
	l, ok := c.ns[name]
	if !ok {
		return nil, fmt.Errorf("namespaces %q not found", name)
	}
	return l, nil
}

func (c *fakeCluster) ServiceSelector(_ context.Context, _, name string) (map[string]string, error) {
	if name == "web" {
		return map[string]string{"app": "web"}, nil
	}
	return nil, fmt.Errorf("services %q not found", name)
}

func (c *fakeCluster) CountPods(context.Context, string, labels.Selector, int) (int, error) {
	return c.count, nil
}

func (c *fakeCluster) Event(_ context.Context, on kubefault.Ref, warning bool, reason, message string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, fmt.Sprintf("%s %s/%s %s: %s", on.Kind, on.Namespace, on.Name, reason, message))
	return nil
}

func (c *fakeCluster) eventList() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

func (c *fakeCluster) ApplyStatus(_ context.Context, _, _ string, st kubefault.NodeStatus) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.statuses = append(c.statuses, st)
	return nil
}

// last waits for the n-th status written.
func (c *fakeCluster) wait(t *testing.T, n int) kubefault.NodeStatus {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		c.mu.Lock()
		if len(c.statuses) >= n {
			st := c.statuses[n-1]
			c.mu.Unlock()
			return st
		}
		c.mu.Unlock()
	}
	t.Fatalf("status %d never written", n)
	return kubefault.NodeStatus{}
}

func (c *fakeCluster) written() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.statuses)
}

type podList []*corev1.Pod

func (l podList) List(ns string, sel labels.Selector) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range l {
		if p.Namespace == ns && sel.Matches(labels.Set(p.Labels)) {
			out = append(out, p)
		}
	}
	return out
}

type anyPod struct{}

func (anyPod) ResolveTarget(_ context.Context, t engine.Target) (engine.Target, error) {
	t.PID = 4242
	return t, nil
}

func testPod(ns, name, app string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), Labels: map[string]string{"app": app}},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
}

func newController(t *testing.T) (*Controller, *fakeCluster, *nodeapi.FakeFaults) {
	t.Helper()
	cl := &fakeCluster{ns: map[string]map[string]string{"shop": {kubefault.OptInLabel: kubefault.OptInValue}, "other": {}, "kube-system": {kubefault.OptInLabel: kubefault.OptInValue}}, count: 2}
	ff := &nodeapi.FakeFaults{}
	c := &Controller{Node: "n1", Faults: ff, Targets: anyPod{}, Cluster: cl, Protected: []string{"kube-system"},
		Pods: podList{testPod("shop", "web-1", "web"), testPod("shop", "web-0", "web"), testPod("shop", "db-0", "db")}}
	ctx, cancel := context.WithCancel(context.Background())
	c.Start(ctx)
	t.Cleanup(func() { cancel(); c.Wait() })
	return c, cl, ff
}

func testFault(ns, duration string, spec kubefault.Spec) *kubefault.Fault {
	spec.Duration = duration
	if spec.Selector == nil && spec.Service == "" {
		spec.Selector = web()
	}
	if spec.HTTP == nil && spec.TCP == nil {
		spec.HTTP = map[string]any{"portName": nil, "errorRate": 1, "errorCode": 503, "port": 8080}
		delete(spec.HTTP, "portName")
	}
	return &kubefault.Fault{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "slow-web", UID: "f-uid", CreationTimestamp: metav1.Now()}, Spec: spec}
}

// TestFaultActiveThenDeleted: both web pods of the node get the fault for
// what is left of its duration; deleting the Fault ends them at once.
func TestFaultActiveThenDeleted(t *testing.T) {
	c, cl, ff := newController(t)
	f := testFault("shop", "1m", kubefault.Spec{})
	c.Sync(f)
	st := cl.wait(t, 1)
	if st.Phase != kubefault.PhaseActive || st.Node != "n1" || len(st.Targets) != 2 || st.Targets[0].Pod != "web-0" || st.Targets[0].State != "active" || st.StartTime == nil {
		t.Fatalf("status %+v", st)
	}
	started := ff.Started()
	if len(started) != 2 || started[0].Duration > time.Minute || started[0].Duration < 55*time.Second || started[0].ID == started[1].ID {
		t.Fatalf("started %+v", started)
	}
	c.Sync(f) // the watch's resync: nothing new
	if n := len(ff.Started()); n != 2 {
		t.Errorf("a resync started %d faults", n-2)
	}
	c.Delete("shop", "slow-web", "f-uid")
	for _, ts := range st.Targets {
		fk := ff.Fault(ts.ID)
		select {
		case <-fk.Done():
			if r := fk.Status().EndReason; r != engine.ReasonRevoked {
				t.Errorf("%s ended %s", ts.Pod, r)
			}
		case <-time.After(time.Second):
			t.Fatalf("%s's fault outlived its Fault", ts.Pod)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n := cl.written(); n != 1 {
		t.Errorf("%d statuses written for a deleted Fault, want none after the first", n-1)
	}
}

// TestFaultExpires: at the end of its duration the node reports Ended
// with each target's counters.
func TestFaultExpires(t *testing.T) {
	c, cl, _ := newController(t)
	c.Sync(testFault("shop", "1500ms", kubefault.Spec{Service: "web"}))
	if st := cl.wait(t, 1); st.Phase != kubefault.PhaseActive {
		t.Fatalf("status %+v", st)
	}
	st := cl.wait(t, 2)
	if st.Phase != kubefault.PhaseEnded || st.EndReason != "expired" || st.EndTime == nil || st.Targets[1].Counters["requests"] != 3 || st.Targets[1].State != "ended" {
		t.Errorf("status %+v", st)
	}
	time.Sleep(20 * time.Millisecond)
	want := []string{
		"Fault shop/slow-web Started: node n1: http fault on 2 pod(s) for ",
		"Pod shop/web-0 FaultStarted: Fault slow-web (http, f-uid) started on this pod for ",
		"Pod shop/web-1 FaultStarted",
		"Pod shop/web-0 FaultEnded: Fault slow-web ended on this pod (expired): requests=3",
		"Pod shop/web-1 FaultEnded",
		"Fault shop/slow-web Ended: node n1: ended (expired) on 2 pod(s)",
	}
	got := cl.eventList()
	if len(got) != len(want) {
		t.Fatalf("events %q", got)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("event %d: %q, want %q...", i, got[i], want[i])
		}
	}
}

func TestFaultRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    *kubefault.Fault
		want string
	}{
		{"not opted in", testFault("other", "1m", kubefault.Spec{}), "namespace other has not opted in to faults: label it faultline.dev/faults=enabled"},
		{"protected", testFault("kube-system", "1m", kubefault.Spec{}), "namespace kube-system is never faulted"},
		{"too many", testFault("shop", "1m", kubefault.Spec{MaxTargets: 1}), "more than 1 pods match (2 or more): set spec.maxTargets"},
		{"invalid", testFault("shop", "1m", kubefault.Spec{HTTP: map[string]any{"port": 8080, "errorRate": 2, "errorCode": 500}}), "spec.http: errorRate must be in the range [0, 1], got 2"},
		{"no such service", testFault("shop", "1m", kubefault.Spec{Service: "nope"}), `spec.service nope: services "nope" not found`},
		{"every pod", testFault("shop", "1m", kubefault.Spec{Selector: &metav1.LabelSelector{}}), "spec.selector selects every pod of the namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, cl, ff := newController(t)
			c.Sync(tc.f)
			if st := cl.wait(t, 1); st.Phase != kubefault.PhaseFailed || !strings.Contains(st.Message, tc.want) {
				t.Errorf("status %+v, want Failed with %q", st, tc.want)
			}
			time.Sleep(10 * time.Millisecond)
			if ev := cl.eventList(); len(ev) != 1 || !strings.Contains(ev[0], "Fault "+tc.f.Namespace+"/slow-web Refused: node n1: ") {
				t.Errorf("events %q", ev)
			}
			if n := len(ff.Started()); n != 0 {
				t.Errorf("%d faults started", n)
			}
		})
	}
}

func TestDryRunTouchesNothing(t *testing.T) {
	c, cl, ff := newController(t)
	c.Sync(testFault("shop", "1m", kubefault.Spec{DryRun: true}))
	st := cl.wait(t, 1)
	if st.Phase != kubefault.PhaseDryRun || len(st.Targets) != 2 || st.Targets[1].State != "dry-run" || len(ff.Started()) != 0 {
		t.Errorf("status %+v, %d started", st, len(ff.Started()))
	}
}

// TestRestartPicksUp: a Fault this node reported active (before a restart)
// is started again for the time left and says so; one it reported ended
// is left alone.
func TestRestartPicksUp(t *testing.T) {
	c, cl, ff := newController(t)
	f := testFault("shop", "1m", kubefault.Spec{})
	f.CreationTimestamp = metav1.NewTime(time.Now().Add(-20 * time.Second))
	f.Status.Nodes = []kubefault.NodeStatus{{Node: "other-node", Phase: kubefault.PhaseEnded}, {Node: "n1", Phase: kubefault.PhaseActive}}
	c.Sync(f)
	st := cl.wait(t, 1)
	if st.Phase != kubefault.PhaseActive || !strings.Contains(st.Message, "faultlined restarted: the fault was picked up again for the 40s left") {
		t.Errorf("status %+v", st)
	}
	if d := ff.Started()[0].Duration; d > 40*time.Second || d < 38*time.Second {
		t.Errorf("restarted for %s, want the 40s left", d)
	}
	c2, cl2, ff2 := newController(t)
	f.UID, f.Status.Nodes[1].Phase = "f-uid-2", kubefault.PhaseEnded
	c2.Sync(f)
	time.Sleep(50 * time.Millisecond)
	if cl2.written() != 0 || len(ff2.Started()) != 0 {
		t.Error("an ended Fault was started again")
	}
}

func TestPortName(t *testing.T) {
	c, cl, ff := newController(t)
	c.Sync(testFault("shop", "1m", kubefault.Spec{PortName: "http", HTTP: map[string]any{"errorRate": 1, "errorCode": 503, "port": 1}}))
	cl.wait(t, 1)
	if p := ff.Started()[0].Fault.Claim().Port; p != 8080 {
		t.Errorf("port %d, want the pod's http port 8080", p)
	}
	c2, cl2, _ := newController(t)
	c2.Sync(testFault("shop", "1m", kubefault.Spec{PortName: "grpc", HTTP: map[string]any{"errorRate": 1, "errorCode": 503, "port": 1}}))
	if st := cl2.wait(t, 1); st.Phase != kubefault.PhaseFailed || !strings.Contains(st.Targets[0].Message, `pod web-0 has no container port named "grpc"`) {
		t.Errorf("status %+v", st)
	}
}

func web() *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
}
