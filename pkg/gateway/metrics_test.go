package gateway

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/faultline-dev/faultline/pkg/auth"
	"github.com/faultline-dev/faultline/pkg/metrics"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// TestGatewayMetrics: calls count by method and code (refused ones
// included), targets per call and time to active are observed, and no
// target stays active after the call.
func TestGatewayMetrics(t *testing.T) {
	ft := newFakeTransport(t, "n1", "n2")
	m := metrics.NewGateway()
	s := &Server{Source: staticSource{target("a", "n1"), target("b", "n2")}, Transport: ft, Metrics: m}
	ln := bufconn.Listen(1 << 20)
	gs := NewGRPCServer(s, auth.NewChecker("secret", "test"), m.ServerOptions()...)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient("passthrough:///gw", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithPerRPCCredentials(auth.Bearer("secret")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	gw := pb.NewGatewayClient(cc)
	if _, err := gw.InjectHTTP(context.Background(), httpRequest(time.Second, map[string]string{"app": "web"})); err != nil {
		t.Fatal(err)
	}
	bad := httpRequest(time.Second, map[string]string{"app": "web"})
	bad.Fault.ErrorRate = 2
	if _, err := gw.InjectHTTP(context.Background(), bad); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad fault: %v", err)
	}
	want := `
# HELP faultline_gateway_calls_total Gateway calls, by method and gRPC code (Unauthenticated included).
# TYPE faultline_gateway_calls_total counter
faultline_gateway_calls_total{code="InvalidArgument",method="/faultline.v1.Gateway/InjectHTTP"} 1
faultline_gateway_calls_total{code="OK",method="/faultline.v1.Gateway/InjectHTTP"} 1
# HELP faultline_gateway_targets_active Targets whose fault, started through this gateway, is active.
# TYPE faultline_gateway_targets_active gauge
faultline_gateway_targets_active 0
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want), "faultline_gateway_calls_total", "faultline_gateway_targets_active"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m, "faultline_gateway_time_to_active_seconds", "faultline_gateway_call_targets"); n != 2 {
		t.Errorf("%d histograms, want 2", n)
	}
}
