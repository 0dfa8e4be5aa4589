package k6model

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
)

// server is a real grpc-go server on loopback with health and reflection.
func server(t *testing.T) (string, *string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var seen string
	s := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		if v := md.Get("x-who"); len(v) > 0 {
			seen = v[0]
		}
		return h(ctx, req)
	}))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return ln.Addr().String(), &seen
}

func vu(t *testing.T, m *Model, script string) *VU {
	t.Helper()
	v, err := m.NewVU(context.Background(), script)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func result(t *testing.T, v *VU) map[string]any {
	t.Helper()
	r, _ := v.rt.GlobalObject().Get("result").Export().(map[string]any)
	return r
}

func TestReflectInvokeCheckCounter(t *testing.T) {
	addr, seen := server(t)
	m := New(map[string]string{"ADDR": addr})
	v := vu(t, m, "testdata/model.js")
	if err := v.Call("vuConnectAndCheck"); err != nil {
		t.Fatal(err)
	}
	r := result(t, v)
	if r["ok"] != true || r["status"] != "SERVING" || r["hasError"] != false {
		t.Errorf("result %v", r)
	}
	if *seen != "model" {
		t.Errorf("metadata reached the server as %q", *seen)
	}
	if got := m.Metrics.Sum("model_hits", map[string]string{"kind": "test"}); got != 2 {
		t.Errorf("counter %v", got)
	}
	if m.Metrics.Rate("checks", nil) != 1 {
		t.Errorf("checks rate %v", m.Metrics.Rate("checks", nil))
	}
}

func TestErrorResponse(t *testing.T) {
	addr, _ := server(t)
	v := vu(t, New(map[string]string{"ADDR": addr}), "testdata/model.js")
	if err := v.Call("vuUnknownService"); err != nil {
		t.Fatal(err)
	}
	r := result(t, v)
	if r["notFound"] != true || r["code"] != int64(5) || !strings.Contains(r["message"].(string), "unknown service") {
		t.Errorf("result %v", r)
	}
}

func TestContextRules(t *testing.T) {
	addr, _ := server(t)
	m := New(map[string]string{"ADDR": addr})
	if _, err := m.NewVU(context.Background(), "testdata/init_connect.js"); err == nil || !strings.Contains(err.Error(), "connecting to a gRPC server in the init context is not supported") {
		t.Errorf("connect in init: %v", err)
	}
	v := vu(t, m, "testdata/model.js")
	for fn, want := range map[string]string{
		"vuInvokeBeforeConnect": "no gRPC connection, you must call connect first",
		"vuLoad":                "load must be called in the init context",
		"vuCounter":             "metrics must be declared in the init context",
		"vuUnknownConnectParam": `unknown connect param: "insecure"`,
		"vuFail":                "boom",
		"vuUnknownField":        "unable to serialise request object to protocol buffer",
	} {
		if err := v.Call(fn); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", fn, err, want)
		}
	}
	start := time.Now()
	if err := v.Call("vuSleep"); err != nil || time.Since(start) < 200*time.Millisecond {
		t.Errorf("sleep: %v after %s", err, time.Since(start))
	}
}

func TestInterruptCancelsInvoke(t *testing.T) {
	addr, _ := server(t)
	ctx, cancel := context.WithCancel(context.Background())
	v, err := New(map[string]string{"ADDR": addr}).NewVU(ctx, "testdata/model.js")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	v.Call("vuSleep") // sleep(0.2) returns early
	if took := time.Since(start); took > 180*time.Millisecond {
		t.Errorf("an interrupted VU slept %s", took)
	}
}
