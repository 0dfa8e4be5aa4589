package gateway

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/faultline-dev/faultline/pkg/targets"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// fakeNode is a faultlined double behind a real gRPC connection (in
// memory), so that cancellation behaves as on the wire. A target's name
// says what its fault does: "fail-*" is refused, "slow-*" never finishes
// its setup, others run until their duration, a revoke or a cancel.
type fakeNode struct {
	pb.UnimplementedNodeServer
	mu       sync.Mutex
	running  map[string]chan string // fault id → stop reason
	started  []string               // ids that became active
	ended    map[string]string      // id → end reason
	aborted  int                    // setups cancelled
	requests []*pb.InjectRequest
}

func (n *fakeNode) Inject(req *pb.InjectRequest, stream pb.Node_InjectServer) error {
	ctx := stream.Context()
	n.mu.Lock()
	n.requests = append(n.requests, req)
	n.mu.Unlock()
	name := req.GetTarget().GetNetnsPath()
	switch {
	case strings.HasPrefix(name, "fail-"):
		return status.Errorf(codes.FailedPrecondition, "%s already has http fault \"other\" on port 80", name)
	case strings.HasPrefix(name, "slow-"):
		<-ctx.Done()
		n.mu.Lock()
		n.aborted++
		n.mu.Unlock()
		return ctx.Err()
	}
	stop := make(chan string, 1)
	n.mu.Lock()
	if n.running == nil {
		n.running, n.ended = map[string]chan string{}, map[string]string{}
	}
	n.running[req.GetId()] = stop
	n.started = append(n.started, req.GetId())
	n.mu.Unlock()
	st := &pb.FaultStatus{Id: req.GetId(), State: pb.FaultState_FAULT_STATE_ACTIVE}
	reason := "expired"
	// As the real node: a call gone before it hears "active" ends the fault.
	sendErr := stream.Send(&pb.InjectResponse{Fault: st})
	if sendErr != nil {
		reason = "cancelled"
	} else {
		select {
		case <-time.After(req.GetDuration().AsDuration()):
		case reason = <-stop:
		case <-ctx.Done():
			reason = "cancelled"
		}
	}
	n.mu.Lock()
	delete(n.running, req.GetId())
	n.ended[req.GetId()] = reason
	n.mu.Unlock()
	if sendErr != nil {
		return sendErr
	}
	return stream.Send(&pb.InjectResponse{Fault: &pb.FaultStatus{Id: req.GetId(), State: pb.FaultState_FAULT_STATE_ENDED,
		EndReason: reason, Counters: &pb.Counters{Requests: 2, Delayed: 1}}})
}

func (n *fakeNode) Revoke(_ context.Context, req *pb.RevokeRequest) (*pb.RevokeResponse, error) {
	n.mu.Lock()
	stop := n.running[req.GetId()]
	n.mu.Unlock()
	if stop == nil {
		return nil, status.Errorf(codes.NotFound, "no active fault with id %q", req.GetId())
	}
	stop <- "revoked"
	for {
		n.mu.Lock()
		reason, done := n.ended[req.GetId()]
		n.mu.Unlock()
		if done {
			return &pb.RevokeResponse{Fault: &pb.FaultStatus{Id: req.GetId(), EndReason: reason}}, nil
		}
		time.Sleep(time.Millisecond)
	}
}

// List returns the running faults, each with its request's target and
// live counters of one request.
func (n *fakeNode) List(context.Context, *pb.ListRequest) (*pb.ListResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	resp := &pb.ListResponse{}
	for _, r := range n.requests {
		if n.running[r.GetId()] != nil {
			resp.Faults = append(resp.Faults, &pb.FaultStatus{Id: r.GetId(), Target: r.GetTarget(), State: pb.FaultState_FAULT_STATE_ACTIVE, Counters: &pb.Counters{Requests: 1}})
		}
	}
	return resp, nil
}

func (n *fakeNode) runningCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.running)
}

// fakeTransport reaches one fakeNode per node name.
type fakeTransport struct {
	mu    sync.Mutex
	nodes map[string]*fakeNode
	conns map[string]*grpc.ClientConn
	opens map[string]int
}

func newFakeTransport(t *testing.T, names ...string) *fakeTransport {
	ft := &fakeTransport{nodes: map[string]*fakeNode{}, conns: map[string]*grpc.ClientConn{}, opens: map[string]int{}}
	for _, name := range names {
		ln := bufconn.Listen(1 << 20)
		srv := grpc.NewServer()
		node := &fakeNode{}
		pb.RegisterNodeServer(srv, node)
		go srv.Serve(ln)
		cc, err := grpc.NewClient("passthrough:///"+name, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close(); srv.Stop() })
		ft.nodes[name], ft.conns[name] = node, cc
	}
	return ft
}

