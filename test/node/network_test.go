package node

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cilium/ebpf"

	"github.com/faultline-dev/faultline/internal/testkit/netnstest"
	"github.com/faultline-dev/faultline/internal/testkit/proctest"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

func (nd *node) networkRequest(d time.Duration, f *pb.NetworkFault) *pb.InjectRequest {
	return &pb.InjectRequest{
		Target:   &pb.Target{Kind: &pb.Target_NetnsPath{NetnsPath: nd.pod.Path}},
		Duration: durationpb.New(d),
		Fault:    &pb.InjectRequest_Network{Network: f},
	}
}

// newPrograms returns the faultline programs loaded since before.
func newPrograms(t *testing.T, before map[ebpf.ProgramID]bool) []ebpf.ProgramID {
	var ids []ebpf.ProgramID
	for id := range netnstest.ProgramsNamed(t, netnstest.ProgramNames...) {
		if !before[id] {
			ids = append(ids, id)
		}
	}
	return ids
}

func (nd *node) dialErr(port int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := nd.client.Dial()(ctx, "tcp", netip.AddrPortFrom(nd.pod.Addr, uint16(port)).String())
	if err == nil {
		c.Close()
	}
	return err
}

func TestSIGKILLDuringDropLeavesNothingBehind(t *testing.T) {
	nd := newNode(t)
	before := netnstest.ProgramsNamed(t, netnstest.ProgramNames...)
	rate := 1.0
	go proctest.Inject(context.Background(), nd.api, nd.networkRequest(time.Minute, &pb.NetworkFault{Port: 8080, Protocol: "tcp", DropRate: &rate}))
	nd.waitFaults(t, 1)
	var ne net.Error
	if err := nd.dialErr(8080, 500*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("during the drop: %v, want a timeout", err)
	}
	progs := newPrograms(t, before)
	if len(progs) != 2 { // fl_drop on eth0, fl_refuse
		t.Fatalf("faultlined loaded %d programs, want 2", len(progs))
	}
	nd.daemon.Process.Signal(syscall.SIGKILL)
	nd.daemon.Wait()
	killed := time.Now()
	nd.assertDirectWithin(t, time.Second, nil)
	t.Logf("direct again %s after SIGKILL", time.Since(killed).Round(time.Millisecond))
	deadline := time.Now().Add(time.Second)
	for len(netnstest.LivePrograms(t, progs)) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if live := netnstest.LivePrograms(t, progs); len(live) > 0 {
		t.Errorf("programs still loaded after SIGKILL: %v", live)
	}
}

func TestNetworkFaultEndsCleanly(t *testing.T) {
	nd := newNode(t)
	before := netnstest.ProgramsNamed(t, netnstest.ProgramNames...)
	rate := 0.0
	done := make(chan *pb.InjectResponse, 1)
	go func() {
		resp, err := proctest.Inject(context.Background(), nd.api, nd.networkRequest(2*time.Second, &pb.NetworkFault{Port: 8080, Protocol: "tcp", DropRate: &rate, ResetRate: 1}))
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	nd.waitFaults(t, 1)
	if err := nd.dialErr(8080, time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("resetRate 1: %v, want refused", err)
	}
	progs := newPrograms(t, before)
	resp := <-done
	if c := resp.GetFault().GetCounters(); c.GetConnectionsRefused() != 1 || resp.GetFault().GetKind() != "network" {
		t.Errorf("final status %v", resp.GetFault())
	}
	nd.assertDirectWithin(t, time.Second, nil)
	time.Sleep(50 * time.Millisecond)
	if live := netnstest.LivePrograms(t, progs); len(live) > 0 {
		t.Errorf("programs still loaded after the fault: %v", live)
	}
}

func TestFaultKindsSideBySide(t *testing.T) {
	nd := newNode(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rate := 1.0
	drop := nd.networkRequest(time.Minute, &pb.NetworkFault{Port: 9999, Protocol: "tcp", DropRate: &rate})
	drop.Id = "drop-9999"
	go proctest.Inject(ctx, nd.api, drop)
	nd.waitFaults(t, 1)
	// An HTTP fault on another port runs beside the drop.
	go proctest.Inject(ctx, nd.api, nd.httpRequest(time.Minute, &pb.HTTPFault{ErrorRate: 1, ErrorCode: 503}))
	nd.waitFaults(t, 2)
	if code, _ := nd.get(t); code != 503 {
		t.Errorf("http fault beside the drop: %d", code)
	}
	// A drop on all ports collides with both.
	_, err := proctest.Inject(context.Background(), nd.api, nd.networkRequest(time.Minute, &pb.NetworkFault{}))
	if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "fault") {
		t.Errorf("drop on all ports: %v", err)
	}
	// So does a gRPC fault on the dropped port.
	_, err = proctest.Inject(context.Background(), nd.api, &pb.InjectRequest{Target: drop.Target, Duration: durationpb.New(time.Minute),
		Fault: &pb.InjectRequest_Grpc{Grpc: &pb.GrpcFault{Port: 9999}}})
	if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), `"drop-9999"`) {
		t.Errorf("grpc fault on the dropped port: %v", err)
	}
	// UDP on the same port does not collide with a TCP drop.
	udp := 0.5
	u := nd.networkRequest(time.Minute, &pb.NetworkFault{Port: 9999, Protocol: "udp", DropRate: &udp})
	go proctest.Inject(ctx, nd.api, u)
	nd.waitFaults(t, 3)
}

