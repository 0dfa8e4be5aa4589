package nodeapi

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/fault"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// fakeFaults is a Faults double: faults that run until stopped or until
// their duration, with a Start that can be made to wait for its context.
type fakeFaults struct {
	mu      sync.Mutex
	blocked bool // Start waits for its context to end
	started []fault.Spec
	faults  map[string]*fakeFault
}

type fakeFault struct {
	mu   sync.Mutex
	st   engine.Status
	done chan struct{}
	once sync.Once
}

func (f *fakeFault) Status() engine.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fakeFault) Done() <-chan struct{} { return f.done }

func (f *fakeFault) Stop(r engine.Reason) engine.Status {
	f.once.Do(func() {
		f.mu.Lock()
		f.st.State, f.st.EndReason = engine.StateEnded, r
		f.st.Counters.Requests = 3
		f.mu.Unlock()
		close(f.done)
	})
	return f.Status()
}

func (ff *fakeFaults) Start(ctx context.Context, t engine.Target, spec fault.Spec) (Fault, error) {
	ff.mu.Lock()
	blocked := ff.blocked
	ff.started = append(ff.started, spec)
	ff.mu.Unlock()
	if blocked {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	f := &fakeFault{st: engine.Status{ID: spec.ID, Kind: spec.Fault.Kind(), Target: t, Claim: spec.Fault.Claim(), State: engine.StateActive,
		Started: time.Now(), Expires: time.Now().Add(spec.Duration)}, done: make(chan struct{})}
	time.AfterFunc(spec.Duration, func() { f.Stop(engine.ReasonExpired) })
	ff.mu.Lock()
	if ff.faults == nil {
		ff.faults = map[string]*fakeFault{}
	}
	ff.faults[spec.ID] = f
	ff.mu.Unlock()
	return f, nil
}

func (ff *fakeFaults) List() []engine.Status { return nil }

func (ff *fakeFaults) Revoke(id string) (engine.Status, error) {
	ff.mu.Lock()
	f := ff.faults[id]
	ff.mu.Unlock()
	if f == nil {
		return engine.Status{}, fmt.Errorf("%w: no active fault with id %q", errdefs.ErrNotFound, id)
	}
	return f.Stop(engine.ReasonRevoked), nil
}

func serve(t *testing.T, ff *fakeFaults) pb.NodeClient {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	srv := NewGRPCServer(&Server{Faults: ff})
	go srv.Serve(ln)
	cc, err := grpc.NewClient("passthrough:///node", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); srv.Stop() })
	return pb.NewNodeClient(cc)
}

func request(id string, d time.Duration) *pb.InjectRequest {
	return &pb.InjectRequest{Id: id, Target: &pb.Target{Kind: &pb.Target_NetnsPath{NetnsPath: "/run/netns/x"}}, Duration: durationpb.New(d),
		Fault: &pb.InjectRequest_Http{Http: &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 503}}}
}

func TestInjectStreamsActiveThenEnded(t *testing.T) {
	api := serve(t, &fakeFaults{})
	stream, err := api.Inject(context.Background(), request("f1", time.Second))
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetFault().GetState() != pb.FaultState_FAULT_STATE_ACTIVE || first.GetFault().GetPort() != 8080 {
		t.Fatalf("first message %v, %v: want the fault active", first, err)
	}
	last, err := stream.Recv()
	if err != nil || last.GetFault().GetState() != pb.FaultState_FAULT_STATE_ENDED || last.GetFault().GetEndReason() != "expired" ||
		last.GetFault().GetCounters().GetRequests() != 3 {
		t.Fatalf("last message %v, %v: want it ended, expired, with counters", last, err)
	}
	if _, err := stream.Recv(); err == nil {
		t.Error("a third message")
	}
}

func TestCancelEndsTheFault(t *testing.T) {
	ff := &fakeFaults{}
	api := serve(t, ff)
	ctx, cancel := context.WithCancel(context.Background())
	stream, _ := api.Inject(ctx, request("f1", time.Minute))
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	ff.mu.Lock()
	f := ff.faults["f1"]
	ff.mu.Unlock()
	select {
	case <-f.Done():
	case <-time.After(time.Second):
		t.Fatal("the fault outlived its call by a second")
	}
	if r := f.Status().EndReason; r != engine.ReasonCancelled {
		t.Errorf("end reason %q, want cancelled", r)
	}
}

func TestCancelDuringSetupStartsNothing(t *testing.T) {
	ff := &fakeFaults{blocked: true}
	api := serve(t, ff)
	ctx, cancel := context.WithCancel(context.Background())
	stream, _ := api.Inject(ctx, request("f1", time.Minute))
	go func() {
		for {
			ff.mu.Lock()
			n := len(ff.started)
			ff.mu.Unlock()
			if n > 0 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("a call cancelled during the setup: %v, want Canceled and no message", err)
	}
}

func TestRefusalsStartNothing(t *testing.T) {
	ff := &fakeFaults{}
	api := serve(t, ff)
	pod := request("p", time.Minute)
	pod.Target = &pb.Target{Kind: &pb.Target_Pod{Pod: &pb.PodRef{Namespace: "shop", Name: "web-1"}}}
	for _, tc := range []struct {
		req  *pb.InjectRequest
		code codes.Code
		msg  string
	}{
		{request("bad id!", time.Minute), codes.InvalidArgument, `id "bad id!" must be 1-63`},
		{request("short", 10*time.Millisecond), codes.InvalidArgument, "duration must be at least 1s"},
		{&pb.InjectRequest{Duration: durationpb.New(time.Minute), Fault: request("", 0).Fault}, codes.InvalidArgument, "target: give a netns path, a pid or a pod"},
		{pod, codes.FailedPrecondition, "this faultlined does not run in Kubernetes mode"},
	} {
		stream, err := api.Inject(context.Background(), tc.req)
		if err == nil {
			_, err = stream.Recv()
		}
		if st := status.Convert(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
			t.Errorf("%v: %v, want %v %q", tc.req, err, tc.code, tc.msg)
		}
	}
	if len(ff.started) != 0 {
		t.Errorf("%d faults started", len(ff.started))
	}
	if _, err := api.Revoke(context.Background(), &pb.RevokeRequest{Id: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("revoke of an unknown id: %v, want NotFound", err)
	}
}
