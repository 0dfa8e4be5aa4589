package engine_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"sync"
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
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/proxy/httpfault"
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
	w := newWorldWith(t, fidelityApp())
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

func (w *grpcWorld) startGRPC(t *testing.T, f httpfault.GRPCFault) *engine.Fault {
	t.Helper()
	if f.DelayRate == 0 {
		f.DelayRate = 1
	}
	fault, err := w.eng.Start(engine.Spec{Target: engine.Target{NetnsPath: w.pod.Path}, Duration: time.Minute,
		HTTP: nil, GRPC: &engine.GRPCFault{Port: 9000, Fault: f}})
	if err != nil {
		t.Fatalf("start grpc fault: %+v", err)
	}
	t.Cleanup(func() { fault.Stop(engine.ReasonRevoked) })
	return fault
}

func unary(ctx context.Context, c testpb.TestServiceClient, i int) error {
	resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: seq(i)})
	if err == nil && seqOf(resp.GetPayload()) != i {
		return fmt.Errorf("answer %d to call %d", seqOf(resp.GetPayload()), i)
	}
	return err
}

func TestGRPCStatusFault(t *testing.T) {
	w := newGRPCWorld(t)
	const msg = "catalog is down: 100% ünïcode, try later"
	f := w.startGRPC(t, httpfault.GRPCFault{ErrorRate: 1, StatusCode: 14, StatusMessage: msg})
	c := testpb.NewTestServiceClient(w.conn(t))
	for i := range 50 {
		err := unary(context.Background(), c, i)
		st, _ := status.FromError(err)
		if st.Code() != codes.Unavailable || st.Message() != msg {
			t.Fatalf("call %d: %v %q, want UNAVAILABLE %q", i, st.Code(), st.Message(), msg)
		}
	}
	if c := f.Status().Counters; c.Requests != 50 || c.Errored != 50 {
		t.Errorf("counters %+v", c)
	}
}

func TestGRPCErrorRate(t *testing.T) {
	w := newGRPCWorld(t)
	w.startGRPC(t, httpfault.GRPCFault{ErrorRate: 0.5, StatusCode: 8})
	c := testpb.NewTestServiceClient(w.conn(t))
	const n = 600
	var mu sync.Mutex
	failed := 0
	var wg sync.WaitGroup
	for g := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 10 {
				err := unary(context.Background(), c, i)
				if status.Code(err) == codes.ResourceExhausted {
					mu.Lock()
					failed++
					mu.Unlock()
				} else if err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	withinBinomial(t, "failed calls", failed, n, 0.5)
}

func TestGRPCExcludeMethodAndMetadata(t *testing.T) {
	w := newGRPCWorld(t)
	cc := w.conn(t)
	c := testpb.NewTestServiceClient(cc)
	ctx := context.Background()

	f := w.startGRPC(t, httpfault.GRPCFault{ErrorRate: 1, StatusCode: 13, Exclude: []string{"grpc.testing.TestService"}})
	if err := unary(ctx, c, 1); err != nil {
		t.Errorf("excluded service: %v", err)
	}
	f.Stop(engine.ReasonRevoked)

	f = w.startGRPC(t, httpfault.GRPCFault{ErrorRate: 1, StatusCode: 13, Methods: []string{"/grpc.testing.TestService/Empty*"}})
	if err := unary(ctx, c, 2); err != nil {
		t.Errorf("unmatched method: %v", err)
	}
	if _, err := c.EmptyCall(ctx, &testpb.Empty{}); status.Code(err) != codes.Internal {
		t.Errorf("matched method: %v, want INTERNAL", err)
	}
	f.Stop(engine.ReasonRevoked)

	w.startGRPC(t, httpfault.GRPCFault{ErrorRate: 1, StatusCode: 7, Metadata: []httpfault.HeaderMatch{{Name: "x-tenant", Value: "blue"}}})
	if err := unary(ctx, c, 3); err != nil {
		t.Errorf("metadata not matching: %v", err)
	}
	blue := metadata.AppendToOutgoingContext(ctx, "x-tenant", "blue")
	if err := unary(blue, c, 4); status.Code(err) != codes.PermissionDenied {
		t.Errorf("metadata matching: %v, want PERMISSION_DENIED", err)
	}
}

func TestGRPCHealthAndReflectionUnlessMatched(t *testing.T) {
	w := newGRPCWorld(t)
	cc := w.conn(t)
	w.startGRPC(t, httpfault.GRPCFault{ErrorRate: 1, StatusCode: 14, Methods: []string{"/grpc.testing.TestService/*"}})
	ctx := context.Background()
	if err := unary(ctx, testpb.NewTestServiceClient(cc), 1); status.Code(err) != codes.Unavailable {
		t.Errorf("matched call: %v", err)
	}
	hr, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health check: %v %v", hr, err)
	}
	rs, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	resp, err := rs.Recv()
	if err != nil || len(resp.GetListServicesResponse().GetService()) < 3 {
		t.Errorf("reflection: %v %v", resp, err)
	}
	rs.CloseSend()
}