func TestGRPCAndNetworkValidation(t *testing.T) {
	nd := newNode(t)
	rate := func(v float64) *float64 { return &v }
	target := &pb.Target{Kind: &pb.Target_NetnsPath{NetnsPath: nd.pod.Path}}
	for _, tc := range []struct {
		name  string
		fault any
		want  string
	}{
		{"statusCode 0", &pb.GrpcFault{Port: 9000, ErrorRate: 0.5}, "statusCode must be a gRPC status code in 1-16 when errorRate > 0, got 0"},
		{"statusCode 17", &pb.GrpcFault{Port: 9000, ErrorRate: 0.5, StatusCode: 17}, "got 17"},
		{"grpc errorRate", &pb.GrpcFault{Port: 9000, ErrorRate: 1.1, StatusCode: 14}, "errorRate must be in the range [0, 1], got 1.1"},
		{"grpc port", &pb.GrpcFault{Port: 0}, "port must be in 1-65535, got 0"},
		{"grpc variation", &pb.GrpcFault{Port: 9000, AverageDelay: durationpb.New(time.Millisecond), DelayVariation: durationpb.New(time.Second)}, "delayVariation (1s) must not be greater than averageDelay (1ms)"},
		{"grpc exclude", &pb.GrpcFault{Port: 9000, Exclude: "pkg.Svc/Method"}, `exclude: "pkg.Svc/Method" is not a fully-qualified service name`},
		{"grpc method", &pb.GrpcFault{Port: 9000, Methods: []string{"pkg.Svc.Get"}}, "must be a full method name"},
		{"dropRate above 1", &pb.NetworkFault{DropRate: rate(1.5)}, "dropRate must be in the range [0, 1], got 1.5"},
		{"dropRate negative", &pb.NetworkFault{DropRate: rate(-0.5)}, "dropRate must be in the range [0, 1], got -0.5"},
		{"resetRate above 1", &pb.NetworkFault{ResetRate: 2}, "resetRate must be in the range [0, 1], got 2"},
		{"unknown protocol", &pb.NetworkFault{Protocol: "icmp"}, `protocol must be tcp, udp, or empty for all, got "icmp"`},
		{"resetRate with udp", &pb.NetworkFault{Protocol: "udp", ResetRate: 0.5}, "resetRate applies to TCP connections"},
		{"network port", &pb.NetworkFault{Port: 70000}, "port must be in 1-65535, got 70000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &pb.InjectRequest{Target: target, Duration: durationpb.New(time.Minute)}
			switch f := tc.fault.(type) {
			case *pb.GrpcFault:
				req.Fault = &pb.InjectRequest_Grpc{Grpc: f}
			case *pb.NetworkFault:
				req.Fault = &pb.InjectRequest_Network{Network: f}
			}
			_, err := proctest.Inject(context.Background(), nd.api, req)
			st, _ := status.FromError(err)
			if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tc.want) {
				t.Errorf("got %v %q, want InvalidArgument containing %q", st.Code(), st.Message(), tc.want)
			}
		})
	}
}

func TestCLIInjectNetworkAndGRPC(t *testing.T) {
	nd := newNode(t)
	done := make(chan cliResult, 1)
	go func() {
		done <- faultline(t, "inject", "network", "--socket", nd.socket, "--netns", nd.pod.Path, "--port", "8080",
			"--protocol", "tcp", "--drop-rate", "0", "--reset-rate", "1", "--duration", "1s")
	}()
	nd.waitFaults(t, 1)
	if err := nd.dialErr(8080, time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("during the fault: %v", err)
	}
	r := <-done
	if r.code != 0 || !strings.Contains(r.stdout, "network fault") || !strings.Contains(r.stdout, "port 8080/tcp") {
		t.Errorf("inject network: %+v", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if f := strings.Fields(lines[len(lines)-1]); len(f) != 3 || f[2] != "1" {
		t.Errorf("counters line %q, want 1 connection refused", lines[len(lines)-1])
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"inject", "network", "--protocol", "sctp"}, `protocol must be tcp, udp, or empty for all, got "sctp"`},
		{[]string{"inject", "network", "--drop-rate", "2"}, "dropRate must be in the range [0, 1], got 2"},
		{[]string{"inject", "grpc", "--port", "9000", "--error-rate", "1", "--status-code", "99"}, "statusCode must be a gRPC status code in 1-16"},
		{[]string{"inject", "grpc", "--error-rate", "1"}, "--port must be in 1-65535, got 0"},
	} {
		r := faultline(t, append(tc.args, "--socket", nd.socket, "--netns", nd.pod.Path, "--duration", "5s")...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
}
