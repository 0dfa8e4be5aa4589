package engine_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/fault"
)

// testService is a real grpc-go service: every RPC kind, with header and
// trailer metadata, and message payloads carrying sequence numbers.
type testService struct {
	testpb.UnimplementedTestServiceServer
}

func seq(i int) *testpb.Payload {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, uint32(i))
	return &testpb.Payload{Body: b}
}

func seqOf(p *testpb.Payload) int { return int(binary.BigEndian.Uint32(p.GetBody())) }

func setMD(ctx context.Context, kind string) {
	grpc.SetHeader(ctx, metadata.Pairs("x-kind", kind))
	grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", kind+"-done"))
}

func (testService) EmptyCall(ctx context.Context, _ *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

func (testService) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	setMD(ctx, "unary")
	return &testpb.SimpleResponse{Payload: req.GetPayload()}, nil
}

func (testService) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	setMD(s.Context(), "server-stream")
	for i := range req.GetResponseParameters() {
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: seq(i)}); err != nil {
			return err
		}
	}
	return nil
}

func (testService) StreamingInputCall(s grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	setMD(s.Context(), "client-stream")
	n := 0
	for {
		req, err := s.Recv()
		if err == io.EOF {
			return s.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(n)})
		}
		if err != nil {
			return err
		}
		if seqOf(req.GetPayload()) != n {
			return status.Errorf(codes.DataLoss, "message %d arrived as %d", seqOf(req.GetPayload()), n)
		}
		n++
	}
}

func (testService) FullDuplexCall(s grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	setMD(s.Context(), "bidi")
	for {
		req, err := s.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

// grpcWorld adds a gRPC server on :9000 of the world's pod.
type grpcWorld struct {
	*world
	addr string
	srv  *grpc.Server
}

func newGRPCWorld(t *testing.T) *grpcWorld {
	t.Helper()
	w := newWorldWith(t, nil, nil)
	srv := grpc.NewServer()
	testpb.RegisterTestServiceServer(srv, testService{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	reflection.Register(srv)
	go srv.Serve(w.pod.Listen(t, "tcp", ":9000"))
	t.Cleanup(srv.Stop)
	return &grpcWorld{world: w, addr: netip.AddrPortFrom(w.pod.Addr, 9000).String(), srv: srv}
}

// conn opens one gRPC connection (one HTTP/2 connection) from the client.
func (w *grpcWorld) conn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	dial := w.client.Dial()
	cc, err := grpc.NewClient("passthrough:///"+w.addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dial(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func (w *grpcWorld) startGRPC(t *testing.T, f *fault.GRPC) *engine.Running {
	t.Helper()
	f.Port = 9000
	r, err := w.eng.Start(context.Background(), w.target(), spec(t, f))
	if err != nil {
		t.Fatalf("start grpc fault: %+v", err)
	}
	t.Cleanup(func() { r.Stop(engine.ReasonRevoked) })
	return r
}

func unary(ctx context.Context, c testpb.TestServiceClient, i int) error {
	resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: seq(i)})
	if err == nil && seqOf(resp.GetPayload()) != i {
		return fmt.Errorf("answer %d to call %d", seqOf(resp.GetPayload()), i)
	}
	return err
}

func TestGRPCStreamOpenedBeforeFaultKeepsWorking(t *testing.T) {
	w := newGRPCWorld(t)
	c := testpb.NewTestServiceClient(w.conn(t))
	bs, err := c.FullDuplexCall(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	echo := func(i int) {
		t.Helper()
		if err := bs.Send(&testpb.StreamingOutputCallRequest{Payload: seq(i)}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		m, err := bs.Recv()
		if err != nil || seqOf(m.GetPayload()) != i {
			t.Fatalf("echo %d: %v %v", i, m, err)
		}
	}
	echo(0)
	f := w.startGRPC(t, &fault.GRPC{ErrorRate: 1, Status: 14})
	for i := 1; i < 100; i++ {
		echo(i)
	}
	// A new connection gets the fault meanwhile.
	if err := unary(context.Background(), testpb.NewTestServiceClient(w.conn(t)), 1); status.Code(err) != codes.Unavailable {
		t.Errorf("new connection during the fault: %v", err)
	}
	f.Stop(engine.ReasonRevoked)
	echo(100)
	bs.CloseSend()
}

func TestGRPCFaultEndDrainsOpenStream(t *testing.T) {
	w := newGRPCWorld(t)
	f := w.startGRPC(t, &fault.GRPC{})
	c := testpb.NewTestServiceClient(w.conn(t))
	bs, err := c.FullDuplexCall(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	bs.Send(&testpb.StreamingOutputCallRequest{Payload: seq(1)})
	bs.Recv()
	stopped := make(chan struct{})
	go func() { f.Stop(engine.ReasonRevoked); close(stopped) }()
	time.Sleep(100 * time.Millisecond)
	// The proxied stream still works during the drain...
	if err := bs.Send(&testpb.StreamingOutputCallRequest{Payload: seq(2)}); err != nil {
		t.Fatalf("send during drain: %v", err)
	}
	if m, err := bs.Recv(); err != nil || seqOf(m.GetPayload()) != 2 {
		t.Fatalf("recv during drain: %v %v", m, err)
	}
	bs.CloseSend()
	if _, err := bs.Recv(); err != io.EOF {
		t.Errorf("stream end: %v", err)
	}
	<-stopped
	// ...and new calls go direct.
	if err := unary(context.Background(), c, 3); err != nil {
		t.Errorf("after the fault: %v", err)
	}
	if n := f.Status().Counters.Requests; n != 1 {
		t.Errorf("proxy saw %d calls, want the 1 stream", n)
	}
}