func (ft *fakeTransport) Node(_ context.Context, node string) (pb.NodeClient, func(), error) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	cc, ok := ft.conns[node]
	if !ok {
		return nil, nil, status.Errorf(codes.Unavailable, "no faultlined on node %s", node)
	}
	ft.opens[node]++
	return pb.NewNodeClient(cc), func() {}, nil
}

// Nodes lists the nodes, and "gone", a node whose faultlined cannot be
// reached.
func (ft *fakeTransport) Nodes(context.Context) ([]string, error) {
	nodes := []string{"gone"}
	for name := range ft.nodes {
		nodes = append(nodes, name)
	}
	slices.Sort(nodes)
	return nodes, nil
}

// staticSource is a Source double: every target, whatever the set.
type staticSource []targets.Target

func (s staticSource) Resolve(_ context.Context, set targets.Set) (targets.Resolution, error) {
	var res targets.Resolution
	for _, t := range s {
		if set.Pods != nil && set.Pods.Matches(t.Labels) {
			res.Targets = append(res.Targets, t)
		}
	}
	res.Sources = []string{"the test's targets"}
	return res, nil
}

func (staticSource) Terminate(context.Context, targets.Target, time.Duration) error { return nil }

// grpcStatus is the status a caller gets: errors become codes at the
// server's boundary.
func grpcStatus(err error) *status.Status { return status.Convert(errgrpc.ToGRPC(err)) }

func target(name, node string) targets.Target {
	return targets.Target{Name: name, Namespace: "shop", Node: node, NetnsPath: name, Labels: map[string]string{"app": "web"}}
}

func httpRequest(d time.Duration, labels map[string]string) *pb.InjectHTTPRequest {
	return &pb.InjectHTTPRequest{
		Targets:  &pb.TargetSet{Kind: &pb.TargetSet_Pods{Pods: &pb.PodSelector{Namespace: "shop", Select: &pb.LabelSet{Labels: labels}}}},
		Duration: durationpb.New(d),
		Fault:    &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 503},
	}
}

func TestSeveralNodes(t *testing.T) {
	ft := newFakeTransport(t, "n1", "n2", "n3")
	s := &Server{Source: staticSource{target("a", "n1"), target("b", "n2"), target("c", "n2"), target("d", "n3")}, Transport: ft}
	resp, err := s.InjectHTTP(context.Background(), httpRequest(time.Second, map[string]string{"app": "web"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetTargets()) != 4 || resp.GetTotal().GetRequests() != 8 || resp.GetTotal().GetDelayed() != 4 || resp.GetNoRequests() {
		t.Errorf("response %v", resp)
	}
	for name, want := range map[string]int{"n1": 1, "n2": 2, "n3": 1} {
		n := ft.nodes[name]
		if len(n.requests) != want {
			t.Errorf("node %s got %d faults, want %d", name, len(n.requests), want)
		}
		for _, r := range n.requests {
			if r.GetHttp().GetPort() != 8080 || r.GetDuration().AsDuration() != time.Second || !strings.HasPrefix(r.GetId(), "gw-") {
				t.Errorf("node %s got %v", name, r)
			}
		}
	}
}

func TestOneTargetFailsAllRevoked(t *testing.T) {
	ft := newFakeTransport(t, "n1", "n2")
	s := &Server{Source: staticSource{target("a", "n1"), target("b", "n1"), target("fail-c", "n2")}, Transport: ft}
	start := time.Now()
	_, err := s.InjectHTTP(context.Background(), httpRequest(time.Minute, map[string]string{"app": "web"}))
	st := grpcStatus(err)
	if st.Code() != codes.FailedPrecondition || !strings.HasPrefix(st.Message(), "target shop/fail-c on node n2: fail-c already has http fault") {
		t.Fatalf("got %v, want FailedPrecondition naming the target and the cause", err)
	}
	// When the call returns, nothing is left running anywhere.
	if n := ft.nodes["n1"].runningCount() + ft.nodes["n2"].runningCount(); n != 0 {
		t.Errorf("%d faults still running after the call failed", n)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("rolling back took %s", took)
	}
}

func TestCancelMidStart(t *testing.T) {
	ft := newFakeTransport(t, "n1", "n2")
	s := &Server{Source: staticSource{target("a", "n1"), target("slow-b", "n2")}, Transport: ft}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for ft.nodes["n1"].runningCount() == 0 || ft.nodes["n2"].requestCount() == 0 { // a is active, b being set up
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	_, err := s.InjectHTTP(ctx, httpRequest(time.Minute, map[string]string{"app": "web"}))
	if grpcStatus(err).Code() != codes.Canceled {
		t.Fatalf("got %v, want Canceled", err)
	}
	if n := ft.nodes["n1"].runningCount(); n != 0 {
		t.Errorf("%d faults still running on n1 after the cancel", n)
	}
	deadline := time.Now().Add(time.Second)
	for ft.nodes["n2"].abortedCount() != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := ft.nodes["n2"].abortedCount(); n != 1 {
		t.Errorf("the setup still going on n2 saw %d cancels, want 1", n)
	}
}

func (n *fakeNode) requestCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.requests)
}

func (n *fakeNode) abortedCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.aborted
}

