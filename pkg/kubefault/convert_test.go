package kubefault

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/faultline-dev/faultline/pkg/fault"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

func web() *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
}

func TestRequestConvertsGoDurations(t *testing.T) {
	s := Spec{Selector: web(), Duration: "1m", HTTP: map[string]any{"port": 8080,
		"phases": []any{map[string]any{"duration": "10s", "averageDelay": "300ms", "errorRate": 1, "errorCode": 429, "errorHeaders": map[string]any{"Retry-After": "2"}}},
	}}
	req, spec, err := s.Request()
	if err != nil {
		t.Fatal(err)
	}
	if req.GetDuration().AsDuration() != time.Minute || spec.Fault.(*fault.HTTP).Timeline.Length() != 10*time.Second {
		t.Errorf("request %v", req)
	}
	tcp := Spec{Selector: web(), Duration: "30s", TCP: map[string]any{"port": 6379,
		"downstream": []any{map[string]any{"latency": map[string]any{"latency": "50ms", "jitter": "10ms"}, "toxicity": 0.5}},
		"tls":        map[string]any{"serverNames": []any{"*.pay.test"}, "handshakeDelay": "1.5s"}}}
	_, spec, err = tcp.Request()
	if err != nil {
		t.Fatal(err)
	}
	f := spec.Fault.(*fault.TCP)
	if d := f.Downstream[0]; d.Latency != 50*time.Millisecond || d.Jitter != 10*time.Millisecond || d.Toxicity != 0.5 || f.TLS.HandshakeDelay != 1500*time.Millisecond {
		t.Errorf("tcp fault %+v tls %+v", f.Downstream, f.TLS)
	}
}

func TestRequestRefusalsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		s    Spec
		want string
	}{
		{Spec{Selector: web(), Duration: "soon", HTTP: map[string]any{"port": 80}}, `spec.duration "soon" is not a duration`},
		{Spec{Selector: web(), Duration: "30s"}, "spec: give one fault: http, grpc, tcp or network"},
		{Spec{Selector: web(), Duration: "30s", HTTP: map[string]any{"port": 80}, Network: map[string]any{}}, "give one fault of http, grpc, tcp and network, not 2"},
		{Spec{Duration: "30s", HTTP: map[string]any{"port": 80}}, "spec: give selector or service"},
		{Spec{Selector: web(), Duration: "30s", HTTP: map[string]any{"port": 80, "errorRate": 2, "errorCode": 500}}, "spec.http: errorRate must be in the range [0, 1], got 2"},
		{Spec{Selector: web(), Duration: "30s", HTTP: map[string]any{"port": 80, "averageDelay": "fast"}}, `spec.http.averageDelay "fast" is not a duration`},
		{Spec{Selector: web(), Duration: "30s", HTTP: map[string]any{"port": 80, "teleport": true}}, `spec.http: unknown field "teleport"`},
		{Spec{Selector: web(), Duration: "30s", TCP: map[string]any{"port": 6379, "downstream": []any{map[string]any{"latency": map[string]any{"latency": 5}}}}}, "spec.tcp.downstream[0].latency.latency must be a duration"},
		{Spec{Selector: web(), Duration: "30s", TCP: map[string]any{"port": 443, "tls": map[string]any{"serverNames": []any{"*"}, "reset": map[string]any{}}}}, `spec.tcp: tls.serverNames[0]: "*" matches no server name`},
		{Spec{Selector: web(), Duration: "30s", HTTP: map[string]any{"port": 80}, Lease: "100ms"}, "spec.lease must be from 1s to 1h, got 100ms"},
		{Spec{Selector: web(), Duration: "30s", HTTP: map[string]any{"port": 80}, Lease: "soon"}, `spec.lease "soon" is not a duration`},
		{Spec{Selector: web(), Duration: "30s", HTTP: map[string]any{"port": 80}, Count: "many"}, `spec.count: count must be a whole number or a percentage such as 50%, got "many"`},
		{Spec{Selector: web(), Duration: "2s", HTTP: map[string]any{"port": 80, "phases": []any{map[string]any{"duration": "5s"}}}}, "spec.http: phases last 5s in all, longer than the fault's duration 2s"},
	} {
		_, _, err := tc.s.Request()
		if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want InvalidArgument %q", tc.s, err, tc.want)
		}
	}
}

func TestCRDCoversTheFaultModel(t *testing.T) {
	crd := CRD()
	root := crd["spec"].(Schema)["versions"].([]any)[0].(Schema)["schema"].(Schema)["openAPIV3Schema"].(Schema)
	spec := root["properties"].(Schema)["spec"].(Schema)["properties"].(Schema)
	for _, k := range []string{"http", "grpc", "tcp", "network"} {
		if spec[k] == nil {
			t.Errorf("spec.%s missing", k)
		}
	}
	http := spec["http"].(Schema)["properties"].(Schema)
	if d := http["averageDelay"].(Schema); d["type"] != "string" || d["pattern"] != goDurationPattern {
		t.Errorf("averageDelay schema %v", d)
	}
	if p := http["port"].(Schema); p["minimum"] != int64(1) || p["maximum"] != int64(65535) {
		t.Errorf("port schema %v", p)
	}
	if r := http["errorRate"].(Schema); r["maximum"] != 1 {
		t.Errorf("errorRate schema %v", r)
	}
	toxic := spec["tcp"].(Schema)["properties"].(Schema)["upstream"].(Schema)["items"].(Schema)
	rules := toxic["x-kubernetes-validations"].([]any)
	if len(rules) != 1 || !strings.Contains(rules[0].(Schema)["message"].(string), "give at most one of latency, bandwidth, timeout") {
		t.Errorf("toxic oneof rule %v", rules)
	}
}

// TestSetFaultRoundTrips: a request's fault through a Fault's spec (as the
// gateway writes it) and back (as the node reads it) is the same fault.
func TestSetFaultRoundTrips(t *testing.T) {
	for _, req := range []*pb.InjectRequest{
		{Fault: &pb.InjectRequest_Http{Http: &pb.HTTPFault{Port: 8080, AverageDelay: durationpb.New(300 * time.Millisecond), DelayVariation: durationpb.New(20 * time.Millisecond),
			ErrorRate: 0.5, ErrorCode: 503, Exclude: "/health"}}},
		{Fault: &pb.InjectRequest_Tcp{Tcp: &pb.TcpFault{Port: 6379, Downstream: []*pb.Toxic{
			{Toxicity: proto.Float64(0.5), Kind: &pb.Toxic_LimitData{LimitData: &pb.LimitDataToxic{Bytes: 1 << 40}}},
			{Kind: &pb.Toxic_Slicer{Slicer: &pb.SlicerToxic{AverageSize: 64, SizeVariation: 8, Delay: durationpb.New(1500 * time.Microsecond)}}},
		}}}},
	} {
		s := Spec{Selector: web(), Duration: "30s"}
		if err := s.SetFault(req); err != nil {
			t.Fatal(err)
		}
		back, _, err := s.Request()
		if err != nil {
			t.Fatalf("%+v: %v", s, err)
		}
		back.Duration = nil
		if !proto.Equal(back, req) {
			t.Errorf("round trip of %v gave %v (spec %+v)", req, back, s)
		}
	}
}