func TestGRPCDelayOnOneConnection(t *testing.T) {
	w := newGRPCWorld(t)
	w.startGRPC(t, httpfault.GRPCFault{AverageDelay: 100 * time.Millisecond, DelayVariation: 20 * time.Millisecond})
	c := testpb.NewTestServiceClient(w.conn(t)) // one HTTP/2 connection for all calls
	unary(context.Background(), c, -1)          // connect
	const n, conc, slack = 200, 20, 40 * time.Millisecond
	var mu sync.Mutex
	var sum time.Duration
	var wg sync.WaitGroup
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += conc {
				start := time.Now()
				if err := unary(context.Background(), c, i); err != nil {
					t.Error(err)
					return
				}
				took := time.Since(start)
				if took < 80*time.Millisecond || took > 120*time.Millisecond+slack {
					t.Errorf("call %d took %s, want 100ms ± 20ms", i, took)
				}
				mu.Lock()
				sum += took
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	mean := sum / n
	if math.Abs(float64(mean-100*time.Millisecond)) > float64(10*time.Millisecond) {
		t.Errorf("mean %s, want about 100ms", mean)
	}
	t.Logf("mean call time %s over %d calls, %d at a time on one connection", mean, n, conc)
}

// grpcObservation runs every RPC kind with 10,000 messages per stream.
func grpcObservation(t *testing.T, c testpb.TestServiceClient) map[string]string {
	t.Helper()
	const n = 10000
	o := map[string]string{}
	ctx := context.Background()
	mdOf := func(h, tr metadata.MD) string {
		return fmt.Sprintf("header=%v trailer=%v", h.Get("x-kind"), tr.Get("x-trailer"))
	}

	var h, tr metadata.MD
	resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: seq(7)}, grpc.Header(&h), grpc.Trailer(&tr))
	if err != nil {
		t.Fatal(err)
	}
	o["unary"] = fmt.Sprint(seqOf(resp.GetPayload()), " ", mdOf(h, tr))

	ss, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: make([]*testpb.ResponseParameters, n)})
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for {
		m, err := ss.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if seqOf(m.GetPayload()) != got {
			t.Fatalf("server stream: message %d arrived as %d", seqOf(m.GetPayload()), got)
		}
		got++
	}
	sh, _ := ss.Header()
	o["server-stream"] = fmt.Sprint(got, " ", mdOf(sh, ss.Trailer()))

	cs, err := c.StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := cs.Send(&testpb.StreamingInputCallRequest{Payload: seq(i)}); err != nil {
			t.Fatal(err)
		}
	}
	cr, err := cs.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := cs.Header()
	o["client-stream"] = fmt.Sprint(cr.GetAggregatedPayloadSize(), " ", mdOf(ch, cs.Trailer()))

	bs, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan int)
	go func() {
		k := 0
		for {
			m, err := bs.Recv()
			if err != nil {
				done <- k
				return
			}
			if seqOf(m.GetPayload()) != k {
				t.Errorf("bidi: message %d arrived as %d", seqOf(m.GetPayload()), k)
			}
			k++
		}
	}()
	for i := range n {
		if err := bs.Send(&testpb.StreamingOutputCallRequest{Payload: seq(i)}); err != nil {
			t.Fatal(err)
		}
	}
	bs.CloseSend()
	echoed := <-done
	bh, _ := bs.Header()
	o["bidi"] = fmt.Sprint(echoed, " ", mdOf(bh, bs.Trailer()))
	return o
}

