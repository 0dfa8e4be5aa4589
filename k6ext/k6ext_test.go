// Package k6ext_test runs disruptor.js in the k6 model (internal/testkit/k6model)
// against a fake gateway: a real gRPC server with reflection whose
// answers the tests choose. The end-to-end tests, against the real
// gateway, faultlined and containers, are in test/local.
package k6ext_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/faultline-dev/faultline/internal/testkit/k6model"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// fakeGateway records requests and answers with what the test set.
type fakeGateway struct {
	pb.UnimplementedGatewayServer
	mu       sync.Mutex
	requests []proto.Message
	inject   *pb.GatewayInjectResponse
	err      error
}

func (f *fakeGateway) record(r proto.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, r)
}

func (f *fakeGateway) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		return ""
	}
	b, _ := protojson.MarshalOptions{}.Marshal(f.requests[len(f.requests)-1])
	var compact bytes.Buffer
	_ = json.Compact(&compact, b) // protojson varies its spacing on purpose
	return compact.String()
}

func (f *fakeGateway) answer() (*pb.GatewayInjectResponse, error) {
	if f.err != nil {
		return nil, f.err
	}
	if f.inject != nil {
		return f.inject, nil
	}
	return &pb.GatewayInjectResponse{Total: &pb.Counters{Requests: 10, Unmatched: 2, Delayed: 8, Errored: 3}}, nil
}

func (f *fakeGateway) Targets(_ context.Context, r *pb.TargetsRequest) (*pb.TargetsResponse, error) {
	f.record(r)
	if f.err != nil {
		return nil, f.err
	}
	return &pb.TargetsResponse{Targets: []*pb.TargetInfo{{Name: "catalog-1"}, {Name: "catalog-2"}}}, nil
}

func (f *fakeGateway) InjectHTTP(_ context.Context, r *pb.InjectHTTPRequest) (*pb.GatewayInjectResponse, error) {
	f.record(r)
	return f.answer()
}

func (f *fakeGateway) InjectGrpc(_ context.Context, r *pb.InjectGrpcRequest) (*pb.GatewayInjectResponse, error) {
	f.record(r)
	return f.answer()
}

func (f *fakeGateway) InjectNetwork(_ context.Context, r *pb.InjectNetworkRequest) (*pb.GatewayInjectResponse, error) {
	f.record(r)
	if f.err != nil {
		return nil, f.err
	}
	return &pb.GatewayInjectResponse{Total: &pb.Counters{PacketsSeen: 100, PacketsDropped: 40, ConnectionsRefused: 5}}, nil
}

func (f *fakeGateway) InjectTcp(_ context.Context, r *pb.InjectTcpRequest) (*pb.GatewayInjectResponse, error) {
	f.record(r)
	if f.err != nil {
		return nil, f.err
	}
	return &pb.GatewayInjectResponse{Total: &pb.Counters{TcpConnections: 7, TcpConnectionsToxic: 5, TcpConnectionsCut: 1}}, nil
}

func (f *fakeGateway) TerminatePods(_ context.Context, r *pb.TerminatePodsRequest) (*pb.TerminatePodsResponse, error) {
	f.record(r)
	return &pb.TerminatePodsResponse{Terminated: []string{"catalog-2"}}, nil
}

func (f *fakeGateway) Status(_ context.Context, r *pb.StatusRequest) (*pb.StatusResponse, error) {
	f.record(r)
	if f.err != nil {
		return nil, f.err
	}
	c := &pb.Counters{Requests: 12, Delayed: 10, Errored: 4, UpstreamErrors: 1}
	return &pb.StatusResponse{
		Faults: []*pb.TargetResult{{
			Target: &pb.TargetInfo{Name: "catalog-1", Namespace: "shop", Node: "n1"},
			Fault: &pb.FaultStatus{Id: "gw-1-0", Kind: "http", Port: 8080, State: pb.FaultState_FAULT_STATE_ACTIVE,
				Expires: timestamppb.New(time.Now().Add(30 * time.Second)), Counters: c},
		}},
		Total:       c,
		Unreachable: []string{"node n2: no ready faultlined pod"},
	}, nil
}

func startFake(t *testing.T) (*fakeGateway, string) {
	return startFakeReflect(t, true)
}