func TestNoMatchAndBadFaultAskNoNode(t *testing.T) {
	ft := newFakeTransport(t, "n1")
	s := &Server{Source: staticSource{target("a", "n1")}, Transport: ft}
	_, err := s.InjectHTTP(context.Background(), httpRequest(time.Minute, map[string]string{"app": "nothing"}))
	want := `not found: finding pods matching pods including(app=nothing), excluding() in namespace "shop": no pods found matching selector; looked in the test's targets`
	if st := grpcStatus(err); st.Code() != codes.NotFound || st.Message() != want {
		t.Errorf("no match: %v, want NotFound %q", err, want)
	}
	bad := httpRequest(time.Minute, map[string]string{"app": "web"})
	bad.Fault.ErrorRate = 2
	if _, err := s.InjectHTTP(context.Background(), bad); grpcStatus(err).Code() != codes.InvalidArgument || !strings.Contains(err.Error(), "errorRate must be in the range [0, 1], got 2") {
		t.Errorf("bad fault: %v, want InvalidArgument", err)
	}
	bad = httpRequest(500*time.Millisecond, map[string]string{"app": "web"})
	if _, err := s.InjectHTTP(context.Background(), bad); grpcStatus(err).Code() != codes.InvalidArgument {
		t.Errorf("short duration: %v, want InvalidArgument", err)
	}
	timeline := httpRequest(10*time.Second, map[string]string{"app": "web"})
	timeline.Fault = &pb.HTTPFault{Port: 8080}
	timeline.Fault.Phases = []*pb.HTTPPhase{{Duration: durationpb.New(8 * time.Second)}, {Duration: durationpb.New(8 * time.Second)}}
	if _, err := s.InjectHTTP(context.Background(), timeline); grpcStatus(err).Code() != codes.InvalidArgument || !strings.Contains(err.Error(), "phases last 16s in all, longer than the fault's duration 10s") {
		t.Errorf("inconsistent timeline: %v, want InvalidArgument", err)
	}
	sni := &pb.InjectTcpRequest{Targets: timeline.Targets, Duration: durationpb.New(time.Minute), Fault: &pb.TcpFault{Port: 443,
		Tls: &pb.TlsFault{ServerNames: []string{"pay.*"}, Action: &pb.TlsFault_Reset_{Reset_: &pb.TlsReset{}}}}}
	if _, err := s.InjectTcp(context.Background(), sni); grpcStatus(err).Code() != codes.InvalidArgument || !strings.Contains(err.Error(), `tls.serverNames[0]: "pay.*": * is only allowed as the first label`) {
		t.Errorf("an SNI pattern that cannot match: %v, want InvalidArgument", err)
	}
	if n := len(ft.nodes["n1"].requests); n != 0 {
		t.Errorf("the node was asked %d times", n)
	}
}

func TestManyTargetsStartBoundedAndAllEnd(t *testing.T) {
	ft := newFakeTransport(t, "n1")
	var src staticSource
	for i := range 50 {
		src = append(src, target(fmt.Sprintf("p%02d", i), "n1"))
	}
	s := &Server{Source: src, Transport: ft, MaxStarting: 4}
	resp, err := s.InjectHTTP(context.Background(), httpRequest(time.Second, map[string]string{"app": "web"}))
	if err != nil || len(resp.GetTargets()) != 50 {
		t.Fatalf("%v targets, %v", len(resp.GetTargets()), err)
	}
	for _, r := range resp.GetTargets() {
		if r.GetFault().GetEndReason() != "expired" {
			t.Errorf("%s ended %q", r.GetTarget().GetName(), r.GetFault().GetEndReason())
		}
	}
}