func TestGRPCZeroFaultFidelity(t *testing.T) {
	w := newGRPCWorld(t)
	direct := grpcObservation(t, testpb.NewTestServiceClient(w.conn(t)))
	f := w.startGRPC(t, httpfault.GRPCFault{})
	proxied := grpcObservation(t, testpb.NewTestServiceClient(w.conn(t)))
	if !reflect.DeepEqual(direct, proxied) {
		t.Errorf("direct %v\nproxied %v", direct, proxied)
	}
	if c := f.Status().Counters; c.Requests != 4 {
		t.Errorf("the proxy saw %d calls, want 4", c.Requests)
	}
	t.Logf("%v", proxied)
}

func TestH2CFidelity(t *testing.T) {
	w := newGRPCWorld(t)
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	observe := func() map[string]string {
		c := &http.Client{Transport: &http.Transport{Protocols: &protos, DialContext: w.client.Dial()},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		defer c.CloseIdleConnections()
		o := map[string]string{}
		for _, path := range []string{"/echo?x=1", "/chunked", "/trailers", "/download?n=5242880", "/status/204", "/redirect", "/sse"} {
			req, _ := http.NewRequest("GET", w.url+path, nil)
			req.Header.Set("X-Custom", "v")
			resp, b := roundTrip(t, c, req)
			if resp.ProtoMajor != 2 {
				t.Fatalf("%s went over %s", path, resp.Proto)
			}
			o[path] = describe(resp, b) + " " + string(b[:min(len(b), 200)])
		}
		req, _ := http.NewRequest("POST", w.url+"/upload", io.LimitReader(pattern{}, 5<<20))
		resp, b := roundTrip(t, c, req)
		o["upload"] = describe(resp, b) + string(b)
		return o
	}
	direct := observe()
	f := w.start(t, httpfault.Fault{})
	proxied := observe()
	for k := range direct {
		if direct[k] != proxied[k] {
			t.Errorf("%s differs:\n direct:  %s\n proxied: %s", k, direct[k], proxied[k])
		}
	}
	if c := f.Status().Counters; c.Requests != 8 {
		t.Errorf("the proxy saw %d requests, want 8", c.Requests)
	}
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
	f := w.startGRPC(t, httpfault.GRPCFault{ErrorRate: 1, StatusCode: 14})
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

// goAwayObservation opens a bidi stream, gracefully stops the server (a
// GOAWAY), and records what the client sees: the open stream finishes,
// a new call fails.
func goAwayObservation(t *testing.T, w *grpcWorld) string {
	t.Helper()
	c := testpb.NewTestServiceClient(w.conn(t))
	bs, err := c.FullDuplexCall(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	bs.Send(&testpb.StreamingOutputCallRequest{Payload: seq(1)})
	if _, err := bs.Recv(); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { w.srv.GracefulStop(); close(stopped) }()
	time.Sleep(200 * time.Millisecond) // the GOAWAY is out; the stream is still open
	var out []string
	for i := 2; i < 5; i++ {
		if err := bs.Send(&testpb.StreamingOutputCallRequest{Payload: seq(i)}); err != nil {
			t.Fatalf("send on the open stream after GOAWAY: %v", err)
		}
		m, err := bs.Recv()
		out = append(out, fmt.Sprint(seqOf(m.GetPayload()), err))
	}
	bs.CloseSend()
	_, err = bs.Recv()
	out = append(out, fmt.Sprint("end:", err))
	<-stopped
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	out = append(out, fmt.Sprint("new call:", status.Code(unary(ctx, c, 9))))
	return strings.Join(out, " ")
}

func TestGRPCGoAwayAsWithoutProxy(t *testing.T) {
	direct := goAwayObservation(t, newGRPCWorld(t))
	w := newGRPCWorld(t)
	w.startGRPC(t, httpfault.GRPCFault{})
	proxied := goAwayObservation(t, w)
	if direct != proxied {
		t.Errorf("GOAWAY differs:\n direct:  %s\n proxied: %s", direct, proxied)
	}
	t.Log(proxied)
}

func TestGRPCFaultEndDrainsOpenStream(t *testing.T) {
	w := newGRPCWorld(t)
	f := w.startGRPC(t, httpfault.GRPCFault{})
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
