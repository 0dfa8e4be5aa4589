package httpfault

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
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

// grpcLab is a real grpc-go server on loopback, with the HTTP lab's
// fidelity application beside it for h2c; startGRPC puts a proxy in front
// of the gRPC server. Connections dial whatever is in front when they
// connect, so a connection made before a proxy stops reconnects directly.
type grpcLab struct {
	*lab
	app    string // the gRPC server's host:port
	srv    *grpc.Server
	mu     sync.Mutex
	target string // where new gRPC connections go
}

func newGRPCLab(t testing.TB) *grpcLab {
	t.Helper()
	l := newLab(t, fidelityApp())
	srv := grpc.NewServer()
	testpb.RegisterTestServiceServer(srv, testService{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	reflection.Register(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return &grpcLab{lab: l, app: ln.Addr().String(), srv: srv, target: ln.Addr().String()}
}

// conn opens one gRPC connection (one HTTP/2 connection at a time).
func (w *grpcLab) conn(t testing.TB) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///grpc-lab",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			w.mu.Lock()
			target := w.target
			w.mu.Unlock()
			return w.dial(ctx, "tcp", target)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// grpcProxy is a proxy in front of the lab's gRPC server.
type grpcProxy struct {
	*Proxy
	w *grpcLab
}

func (w *grpcLab) startGRPC(t testing.TB, rule fault.Rule) *grpcProxy {
	t.Helper()
	p := &Proxy{Rule: rule, Dial: func(ctx context.Context) (net.Conn, error) { return w.dial(ctx, "tcp", w.app) }}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(ln)
	w.mu.Lock()
	w.target = ln.Addr().String()
	w.mu.Unlock()
	gp := &grpcProxy{Proxy: p, w: w}
	t.Cleanup(gp.stop)
	return gp
}

// stop drains the proxy, as the end of a fault does; new connections go
// to the server directly.
func (p *grpcProxy) stop() {
	p.w.mu.Lock()
	p.w.target = p.w.app
	p.w.mu.Unlock()
	shutdown(p.Proxy)
}

func unary(ctx context.Context, c testpb.TestServiceClient, i int) error {
	resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: seq(i)})
	if err == nil && seqOf(resp.GetPayload()) != i {
		return fmt.Errorf("answer %d to call %d", seqOf(resp.GetPayload()), i)
	}
	return err
}

func TestGRPCStatusFault(t *testing.T) {
	w := newGRPCLab(t)
	const msg = "catalog is down: 100% ünïcode, try later"
	f := w.startGRPC(t, &fault.GRPC{ErrorRate: 1, Status: 14, Message: msg})
	c := testpb.NewTestServiceClient(w.conn(t))
	for i := range 50 {
		err := unary(context.Background(), c, i)
		st, _ := status.FromError(err)
		if st.Code() != codes.Unavailable || st.Message() != msg {
			t.Fatalf("call %d: %v %q, want UNAVAILABLE %q", i, st.Code(), st.Message(), msg)
		}
	}
	if c := f.Counters(); c.Requests != 50 || c.Errored != 50 {
		t.Errorf("counters %+v", c)
	}
}

func TestGRPCErrorRate(t *testing.T) {
	w := newGRPCLab(t)
	w.startGRPC(t, &fault.GRPC{ErrorRate: 0.5, Status: 8})
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
	w := newGRPCLab(t)
	cc := w.conn(t)
	c := testpb.NewTestServiceClient(cc)
	ctx := context.Background()

	f := w.startGRPC(t, &fault.GRPC{ErrorRate: 1, Status: 13, Exclude: []string{"grpc.testing.TestService"}})
	if err := unary(ctx, c, 1); err != nil {
		t.Errorf("excluded service: %v", err)
	}
	f.stop()

	f = w.startGRPC(t, &fault.GRPC{ErrorRate: 1, Status: 13, Methods: []string{"/grpc.testing.TestService/Empty*"}})
	if err := unary(ctx, c, 2); err != nil {
		t.Errorf("unmatched method: %v", err)
	}
	if _, err := c.EmptyCall(ctx, &testpb.Empty{}); status.Code(err) != codes.Internal {
		t.Errorf("matched method: %v, want INTERNAL", err)
	}
	f.stop()

	w.startGRPC(t, &fault.GRPC{ErrorRate: 1, Status: 7, Metadata: []fault.HeaderMatch{{Name: "x-tenant", Value: "blue"}}})
	if err := unary(ctx, c, 3); err != nil {
		t.Errorf("metadata not matching: %v", err)
	}
	blue := metadata.AppendToOutgoingContext(ctx, "x-tenant", "blue")
	if err := unary(blue, c, 4); status.Code(err) != codes.PermissionDenied {
		t.Errorf("metadata matching: %v, want PERMISSION_DENIED", err)
	}
}

func TestGRPCHealthAndReflectionUnlessMatched(t *testing.T) {
	w := newGRPCLab(t)
	w.startGRPC(t, &fault.GRPC{ErrorRate: 1, Status: 14, Methods: []string{"/grpc.testing.TestService/*"}})
	cc := w.conn(t)
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
	w := newGRPCLab(t)
	w.startGRPC(t, &fault.GRPC{Delay: delayed(100*time.Millisecond, 20*time.Millisecond)})
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
	w := newGRPCLab(t)
	direct := grpcObservation(t, testpb.NewTestServiceClient(w.conn(t)))
	f := w.startGRPC(t, &fault.GRPC{})
	proxied := grpcObservation(t, testpb.NewTestServiceClient(w.conn(t)))
	if !reflect.DeepEqual(direct, proxied) {
		t.Errorf("direct %v\nproxied %v", direct, proxied)
	}
	if c := f.Counters(); c.Requests != 4 {
		t.Errorf("the proxy saw %d calls, want 4", c.Requests)
	}
	t.Logf("%v", proxied)
}

func TestH2CFidelity(t *testing.T) {
	w := newGRPCLab(t)
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	observe := func() map[string]string {
		c := &http.Client{Transport: &http.Transport{Protocols: &protos, DialContext: w.dial},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		defer c.CloseIdleConnections()
		o := map[string]string{}
		for _, path := range []string{"/echo?x=1", "/chunked", "/trailers", "/download?n=5242880", "/status/204", "/redirect", "/sse"} {
			req, _ := http.NewRequest("GET", w.url+path, nil)
			req.Host = "catalog.example" // direct and proxied URLs differ on loopback
			req.Header.Set("X-Custom", "v")
			resp, b := roundTrip(t, c, req)
			if resp.ProtoMajor != 2 {
				t.Fatalf("%s went over %s", path, resp.Proto)
			}
			o[path] = describe(resp, b) + " " + string(b[:min(len(b), 200)])
		}
		req, _ := http.NewRequest("POST", w.url+"/upload", io.LimitReader(&pattern{}, 5<<20))
		resp, b := roundTrip(t, c, req)
		o["upload"] = describe(resp, b) + string(b)
		return o
	}
	direct := observe()
	f := w.start(t, &fault.HTTP{})
	proxied := observe()
	for k := range direct {
		if direct[k] != proxied[k] {
			t.Errorf("%s differs:\n direct:  %s\n proxied: %s", k, direct[k], proxied[k])
		}
	}
	if c := f.Counters(); c.Requests != 8 {
		t.Errorf("the proxy saw %d requests, want 8", c.Requests)
	}
}

// goAwayObservation opens a bidi stream, gracefully stops the server (a
// GOAWAY), and records what the client sees: the open stream finishes,
// a new call fails.
func goAwayObservation(t *testing.T, w *grpcLab) string {
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
	direct := goAwayObservation(t, newGRPCLab(t))
	w := newGRPCLab(t)
	w.startGRPC(t, &fault.GRPC{})
	proxied := goAwayObservation(t, w)
	if direct != proxied {
		t.Errorf("GOAWAY differs:\n direct:  %s\n proxied: %s", direct, proxied)
	}
	t.Log(proxied)
}

// BenchmarkGRPCPassThrough is for profiling the relay (make bench has the
// numbers that count): unary calls, 50 at a time on one connection.
func BenchmarkGRPCPassThrough(b *testing.B) {
	w := newGRPCLab(b)
	w.startGRPC(b, &fault.GRPC{})
	c := testpb.NewTestServiceClient(w.conn(b))
	req := &testpb.SimpleRequest{Payload: seq(1)}
	b.SetParallelism(25)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.UnaryCall(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// A fault's end releases the calls it is holding at once, on their open
// connection: the delay was the fault's, and the fault is over.
func TestGRPCFaultEndReleasesDelayedCalls(t *testing.T) {
	w := newGRPCLab(t)
	f := w.startGRPC(t, &fault.GRPC{Delay: delayed(time.Minute, 0)})
	c := testpb.NewTestServiceClient(w.conn(t))
	done := make(chan error, 3)
	for i := range 3 {
		go func() { done <- unary(context.Background(), c, i) }()
	}
	for f.Counters().Delayed < 3 {
		time.Sleep(5 * time.Millisecond)
	}
	go f.stop()
	for range 3 {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("a held call after the fault ended: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a held call was still held 10 s after the fault ended (its delay: a minute)")
		}
	}
}