// startFakeReflect starts a fake gateway, with or without reflection.
func startFakeReflect(t *testing.T, withReflection bool) (*fakeGateway, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeGateway{}
	s := grpc.NewServer()
	pb.RegisterGatewayServer(s, f)
	if withReflection {
		reflection.Register(s)
	}
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return f, ln.Addr().String()
}

// run runs body as the default function of a script importing the
// library, in a new VU; it returns the model and the thrown error.
func run(t *testing.T, env map[string]string, body string) (*k6model.Model, error) {
	t.Helper()
	lib, err := filepath.Abs("disruptor.js")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "script.js")
	src := fmt.Sprintf("import { PodDisruptor, ServiceDisruptor } from %q;\nexport default function () {\n%s\n}\n", lib, body)
	if err := os.WriteFile(script, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	m := k6model.New(env)
	vu, err := m.NewVU(context.Background(), script)
	if err != nil {
		t.Fatal(err)
	}
	defer vu.Close()
	return m, vu.Call("default")
}

const pod = `const d = new PodDisruptor({namespace: 'shop', select: {labels: {app: 'catalog'}}});`

func TestThrows(t *testing.T) {
	_, addr := startFake(t)
	env := map[string]string{"FAULTLINE_ADDR": addr}
	for _, tc := range []struct {
		name, body, want string
	}{
		// xk6-disruptor's error cases (its api_test.go).
		{"missing duration", pod + `d.injectHTTPFaults({errorRate: 0.1, errorCode: 500});`, "HTTPFault and duration are required"},
		{"duration without unit", pod + `d.injectHTTPFaults({errorRate: 0.1, errorCode: 500}, "1");`, `invalid duration argument: time: missing unit in duration "1"`},
		{"misspelled http field", pod + `d.injectHTTPFaults({error: 500}, "1s");`, "invalid fault argument: unknown field error in struct HTTPFault"},
		{"misspelled grpc field", pod + `d.injectGrpcFaults({port: 9000, status: 14}, "1s");`, "invalid fault argument: unknown field status in struct GrpcFault"},
		{"unknown option", `new PodDisruptor({namespace: 'shop'}, {timeout: '1s'});`, "error creating PodDisruptor: invalid PodDisruptorOptions: unknown field timeout in struct PodDisruptorOptions"},
		{"labels at top level", `new PodDisruptor({namespace: 'shop', labels: {app: 'x'}});`, "error creating PodDisruptor: invalid PodSelector: unknown field labels in struct PodSelectorSpec"},
		{"count without percent", pod + `d.terminatePods({count: '100'});`, "count is not a valid percentage: 100"},
		{"empty termination", pod + `d.terminatePods({});`, "count is not a valid percentage: "},
		{"no termination", pod + `d.terminatePods();`, "PodTermination fault is required"},
		{"service without namespace", `new ServiceDisruptor('catalog');`, "ServiceDisruptor constructor requires service and namespace parameters"},
		{"service no args", `new ServiceDisruptor();`, "ServiceDisruptor constructor requires service and namespace parameters"},
		{"service name not a string", `new ServiceDisruptor(1, 'shop');`, "invalid service name argument: expected string got int64"},
		{"namespace not a string", `new ServiceDisruptor('catalog', {});`, "invalid namespace argument: expected string got object"},
		{"empty service name", `new ServiceDisruptor('', 'shop');`, "must specify a service name"},
		{"empty namespace", `new ServiceDisruptor('catalog', '');`, "must specify a namespace"},
		{"null selector", `new PodDisruptor(null);`, "PodDisruptor constructor expects a non null PodSelector argument"},
		{"no selector", `new PodDisruptor();`, "PodDisruptor constructor expects a non null PodSelector argument"},
		{"empty selector", `new PodDisruptor({});`, "namespace, select and exclude attributes in pod selector cannot all be empty"},
		// Validation rules.
		{"errorRate above 1", pod + `d.injectHTTPFaults({errorRate: 1.5, errorCode: 500}, "1s");`, "invalid fault argument: error rate must be in the range [0.0, 1.0]"},
		{"errorRate negative", pod + `d.injectHTTPFaults({errorRate: -0.1, errorCode: 500}, "1s");`, "error rate must be in the range [0.0, 1.0]"},
		{"variation above average", pod + `d.injectHTTPFaults({averageDelay: '100ms', delayVariation: '200ms'}, "1s");`, "delayVariation must not be greater than averageDelay"},
		{"error code missing", pod + `d.injectHTTPFaults({errorRate: 0.1}, "1s");`, "error code must be a valid http error code"},
		{"grpc status 0", pod + `d.injectGrpcFaults({port: 9000, errorRate: 0.1}, "1s");`, "status code cannot be 0 (OK)"},
		{"duration under 1s", pod + `d.injectHTTPFaults({errorRate: 0.1, errorCode: 500}, "500ms");`, "duration must be at least one second"},
		{"duration not a duration", pod + `d.injectHTTPFaults({errorRate: 0.1, errorCode: 500}, "soon");`, `invalid duration argument: time: invalid duration "soon"`},
		{"duration object", pod + `d.injectHTTPFaults({errorRate: 0.1, errorCode: 500}, {});`, "invalid duration argument: expected string got object"},
		{"delay not a duration", pod + `d.injectHTTPFaults({averageDelay: 'slow'}, "1s");`, `invalid fault argument: time: invalid duration "slow"`},
		{"delayRate above 1", pod + `d.injectHTTPFaults({averageDelay: '1ms', delayRate: 2}, "1s");`, "delayRate must be in the range [0.0, 1.0]"},
		{"delayMode", pod + `d.injectHTTPFaults({averageDelay: '1ms', delayMode: 'later'}, "1s");`, `delayMode must be request or response, got "later"`},
		{"dropRate above 1", pod + `d.injectNetworkFaults({dropRate: 1.5}, "1s");`, "dropRate must be in the range [0.0, 1.0]"},
		{"resetRate negative", pod + `d.injectNetworkFaults({resetRate: -1}, "1s");`, "resetRate must be in the range [0.0, 1.0]"},
		{"network field", pod + `d.injectNetworkFaults({rate: 1}, "1s");`, "unknown field rate in struct NetworkFault"},
		{"network without duration", pod + `d.injectNetworkFaults({});`, "NetworkFault and duration are required"},
		{"grpc without duration", pod + `d.injectGrpcFaults({port: 9000});`, "GrpcFault and duration are required"},
		{"unknown inject option", pod + `d.injectHTTPFaults({averageDelay: '1ms'}, "1s", {proxy: 80});`, "invalid options argument: unknown field proxy in struct ProtocolFaultOptions"},
		{"fault not an object", pod + `d.injectHTTPFaults("fast", "1s");`, "invalid fault argument: expected value map[string]interface{} got string"},
		{"port out of range", pod + `d.injectHTTPFaults({port: 70000, averageDelay: '1ms'}, "1s");`, "port must be in 0-65535, got 70000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := run(t, env, tc.body)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestGatewayErrorsThrow(t *testing.T) {
	f, addr := startFake(t)
	env := map[string]string{"FAULTLINE_ADDR": addr}
	f.err = status.Error(codes.NotFound, `finding pods matching pods including(app=ghost), excluding() in namespace "shop": no pods found matching selector`)
	if _, err := run(t, env, pod+`d.injectHTTPFaults({averageDelay: '1ms'}, "1s");`); err == nil ||
		!strings.Contains(err.Error(), "error injecting fault: finding pods matching") || !strings.Contains(err.Error(), "no pods found matching selector") {
		t.Errorf("no match: %v", err)
	}
	if _, err := run(t, env, pod+`d.targets();`); err == nil || !strings.Contains(err.Error(), "error getting targets:") {
		t.Errorf("targets: %v", err)
	}
	f.err = nil
	f.inject = &pb.GatewayInjectResponse{Total: &pb.Counters{}, NoRequests: true}
	if _, err := run(t, env, pod+`d.injectHTTPFaults({averageDelay: '1ms'}, "1s");`); err == nil || !strings.Contains(err.Error(), "error injecting fault: disruptor did not receive any request") {
		t.Errorf("no requests: %v", err)
	}
	if _, err := run(t, map[string]string{"FAULTLINE_ADDR": "127.0.0.1:1"}, pod+`d.targets();`); err == nil || !strings.Contains(err.Error(), "cannot reach the faultline gateway at 127.0.0.1:1") {
		t.Errorf("no gateway: %v", err)
	}
}

func TestRequestsAndMetrics(t *testing.T) {
	f, addr := startFake(t)
	env := map[string]string{"FAULTLINE_ADDR": addr}
	m, err := run(t, env, pod+`
		d.injectHTTPFaults({average_delay: 900, delay_variation: '150ms', error_rate: 0.1, error_code: 503,
			error_body: 'down', error_headers: {'Content-Type': 'text/plain'}, exclude: '/health', port: 8080,
			match: {paths: ['/api/*'], methods: 'GET', headers: {'x-tenant': 'blue'}}}, '1m30s', {proxyPort: 8000});`)
	if err != nil {
		t.Fatal(err)
	}
	got := f.last()
	for _, want := range []string{`"duration":"90s"`, `"averageDelay":"0.900s"`, `"delayVariation":"0.150s"`, `"errorRate":0.1`, `"errorCode":503`,
		`"errorBody":"down"`, `"exclude":"/health"`, `"port":8080`, `"paths":["/api/*"]`, `"methods":["GET"]`, `{"name":"x-tenant","value":"blue"}`,
		`"namespace":"shop"`, `"app":"catalog"`} {
		if !strings.Contains(got, want) {
			t.Errorf("request %s lacks %s", got, want)
		}
	}
	if v := m.Metrics.Sum("faultline_requests", map[string]string{"kind": "http"}); v != 10 {
		t.Errorf("faultline_requests %v", v)
	}
	if v := m.Metrics.Sum("faultline_requests_faulted", map[string]string{"kind": "http"}); v != 8 {
		t.Errorf("faultline_requests_faulted %v", v)
	}
	if v := m.Metrics.Sum("faultline_requests_errored", map[string]string{"kind": "http"}); v != 3 {
		t.Errorf("faultline_requests_errored %v", v)
	}

	if _, err := run(t, env, `new ServiceDisruptor('catalog', 'shop', {injectTimeout: '30s'}).injectGrpcFaults({port: 'grpc', statusCode: 14, errorRate: 1}, 2000);`); err != nil {
		t.Fatal(err)
	}
	if got := f.last(); !strings.Contains(got, `"portName":"grpc"`) || !strings.Contains(got, `"service":{"name":"catalog","namespace":"shop"}`) || !strings.Contains(got, `"duration":"2s"`) {
		t.Errorf("grpc request %s", got)
	}
	m, err = run(t, env, pod+`d.injectNetworkFaults({port: 5432, protocol: 'tcp', dropRate: 0.3, reset_rate: 0.1}, '5s');`)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.last(); !strings.Contains(got, `"port":5432`) || !strings.Contains(got, `"dropRate":0.3`) || !strings.Contains(got, `"resetRate":0.1`) {
		t.Errorf("network request %s", got)
	}
	if v := m.Metrics.Sum("faultline_packets_dropped", map[string]string{"kind": "network"}); v != 40 {
		t.Errorf("faultline_packets_dropped %v", v)
	}
	_, err = run(t, env, pod+`
		const names = d.targets();
		if (names.join() !== 'catalog-1,catalog-2') throw new Error('targets ' + names);
		const gone = d.terminatePods({count: '50%', timeout: '20s'});
		if (gone.join() !== 'catalog-2') throw new Error('terminated ' + gone);
		d.terminatePods({count: 1});`)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.last(); !strings.Contains(got, `"count":"1"`) {
		t.Errorf("terminate request %s", got)
	}
}

// TestProtoFilesInsteadOfReflection loads the schema from
// FAULTLINE_PROTO in the init context, against a gateway without
// reflection.
func TestProtoFilesInsteadOfReflection(t *testing.T) {
	_, addr := startFakeReflect(t, false)
	if _, err := run(t, map[string]string{"FAULTLINE_ADDR": addr}, pod+`d.targets();`); err == nil || !strings.Contains(err.Error(), "reflection") {
		t.Fatalf("without reflection and without FAULTLINE_PROTO: %v, want a reflection error", err)
	}
	protoDir, _ := filepath.Abs("../proto")
	_, err := run(t, map[string]string{"FAULTLINE_ADDR": addr, "FAULTLINE_PROTO": protoDir}, pod+`
		const names = d.targets();
		if (names.join() !== 'catalog-1,catalog-2') throw new Error('targets ' + names);`)
	if err != nil {
		t.Fatal(err)
	}
}

func TestStatusGivesLiveCounters(t *testing.T) {
	f, addr := startFake(t)
	env := map[string]string{"FAULTLINE_ADDR": addr}
	_, err := run(t, env, pod+`
		const s = d.status();
		const f = s.faults[0];
		const want = {target: 'catalog-1', namespace: 'shop', node: 'n1', id: 'gw-1-0', kind: 'http', port: 8080, state: 'active'};
		for (const k of Object.keys(want)) if (f[k] !== want[k]) throw new Error(k + ': ' + JSON.stringify(f));
		if (!(f.remainingMs > 25000 && f.remainingMs <= 30000)) throw new Error('remainingMs ' + f.remainingMs);
		if (s.total.requests !== 12 || s.total.errored !== 4 || s.total.upstreamErrors !== 1 || s.total.packetsDropped !== 0 || f.counters.delayed !== 10)
			throw new Error('counters ' + JSON.stringify(s.total));
		if (s.unreachable.length !== 1) throw new Error('unreachable ' + JSON.stringify(s.unreachable));`)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.last(), `{"targets":{"pods":{"namespace":"shop","select":{"labels":{"app":"catalog"}},"exclude":{}}}}`; got != want {
		t.Errorf("request %s, want %s", got, want)
	}
	f.err = status.Error(codes.NotFound, "no pods found matching selector")
	if _, err := run(t, env, pod+`d.status();`); err == nil || !strings.Contains(err.Error(), "error getting fault status: no pods found") {
		t.Errorf("a gateway error: %v", err)
	}
}

func TestInjectTCPFaults(t *testing.T) {
	f, addr := startFake(t)
	env := map[string]string{"FAULTLINE_ADDR": addr}
	m, err := run(t, env, pod+`
		d.injectTCPFaults({port: 6379, toxics: [
			{type: 'latency', stream: 'downstream', attributes: {latency: '50ms', jitter: 10}},
			{type: 'reset_peer', stream: 'upstream', toxicity: 0.5, attributes: {timeout: '2s'}},
			{type: 'slicer', attributes: {average_size: 64, size_variation: 8, delay: '1ms'}}]}, '30s');`)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"targets":{"pods":{"namespace":"shop","select":{"labels":{"app":"catalog"}},"exclude":{}}},"duration":"30s","fault":{"port":6379,` +
		`"upstream":[{"toxicity":0.5,"resetPeer":{"timeout":"2s"}}],` +
		`"downstream":[{"latency":{"latency":"0.050s","jitter":"0.010s"}},{"slicer":{"averageSize":"64","sizeVariation":"8","delay":"0.001s"}}]}}`
	if got := f.last(); got != want {
		t.Errorf("request\n got %s\nwant %s", got, want)
	}
	if s := m.Metrics.Samples("faultline_tcp_connections_toxic", map[string]string{"kind": "tcp"}); len(s) != 1 || s[0].Value != 5 {
		t.Errorf("faultline_tcp_connections_toxic samples %v", s)
	}
	for body, want := range map[string]string{
		`d.injectTCPFaults({port: 6379, toxics: []}, '10s');`:                                         "toxics must be a non-empty array",
		`d.injectTCPFaults({port: 6379, toxics: [{type: 'teleport'}]}, '10s');`:                       "toxics[0]: unknown type teleport",
		`d.injectTCPFaults({port: 6379, toxics: [{type: 'latency', stream: 'sideways'}]}, '10s');`:    "stream must be upstream or downstream",
		`d.injectTCPFaults({port: 6379, toxics: [{type: 'latency', attributes: {rate: 1}}]}, '10s');`: "unknown field rate in struct latency attributes",
	} {
		if _, err := run(t, env, pod+body); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
}

func TestFailFirstField(t *testing.T) {
	f, addr := startFake(t)
	env := map[string]string{"FAULTLINE_ADDR": addr}
	if _, err := run(t, env, pod+`d.injectHTTPFaults({port: 8080, errorCode: 503, failFirst: {attempts: 2, key_header: 'Idempotency-Key'}}, '10s');`); err != nil {
		t.Fatal(err)
	}
	if got := f.last(); !strings.Contains(got, `"failFirst":{"attempts":2,"keyHeader":"Idempotency-Key"}`) {
		t.Errorf("request %s", got)
	}
	if _, err := run(t, env, pod+`d.injectHTTPFaults({port: 8080, rewrite: {status: 503, set_headers: {'Retry-After': '2'}, removeHeaders: ['ETag'], body: ''}}, '10s');`); err != nil {
		t.Fatal(err)
	}
	if got := f.last(); !strings.Contains(got, `"rewrite":{"status":503,"setHeaders":{"Retry-After":"2"},"removeHeaders":["ETag"],"body":""}`) {
		t.Errorf("request %s", got)
	}
	if _, err := run(t, env, pod+`d.injectHTTPFaults({port: 8080, errorCode: 503, failFirst: {tries: 2}}, '10s');`); err == nil || !strings.Contains(err.Error(), "unknown field tries in struct FailFirst") {
		t.Errorf("unknown field: %v", err)
	}
}

func TestTLSAndPhasesFields(t *testing.T) {
	f, addr := startFake(t)
	env := map[string]string{"FAULTLINE_ADDR": addr}
	if _, err := run(t, env, pod+`
		d.injectTCPFaults({port: 8443, tls: {serverNames: ['*.pay.test'], rate: 0.5, certificate: {defect: 'expired'}}}, '30s');`); err != nil {
		t.Fatal(err)
	}
	want := `{"targets":{"pods":{"namespace":"shop","select":{"labels":{"app":"catalog"}},"exclude":{}}},"duration":"30s","fault":{"port":8443,` +
		`"tls":{"serverNames":["*.pay.test"],"rate":0.5,"certificate":{"defect":"expired"}}}}`
	if got := f.last(); got != want {
		t.Errorf("tls request\n got %s\nwant %s", got, want)
	}
	if _, err := run(t, env, pod+`d.injectTCPFaults({port: 8443, tls: {reset: true}}, '30s');`); err != nil {
		t.Fatal(err)
	}
	if got := f.last(); !strings.Contains(got, `"tls":{"reset":{}}`) {
		t.Errorf("tls reset request %s", got)
	}
	if _, err := run(t, env, pod+`
		d.injectHTTPFaults({port: 80, phases: [
			{duration: '10s', errorRate: 1, errorCode: 429, errorHeaders: {'Retry-After': '2'}},
			{duration: '20s', averageDelay: '300ms'}]}, '40s');`); err != nil {
		t.Fatal(err)
	}
	want = `{"targets":{"pods":{"namespace":"shop","select":{"labels":{"app":"catalog"}},"exclude":{}}},"duration":"40s","fault":{"port":80,` +
		`"phases":[{"duration":"10s","errorRate":1,"errorCode":429,"errorHeaders":{"Retry-After":"2"}},{"duration":"20s","averageDelay":"0.300s"}]}}`
	if got := f.last(); got != want {
		t.Errorf("phases request\n got %s\nwant %s", got, want)
	}
	for body, want := range map[string]string{
		`d.injectTCPFaults({port: 8443, tls: {reset: true, alert: 'unknown_ca'}}, '10s');`:         "tls: give one of handshakeDelay, reset, alert, certificate, got reset and alert",
		`d.injectTCPFaults({port: 8443, tls: {serverNames: ['a.test']}}, '10s');`:                  "toxics must be a non-empty array (or give a tls action)",
		`d.injectTCPFaults({port: 8443, tls: {sni: ['a.test'], reset: true}}, '10s');`:             "unknown field sni in struct TLSFault",
		`d.injectHTTPFaults({port: 80, phases: {duration: '1s'}}, '10s');`:                         "phases must be an array of phases",
		`d.injectHTTPFaults({port: 80, phases: [{errorRate: 1}]}, '10s');`:                         "phases[0]: duration is required",
		`d.injectGrpcFaults({port: 90, phases: [{duration: '1s', errorCode: 500}]}, '10s');`:       "unknown field errorCode in struct GrpcPhase[0]",
		`d.injectHTTPFaults({port: 80, phases: [{duration: '1s', averageDelay: 'soon'}]}, '10s');`: `time: invalid duration "soon"`,
	} {
		if _, err := run(t, env, pod+body); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
}
