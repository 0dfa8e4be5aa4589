package fault

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

type req struct {
	method, path string
	header       map[string]string
	grpc         bool
}

func (r req) Method() string { return r.method }
func (r req) Path() string   { return r.path }
func (r req) GRPC() bool     { return r.grpc }
func (r req) Header(name string) (string, bool) {
	for k, v := range r.header {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

func inject(f any, d time.Duration) *pb.InjectRequest {
	r := &pb.InjectRequest{Duration: durationpb.New(d)}
	switch f := f.(type) {
	case *pb.HTTPFault:
		r.Fault = &pb.InjectRequest_Http{Http: f}
	case *pb.GrpcFault:
		r.Fault = &pb.InjectRequest_Grpc{Grpc: f}
	case *pb.NetworkFault:
		r.Fault = &pb.InjectRequest_Network{Network: f}
	case *pb.TcpFault:
		r.Fault = &pb.InjectRequest_Tcp{Tcp: f}
	}
	return r
}

func ms(n int) *durationpb.Duration { return durationpb.New(time.Duration(n) * time.Millisecond) }
func f64(v float64) *float64        { return &v }

func TestFromProtoRefusals(t *testing.T) {
	for _, tc := range []struct {
		req  *pb.InjectRequest
		want string
	}{
		{inject(&pb.HTTPFault{Port: 80}, 500*time.Millisecond), "duration must be at least 1s, got 500ms"},
		{inject(&pb.HTTPFault{Port: 80}, 25*time.Hour), "duration must be at most 24h0m0s, got 25h0m0s"},
		{&pb.InjectRequest{Duration: durationpb.New(time.Minute)}, "fault: no fault given"},
		{inject(&pb.HTTPFault{}, time.Minute), "port must be in 1-65535, got 0"},
		{inject(&pb.HTTPFault{Port: 70000}, time.Minute), "port must be in 1-65535, got 70000"},
		{inject(&pb.HTTPFault{Port: 80, ErrorRate: 2, ErrorCode: 500}, time.Minute), "errorRate must be in the range [0, 1], got 2"},
		{inject(&pb.HTTPFault{Port: 80, ErrorRate: 0.1}, time.Minute), "errorCode must be an HTTP status in 200-599 when errorRate > 0, got 0"},
		{inject(&pb.HTTPFault{Port: 80, ErrorCode: 1000}, time.Minute), "errorCode must be an HTTP status in 200-599, got 1000"},
		{inject(&pb.HTTPFault{Port: 80, ErrorRate: 1, ErrorCode: 101}, time.Minute), "errorCode 101 is an interim response (1xx), not an answer"},
		{inject(&pb.HTTPFault{Port: 80, ErrorRate: 1, ErrorCode: 4294967295}, time.Minute), "errorCode must be an HTTP status in 200-599, got 2147483647"},
		{inject(&pb.HTTPFault{Port: 80, ErrorRate: 1, ErrorCode: 204, ErrorBody: "x"}, time.Minute), "errorCode 204 cannot carry a body"},
		{inject(&pb.HTTPFault{Port: 80, AverageDelay: ms(1000), DelayVariation: ms(2000)}, time.Minute), "delayVariation (2s) must not be greater than averageDelay (1s)"},
		{inject(&pb.HTTPFault{Port: 80, AverageDelay: ms(-1)}, time.Minute), "averageDelay must not be negative"},
		{inject(&pb.HTTPFault{Port: 80, DelayRate: f64(-1)}, time.Minute), "delayRate must be in the range [0, 1], got -1"},
		{inject(&pb.HTTPFault{Port: 80, Exclude: "health"}, time.Minute), `exclude: "health" is not a path`},
		{inject(&pb.HTTPFault{Port: 80, Match: &pb.HTTPMatch{Paths: []string{"/a*b"}}}, time.Minute), "* is only allowed at the end"},
		{inject(&pb.HTTPFault{Port: 80, ErrorHeaders: map[string]string{"Content-Length": "1"}}, time.Minute), "Content-Length is set by faultline"},
		{inject(&pb.HTTPFault{Port: 80, ErrorHeaders: map[string]string{"X": "a\r\nb"}}, time.Minute), "must not contain CR, LF or NUL"},
		{inject(&pb.HTTPFault{Port: 80, DelayMode: 7}, time.Minute), "delayMode 7 is not one of request, response"},
		{inject(&pb.GrpcFault{Port: 9000, ErrorRate: 1}, time.Minute), "statusCode must be a gRPC status code in 1-16 when errorRate > 0, got 0"},
		{inject(&pb.GrpcFault{Port: 9000, StatusCode: 17}, time.Minute), "statusCode must be a gRPC status code in 1-16, got 17"},
		{inject(&pb.GrpcFault{Port: 9000, Exclude: "a/b"}, time.Minute), `exclude: "a/b" is not a fully-qualified service name`},
		{inject(&pb.GrpcFault{Port: 9000, Methods: []string{"Get"}}, time.Minute), `method "Get" must be a full method name`},
		{inject(&pb.NetworkFault{Protocol: "icmp"}, time.Minute), `protocol must be tcp, udp, or empty for all, got "icmp"`},
		{inject(&pb.NetworkFault{DropRate: f64(1.5)}, time.Minute), "dropRate must be in the range [0, 1], got 1.5"},
		{inject(&pb.NetworkFault{Protocol: "udp", ResetRate: 0.5}, time.Minute), "resetRate applies to TCP connections"},
		{inject(&pb.TcpFault{Port: 6379}, time.Minute), "a tcp fault needs at least one toxic"},
		{inject(&pb.TcpFault{Upstream: []*pb.Toxic{{Kind: &pb.Toxic_LimitData{LimitData: &pb.LimitDataToxic{Bytes: 1}}}}}, time.Minute), "port must be in 1-65535, got 0"},
		{inject(&pb.TcpFault{Port: 6379, Upstream: []*pb.Toxic{{}}}, time.Minute), "upstream[0]: give one toxic"},
		{inject(&pb.TcpFault{Port: 6379, Downstream: []*pb.Toxic{{Kind: &pb.Toxic_Bandwidth{Bandwidth: &pb.BandwidthToxic{}}}}}, time.Minute), "downstream[0].bandwidth.rate must be a positive number of bytes per second, got 0"},
		{inject(&pb.TcpFault{Port: 6379, Downstream: []*pb.Toxic{{Toxicity: f64(-0.5), Kind: &pb.Toxic_LimitData{LimitData: &pb.LimitDataToxic{Bytes: 1}}}}}, time.Minute), "downstream[0].toxicity must be in the range [0, 1], got -0.5"},
		{inject(&pb.TcpFault{Port: 6379, Downstream: []*pb.Toxic{{Kind: &pb.Toxic_Latency{Latency: &pb.LatencyToxic{Latency: ms(10), Jitter: ms(20)}}}}}, time.Minute), "downstream[0].latency.jitter must be in [0, latency]"},
		{inject(&pb.TcpFault{Port: 6379, Downstream: []*pb.Toxic{{Kind: &pb.Toxic_SlowClose{SlowClose: &pb.SlowCloseToxic{Delay: ms(-5)}}}}}, time.Minute), "downstream[0].slow_close.delay must be positive"},
		{inject(&pb.TcpFault{Port: 6379, Downstream: []*pb.Toxic{{Kind: &pb.Toxic_Slicer{Slicer: &pb.SlicerToxic{AverageSize: 8, SizeVariation: 8}}}}}, time.Minute), "size_variation must be in [0, average_size)"},
		{&pb.InjectRequest{Id: "-bad", Duration: durationpb.New(time.Minute), Fault: &pb.InjectRequest_Network{Network: &pb.NetworkFault{}}}, `id "-bad" must be 1-63`},
	} {
		_, err := FromProto(tc.req)
		if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "invalid argument: ") {
			t.Errorf("%v: %v, want InvalidArgument %q", tc.req, err, tc.want)
		}
	}
}

func TestFromProtoDefaults(t *testing.T) {
	spec, err := FromProto(inject(&pb.HTTPFault{Port: 80, ErrorRate: 1, ErrorCode: 503, ErrorBody: "down",
		ErrorHeaders: map[string]string{"x-b": "2", "x-a": "1"}, Exclude: " /health, /ready ,"}, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	h := spec.Fault.(*HTTP)
	if h.Delay.Rate != 1 || len(h.Exclude) != 2 || h.Exclude[1] != "/ready" || !h.ResetsConnections() {
		t.Errorf("defaults: %+v", h)
	}
	a := h.Decide(req{method: "GET", path: "/x"}).Answer
	if a == nil || a.Status != 503 || string(a.Body) != "down" || len(a.Header) != 3 || a.Header[0] != (HeaderField{"X-A", "1"}) ||
		a.Header[2] != (HeaderField{"Content-Type", "text/plain; charset=utf-8"}) {
		t.Errorf("answer %+v", a)
	}
	spec, err = FromProto(inject(&pb.NetworkFault{Protocol: "ALL"}, time.Minute))
	if n := spec.Fault.(*Network); err != nil || n.DropRate != 1 || n.Protocol != ProtocolAll {
		t.Errorf("network defaults: %+v %v; want dropRate 1 (as xk6-disruptor), all protocols", n, err)
	}
}

func TestHTTPDecide(t *testing.T) {
	r := req{method: "GET", path: "/api/x", header: map[string]string{"X-Env": "prod"}}
	f := &HTTP{Port: 80, Delay: Delay{Average: 100 * time.Millisecond, Variation: 20 * time.Millisecond, Rate: 1}, ErrorRate: 1, ErrorStatus: 503}
	for range 1000 {
		d := f.Decide(r)
		if !d.Matched || d.Answer == nil || d.Delay < 80*time.Millisecond || d.Delay > 120*time.Millisecond {
			t.Fatalf("decision %+v", d)
		}
	}
	f.ErrorRate, f.Delay.Rate = 0, 0
	if d := f.Decide(r); d.Answer != nil || d.Delay != 0 || !d.Matched {
		t.Errorf("rates 0: decision %+v", d)
	}
	for _, tc := range []struct {
		match   Match
		exclude []string
		want    bool
	}{
		{Match{Headers: []HeaderMatch{{Name: "x-env", Value: "prod"}}}, nil, true},
		{Match{Headers: []HeaderMatch{{Name: "X-Env", Value: "Prod"}}}, nil, false},
		{Match{Headers: []HeaderMatch{{Name: "X-Env"}}}, nil, true},
		{Match{Paths: []string{"/api/*"}, Methods: []string{"GET"}}, nil, true},
		{Match{Paths: []string{"/api"}}, nil, false},
		{Match{Methods: []string{"POST"}}, nil, false},
		{Match{}, []string{"/API/X"}, false},
	} {
		f.Match, f.Exclude = tc.match, tc.exclude
		if got := f.Decide(r).Matched; got != tc.want {
			t.Errorf("match %+v exclude %v: matched %v, want %v", tc.match, tc.exclude, got, tc.want)
		}
	}
}

func TestGRPCDecide(t *testing.T) {
	f := &GRPC{Port: 9000, ErrorRate: 1, Status: 14, Message: "later", Exclude: []string{"grpc.health.v1.Health"},
		Methods: []string{"/shop.Orders/Create*"}, Metadata: []HeaderMatch{{Name: "tenant", Value: "blue"}}}
	call := req{method: "POST", path: "/shop.Orders/CreateOrder", header: map[string]string{"Tenant": "blue"}, grpc: true}
	if d := f.Decide(call); d.Answer == nil || d.Answer.GRPCStatus != 14 || d.Answer.GRPCMessage != "later" || d.Answer.Status != 200 {
		t.Errorf("matching call: %+v", d)
	}
	for _, r := range []req{
		{path: "/shop.Orders/CreateOrder", header: map[string]string{"Tenant": "blue"}}, // not gRPC
		{path: "/grpc.health.v1.Health/Check", grpc: true, header: map[string]string{"Tenant": "blue"}},
		{path: "/shop.Orders/Get", grpc: true, header: map[string]string{"Tenant": "blue"}},
		{path: "/shop.Orders/CreateOrder", grpc: true, header: map[string]string{"Tenant": "red"}},
	} {
		if d := f.Decide(r); d.Matched {
			t.Errorf("%+v: matched", r)
		}
	}
	if !glob("/a/*/c*", "/a/b/cd") || glob("/a/*", "/b/a") || !glob("*", "") {
		t.Error("glob")
	}
}

func TestClaims(t *testing.T) {
	http80 := Claim{Proxy: true, Port: 80}
	for _, tc := range []struct {
		a, b Claim
		want bool
	}{
		{http80, http80, true},
		{http80, Claim{Proxy: true, Port: 81}, false},
		{http80, Claim{Port: 80, Protocol: ProtocolTCP}, true},
		{http80, Claim{Port: 80, Protocol: ProtocolUDP}, false},
		{http80, Claim{}, true}, // a network fault on all ports and protocols
		{Claim{Port: 53, Protocol: ProtocolUDP}, Claim{Port: 53, Protocol: ProtocolTCP}, false},
		{Claim{Port: 53, Protocol: ProtocolUDP}, Claim{Protocol: ProtocolAll}, true},
		{Claim{Port: 53}, Claim{Port: 54}, false},
	} {
		if got := tc.a.Collides(tc.b); got != tc.want || tc.b.Collides(tc.a) != tc.want {
			t.Errorf("%v vs %v: %v, want %v (both ways)", tc.a, tc.b, got, tc.want)
		}
	}
	if s := (Claim{Port: 53, Protocol: ProtocolUDP}).String(); s != "port 53 (udp)" {
		t.Errorf("describe: %q", s)
	}
}

func TestDelayDrawIsUniform(t *testing.T) {
	d := Delay{Average: 100 * time.Millisecond, Variation: 20 * time.Millisecond, Rate: 1}
	var sum time.Duration
	const n = 20000
	for range n {
		x := d.draw()
		if x < 80*time.Millisecond || x > 120*time.Millisecond {
			t.Fatalf("delay %s outside [80ms, 120ms]", x)
		}
		sum += x
	}
	if mean := sum / n; mean < 99500*time.Microsecond || mean > 100500*time.Microsecond {
		t.Errorf("mean %s, want 100ms", mean)
	}
}

func TestFailFirst(t *testing.T) {
	spec, err := FromProto(inject(&pb.HTTPFault{Port: 80, ErrorCode: 503, FailFirst: &pb.FailFirst{Attempts: 2}}, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	h := spec.Fault.(*HTTP)
	var got []bool
	for _, path := range []string{"/a", "/a", "/b", "/a", "/b", "/b", "/a"} {
		got = append(got, h.Decide(req{method: "GET", path: path}).Answer != nil)
	}
	if want := []bool{true, true, true, false, true, false, false}; !slices.Equal(got, want) {
		t.Errorf("by method and path: errors %v, want %v", got, want)
	}
	if h.Decide(req{method: "POST", path: "/a"}).Answer == nil {
		t.Error("POST /a is a logical request of its own")
	}

	spec, err = FromProto(inject(&pb.HTTPFault{Port: 80, ErrorCode: 503, FailFirst: &pb.FailFirst{Attempts: 1, KeyHeader: "Idempotency-Key"}}, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	h = spec.Fault.(*HTTP)
	k1 := map[string]string{"idempotency-key": "k1"}
	got = got[:0]
	for _, r := range []req{{method: "POST", path: "/x", header: k1}, {method: "POST", path: "/y", header: k1}, {method: "POST", path: "/x"}, {method: "POST", path: "/x"}} {
		got = append(got, h.Decide(r).Answer != nil)
	}
	if want := []bool{true, false, true, true}; !slices.Equal(got, want) {
		t.Errorf("by key header: errors %v, want %v (no key: every attempt fails)", got, want)
	}

	spec, err = FromProto(inject(&pb.GrpcFault{Port: 9000, StatusCode: 14, FailFirst: &pb.FailFirst{Attempts: 2}}, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	g := spec.Fault.(*GRPC)
	got = got[:0]
	for range 3 {
		got = append(got, g.Decide(req{method: "POST", path: "/pkg.S/Get", grpc: true}).Answer != nil)
	}
	if want := []bool{true, true, false}; !slices.Equal(got, want) {
		t.Errorf("gRPC: errors %v, want %v", got, want)
	}

	for _, tc := range []struct {
		f    any
		want string
	}{
		{&pb.HTTPFault{Port: 80, ErrorCode: 503, ErrorRate: 0.5, FailFirst: &pb.FailFirst{Attempts: 2}}, "give errorRate or failFirst, not both"},
		{&pb.HTTPFault{Port: 80, FailFirst: &pb.FailFirst{Attempts: 2}}, "errorCode must be an HTTP status in 200-599 with failFirst"},
		{&pb.HTTPFault{Port: 80, ErrorCode: 503, FailFirst: &pb.FailFirst{}}, "failFirst.attempts must be in 1-100, got 0"},
		{&pb.HTTPFault{Port: 80, ErrorCode: 503, FailFirst: &pb.FailFirst{Attempts: 1000}}, "failFirst.attempts must be in 1-100, got 101"},
		{&pb.HTTPFault{Port: 80, ErrorCode: 503, FailFirst: &pb.FailFirst{Attempts: 1, KeyHeader: "bad key"}}, `failFirst.keyHeader: "bad key" is not a valid header name`},
		{&pb.GrpcFault{Port: 9000, FailFirst: &pb.FailFirst{Attempts: 1}}, "statusCode must be a gRPC status code in 1-16 with failFirst"},
	} {
		if _, err := FromProto(inject(tc.f, time.Minute)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.f, err, tc.want)
		}
	}
}

func TestRewriteRefusals(t *testing.T) {
	body := "x"
	empty := ""
	for _, tc := range []struct {
		rw   *pb.ResponseRewrite
		want string
	}{
		{&pb.ResponseRewrite{}, "rewrite: give a status, headers to set or remove, or a body"},
		{&pb.ResponseRewrite{Status: 99}, "rewrite.status must be an HTTP status in 200-599, got 99"},
		{&pb.ResponseRewrite{Status: 204, Body: &body}, "rewrite.status 204 cannot carry a body"},
		{&pb.ResponseRewrite{Status: 304}, `rewrite.status 304 carries no body: set rewrite.body to ""`},
		{&pb.ResponseRewrite{SetHeaders: map[string]string{"Content-Length": "3"}}, "rewrite.setHeaders: Content-Length is set by faultline"},
		{&pb.ResponseRewrite{RemoveHeaders: []string{"transfer-encoding"}}, "rewrite.removeHeaders: Transfer-Encoding is set by faultline"},
		{&pb.ResponseRewrite{SetHeaders: map[string]string{"X": "a\nb"}}, "must not contain CR, LF or NUL"},
	} {
		if _, err := FromProto(inject(&pb.HTTPFault{Port: 80, Rewrite: tc.rw}, time.Minute)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.rw, err, tc.want)
		}
	}
	if _, err := FromProto(inject(&pb.HTTPFault{Port: 80, Rewrite: &pb.ResponseRewrite{Status: 204, Body: &empty}}, time.Minute)); err != nil {
		t.Errorf("204 with an empty body: %v", err)
	}
}
