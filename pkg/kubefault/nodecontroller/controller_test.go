package nodecontroller

import (
	"context"
	"fmt"
	"os"
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
	"github.com/faultline-dev/faultline/pkg/fault"
	"github.com/faultline-dev/faultline/pkg/kubefault"
	"github.com/faultline-dev/faultline/pkg/nodeapi"
)

// fakeCluster is a Cluster double: namespaces by labels, the cluster's
// pods, and the statuses and events written.
type fakeCluster struct {
	mu       sync.Mutex
	ns       map[string]map[string]string
	pods     podList
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

func (c *fakeCluster) ListPods(_ context.Context, ns string, sel labels.Selector, limit int) ([]kubefault.PodID, error) {
	var out []kubefault.PodID
	for _, p := range c.pods.List(ns, sel) {
		if limit == 0 || len(out) <= limit {
			out = append(out, kubefault.PodID{Name: p.Name, UID: p.UID})
		}
	}
	return out, nil
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

// nodePods are the pods of node n1; the cluster has them and others.
func nodePods() podList {
	return podList{testPod("shop", "web-1", "web"), testPod("shop", "web-0", "web"), testPod("shop", "db-0", "db")}
}

func newController(t *testing.T) (*Controller, *fakeCluster, *nodeapi.FakeFaults) {
	return newNode(t, "n1", nodePods(), nodePods())
}

func newNode(t *testing.T, node string, pods, cluster podList) (*Controller, *fakeCluster, *nodeapi.FakeFaults) {
	t.Helper()
	cl := &fakeCluster{ns: map[string]map[string]string{"shop": {kubefault.OptInLabel: kubefault.OptInValue}, "other": {}, "kube-system": {kubefault.OptInLabel: kubefault.OptInValue}}, pods: cluster}
	ff := &nodeapi.FakeFaults{}
	c := &Controller{Node: node, Faults: ff, Targets: anyPod{}, Cluster: cl, Protected: []string{"kube-system"}, Pods: pods}
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
		{"bad count", testFault("shop", "1m", kubefault.Spec{Count: "5"}), "spec.count: cannot fault 5 of the 2 matching pods"},
		{"too many of selector {}", testFault("shop", "1m", kubefault.Spec{Selector: &metav1.LabelSelector{}, MaxTargets: 2}), "more than 2 pods match (3 or more)"},
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

// TestRestartEndsFaults: a Fault this node reported active before its
// faultlined restarted is reported ended (its faults ended with the old
// process) and not started again; one it reported ended is left alone.
func TestRestartEndsFaults(t *testing.T) {
	c, cl, ff := newController(t)
	f := testFault("shop", "1m", kubefault.Spec{})
	f.CreationTimestamp = metav1.NewTime(time.Now().Add(-20 * time.Second))
	f.Status.Nodes = []kubefault.NodeStatus{{Node: "other-node", Phase: kubefault.PhaseEnded},
		{Node: "n1", Phase: kubefault.PhaseActive, Targets: []kubefault.TargetStatus{{Pod: "web-0", State: "active", ID: "x"}}}}
	c.Sync(f)
	st := cl.wait(t, 1)
	if st.Phase != kubefault.PhaseEnded || st.EndReason != "daemon-restarted" || !strings.Contains(st.Message, "faultlined restarted mid-fault") ||
		st.Targets[0].State != "ended" || st.Targets[0].EndReason != "daemon-restarted" || st.EndTime == nil {
		t.Errorf("status %+v", st)
	}
	c.Sync(f) // the watch, before it sees the new status
	time.Sleep(50 * time.Millisecond)
	if len(ff.Started()) != 0 || cl.written() != 1 {
		t.Errorf("%d faults started, %d statuses written after a restart", len(ff.Started()), cl.written())
	}
	c2, cl2, ff2 := newController(t)
	f.UID, f.Status.Nodes[1].Phase = "f-uid-2", kubefault.PhaseEnded
	c2.Sync(f)
	time.Sleep(50 * time.Millisecond)
	if cl2.written() != 0 || len(ff2.Started()) != 0 {
		t.Error("an ended Fault was started again")
	}
}

// TestRestartBeforeTheStatus: a daemon killed after it faulted its
// targets but before its status reached the API server leaves only its
// journal entry; the next daemon reports the Fault ended, not resumed.
func TestRestartBeforeTheStatus(t *testing.T) {
	journal := &MemJournal{}
	f := testFault("shop", "1m", kubefault.Spec{})
	first, cl, _ := newNode(t, "n1", nodePods(), nodePods())
	first.Journal = journal
	first.Sync(f)
	cl.wait(t, 1)
	if !journal.Begun(f.UID) {
		t.Fatal("a Fault being applied is not in the journal")
	}

	next, cl2, ff2 := newNode(t, "n1", nodePods(), nodePods())
	next.Journal = journal
	next.Sync(f) // no entry for n1: the first daemon's status was lost
	st := cl2.wait(t, 1)
	if st.Phase != kubefault.PhaseEnded || st.EndReason != "daemon-restarted" || !strings.Contains(st.Message, "faultlined restarted mid-fault") {
		t.Errorf("status %+v", st)
	}
	time.Sleep(50 * time.Millisecond)
	if len(ff2.Started()) != 0 || journal.Begun(f.UID) {
		t.Errorf("%d faults started after a restart; still journaled: %v", len(ff2.Started()), journal.Begun(f.UID))
	}
}

// TestJournalForgetsEndedFaults: a Fault that ran to its end here leaves
// no journal entry, so a later daemon does not take it for interrupted.
func TestJournalForgetsEndedFaults(t *testing.T) {
	journal := &MemJournal{}
	c, cl, _ := newNode(t, "n1", nodePods(), nodePods())
	c.Journal = journal
	f := testFault("shop", "1500ms", kubefault.Spec{})
	c.Sync(f)
	if st := cl.wait(t, 2); st.Phase != kubefault.PhaseEnded {
		t.Fatalf("status %+v", st)
	}
	for deadline := time.Now().Add(time.Second); journal.Begun(f.UID); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("an ended Fault is still journaled")
		}
	}
}

// TestDirJournal: entries outlive the process that wrote them (a second
// DirJournal on the same directory sees them) and escape plan step UIDs.
func TestDirJournal(t *testing.T) {
	dir := t.TempDir()
	j, err := OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	const step = types.UID("plan-uid/step-1")
	if err := j.Begin(step); err != nil {
		t.Fatal(err)
	}
	if err := j.Begin("f-uid"); err != nil {
		t.Fatal(err)
	}
	j.End("f-uid")
	again, err := OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Begun(step) || again.Begun("f-uid") || again.Begun("plan-uid") {
		t.Errorf("begun: step %v, ended %v, plan %v", again.Begun(step), again.Begun("f-uid"), again.Begun("plan-uid"))
	}
	old := time.Now().Add(-fault.MaxDuration - 2*time.Hour)
	if err := os.Chtimes(again.path(step), old, old); err != nil {
		t.Fatal(err)
	}
	if j, _ := OpenJournal(dir); j.Begun(step) {
		t.Error("an entry older than any fault was kept")
	}
}

// TestLeaseLapses: renewals keep a leased Fault's faults; when they stop,
// the faults end within the lease and the status says why.
func TestLeaseLapses(t *testing.T) {
	c, cl, ff := newController(t)
	f := testFault("shop", "1m", kubefault.Spec{Lease: "1s"})
	c.Sync(f)
	if st := cl.wait(t, 1); st.Phase != kubefault.PhaseActive {
		t.Fatalf("status %+v", st)
	}
	for i := range 4 { // 1.6 s of renewals, each within the lease
		time.Sleep(400 * time.Millisecond)
		g := *f
		g.Annotations = map[string]string{kubefault.LeaseAnnotation: fmt.Sprint(i)}
		c.Sync(&g)
	}
	if cl.written() != 1 {
		t.Fatal("a renewed lease lapsed")
	}
	renewed := time.Now()
	st := cl.wait(t, 2)
	if took := time.Since(renewed); took < 900*time.Millisecond || took > 1500*time.Millisecond {
		t.Errorf("the lease lapsed %s after the last renewal, want 1s", took)
	}
	if st.Phase != kubefault.PhaseEnded || st.EndReason != "lease-expired" || st.Targets[0].EndReason != "lease-expired" {
		t.Errorf("status %+v", st)
	}
	for _, s := range ff.Started() {
		if r := ff.Fault(s.ID).Status().EndReason; r != ReasonLeaseExpired {
			t.Errorf("%s ended %s", s.ID, r)
		}
	}
}

// TestCountPicksTheSameOnEveryNode: count 50% of four pods on two nodes
// faults two in all, whichever nodes they are on.
func TestCountPicksTheSameOnEveryNode(t *testing.T) {
	n1 := podList{testPod("shop", "web-0", "web"), testPod("shop", "web-1", "web")}
	n2 := podList{testPod("shop", "web-2", "web"), testPod("shop", "web-3", "web")}
	cluster := append(slices.Clone(n1), n2...)
	for _, uid := range []types.UID{"a", "b", "c", "d", "e"} {
		total := 0
		for _, pods := range []podList{n1, n2} {
			c, cl, ff := newNode(t, "n", pods, cluster)
			f := testFault("shop", "1m", kubefault.Spec{Count: "50%"})
			f.UID = uid
			c.Sync(f)
			time.Sleep(100 * time.Millisecond)
			if cl.written() > 0 {
				total += len(cl.wait(t, 1).Targets)
			}
			if n := len(ff.Started()); cl.written() == 0 && n > 0 {
				t.Errorf("%d started and no status", n)
			}
		}
		if total != 2 {
			t.Errorf("Fault %s: %d targets on the two nodes, want 2", uid, total)
		}
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

// TestRefreshWritesLiveCounters: a new refresh annotation makes the node
// write its targets' counters of now, saying which request they answer.
func TestRefreshWritesLiveCounters(t *testing.T) {
	c, cl, _ := newController(t)
	f := testFault("shop", "1m", kubefault.Spec{})
	c.Sync(f)
	cl.wait(t, 1)
	g := *f
	g.Annotations = map[string]string{kubefault.RefreshAnnotation: "t1"}
	c.Sync(&g)
	st := cl.wait(t, 2)
	if st.Refreshed != "t1" || st.Phase != kubefault.PhaseActive || st.Targets[0].Counters == nil {
		t.Errorf("status %+v", st)
	}
	c.Sync(&g) // the same request again: no new write
	time.Sleep(50 * time.Millisecond)
	if n := cl.written(); n != 2 {
		t.Errorf("%d statuses written", n)
	}
}

// TestPlanStepsStartAtTheirOffsets: a plan's step starts at its offset
// and reports under PLAN/STEP; deleting the plan ends every step.
func TestPlanStepsStartAtTheirOffsets(t *testing.T) {
	c, cl, ff := newController(t)
	p := &kubefault.FaultPlan{ObjectMeta: metav1.ObjectMeta{Name: "incident", UID: "p-uid", CreationTimestamp: metav1.Now()},
		Spec: kubefault.PlanSpec{Steps: []kubefault.PlanStep{
			{Name: "now", Namespace: "shop", Spec: kubefault.Spec{Selector: web(), Duration: "1m", HTTP: map[string]any{"port": 8080, "errorRate": 1, "errorCode": 503}}},
			{Name: "later", Namespace: "shop", Start: "400ms", Spec: kubefault.Spec{Selector: web(), Duration: "1m", HTTP: map[string]any{"port": 9090, "errorRate": 1, "errorCode": 500}}},
		}}}
	start := time.Now()
	c.SyncPlan(p)
	if st := cl.wait(t, 1); len(ff.Started()) != 2 {
		t.Fatalf("%d faults started at once, want the first step's 2 (status %+v)", len(ff.Started()), st)
	}
	cl.wait(t, 2)
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Errorf("the later step started after %s, want its 400ms offset", took)
	}
	if n := len(ff.Started()); n != 4 {
		t.Fatalf("%d faults started", n)
	}
	c.SyncPlan(p) // a resync: nothing new
	c.DeletePlan("incident", "p-uid")
	for _, s := range ff.Started() {
		select {
		case <-ff.Fault(s.ID).Done():
		case <-time.After(time.Second):
			t.Fatalf("fault %s outlived its plan", s.ID)
		}
	}
	if n := len(ff.Started()); n != 4 {
		t.Errorf("%d faults started after a resync", n)
	}
}
