package nodeapi

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/faultline-dev/faultline/pkg/engine"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

func serve(t *testing.T, ff *FakeFaults) pb.NodeClient {
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
	api := serve(t, &FakeFaults{})
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
	ff := &FakeFaults{}
	api := serve(t, ff)
	ctx, cancel := context.WithCancel(context.Background())
	stream, _ := api.Inject(ctx, request("f1", time.Minute))
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	f := ff.Fault("f1")
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
	ff := &FakeFaults{Blocked: true}
	api := serve(t, ff)
	ctx, cancel := context.WithCancel(context.Background())
	stream, _ := api.Inject(ctx, request("f1", time.Minute))
	go func() {
		for {
			n := len(ff.Started())
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
	ff := &FakeFaults{}
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
	if len(ff.Started()) != 0 {
		t.Errorf("%d faults started", len(ff.Started()))
	}
	if _, err := api.Revoke(context.Background(), &pb.RevokeRequest{Id: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("revoke of an unknown id: %v, want NotFound", err)
	}
}
