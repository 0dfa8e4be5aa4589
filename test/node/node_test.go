// Package node tests faultlined and the faultline CLI as processes: built
// from source, run as root against real network namespaces and a real HTTP
// server, driven over the unix-socket gRPC API and the command line.
package node

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/faultline-dev/faultline/internal/testkit/netnstest"
	"github.com/faultline-dev/faultline/internal/testkit/proctest"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := proctest.Build("../../cmd/faultlined", "../../cmd/faultline")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is a test pod with an HTTP app on :8080, a client host, and a
// faultlined process serving a socket of its own.
type node struct {
	pod, client *netnstest.Host
	url         string
	http        *http.Client
	socket      string
	daemon      *exec.Cmd
	api         pb.NodeClient
}

func newNode(t *testing.T, daemonArgs ...string) *node {
	t.Helper()
	n := netnstest.NewNet(t)
	nd := &node{pod: n.AddHost("pod"), client: n.AddHost("client")}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "app") })}
	go srv.Serve(nd.pod.Listen(t, "tcp", ":8080"))
	t.Cleanup(func() { srv.Close() })
	nd.url = "http://" + netip.AddrPortFrom(nd.pod.Addr, 8080).String() + "/"
	nd.http = &http.Client{Transport: &http.Transport{DialContext: nd.client.Dial(), DisableKeepAlives: true}, Timeout: 10 * time.Second}

	d := proctest.StartFaultlined(t, binDir, daemonArgs...)
	nd.socket, nd.daemon = d.Socket, d.Cmd
	conn, err := grpc.NewClient("unix://"+nd.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	nd.api = pb.NewNodeClient(conn)
	return nd
}

// get returns the status of one request on a new connection.
func (nd *node) get(t *testing.T) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := nd.http.Get(nd.url)
	if err != nil {
		t.Fatalf("GET %s: %v", nd.url, err)
	}
	resp.Body.Close()
	return resp.StatusCode, time.Since(start)
}

func (nd *node) httpRequest(d time.Duration, f *pb.HTTPFault) *pb.InjectRequest {
	if f.Port == 0 {
		f.Port = 8080
	}
	return &pb.InjectRequest{
		Target:   &pb.Target{Kind: &pb.Target_NetnsPath{NetnsPath: nd.pod.Path}},
		Duration: durationpb.New(d),
		Fault:    &pb.InjectRequest_Http{Http: f},
	}
}

// waitFaults waits until List shows n faults.
func (nd *node) waitFaults(t *testing.T, n int) []*pb.FaultStatus {
	t.Helper()
	return proctest.WaitFaults(t, nd.api, n)
}

// assertDirectWithin checks that within d a new connection reaches the app
// directly and no faultline program is attached to the pod.
func (nd *node) assertDirectWithin(t *testing.T, d time.Duration, progs []uint32) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		code, took := nd.get(t)
		if code == 200 && took < 500*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("traffic not back to direct within %s (last: %d in %s)", d, code, took)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if left := netnstest.AttachedPrograms(t, nd.pod.NS); len(left) != 0 {
		t.Errorf("programs still attached to the pod netns: %v", left)
	}
}

func TestInjectBlocksAndReturnsCounters(t *testing.T) {
	nd := newNode(t)
	done := make(chan *pb.InjectResponse, 1)
	start := time.Now()
	go func() {
		resp, err := proctest.Inject(context.Background(), nd.api, nd.httpRequest(2*time.Second, &pb.HTTPFault{ErrorRate: 1, ErrorCode: 503}))
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	nd.waitFaults(t, 1)
	for range 5 {
		if code, _ := nd.get(t); code != 503 {
			t.Errorf("during the fault: %d, want 503", code)
		}
	}
	resp := <-done
	if took := time.Since(start); took < 2*time.Second || took > 3500*time.Millisecond {
		t.Errorf("Inject returned after %s, want about 2s", took)
	}
	c := resp.GetFault().GetCounters()
	if c.GetRequests() != 5 || c.GetErrored() != 5 || resp.GetFault().GetEndReason() != "expired" {
		t.Errorf("final status %v, want 5 requests errored, expired", resp.GetFault())
	}
	nd.assertDirectWithin(t, time.Second, nil)
}

// proxyKinds are the fault kinds that steer a port into the proxy; each
// checks that it is in the path while it runs.
var proxyKinds = []struct {
	name   string
	fault  func(nd *node) *pb.InjectRequest
	during func(t *testing.T, nd *node)
}{
	{"http", func(nd *node) *pb.InjectRequest {
		return nd.httpRequest(time.Minute, &pb.HTTPFault{ErrorRate: 1, ErrorCode: 503})
	}, func(t *testing.T, nd *node) {
		if code, _ := nd.get(t); code != 503 {
			t.Fatalf("during the fault: %d, want 503", code)
		}
	}},
	{"grpc", func(nd *node) *pb.InjectRequest {
		return &pb.InjectRequest{Target: &pb.Target{Kind: &pb.Target_NetnsPath{NetnsPath: nd.pod.Path}}, Duration: durationpb.New(time.Minute),
			Fault: &pb.InjectRequest_Grpc{Grpc: &pb.GrpcFault{Port: 8080, ErrorRate: 1, StatusCode: 14}}}
	}, func(t *testing.T, nd *node) {
		// An HTTP/1.1 request passes a gRPC fault untouched, through the proxy.
		if code, _ := nd.get(t); code != 200 {
			t.Fatalf("during the fault: %d, want 200", code)
		}
		l, err := nd.api.List(context.Background(), &pb.ListRequest{})
		if err != nil || len(l.GetFaults()) != 1 || l.GetFaults()[0].GetCounters().GetUnmatched() != 1 {
			t.Fatalf("the proxy did not see the request: %v %v", l, err)
		}
	}},
}

func TestCallerCancelRevokes(t *testing.T) {
	for _, kind := range proxyKinds {
		t.Run(kind.name, func(t *testing.T) {
			nd := newNode(t)
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				_, err := proctest.Inject(ctx, nd.api, kind.fault(nd))
				errc <- err
			}()
			nd.waitFaults(t, 1)
			kind.during(t, nd)
			progs := netnstest.AttachedPrograms(t, nd.pod.NS)
			cancel()
			if err := <-errc; status.Code(err) != codes.Canceled {
				t.Errorf("Inject after cancel: %v", err)
			}
			nd.assertDirectWithin(t, time.Second, nil)
			nd.waitFaults(t, 0)
			if live := netnstest.LivePrograms(t, progs); len(live) != 0 {
				time.Sleep(100 * time.Millisecond)
				if live = netnstest.LivePrograms(t, progs); len(live) != 0 {
					t.Errorf("programs left after cancel: %v", live)
				}
			}
		})
	}
}

func TestRevoke(t *testing.T) {
	nd := newNode(t)
	done := make(chan *pb.InjectResponse, 1)
	req := nd.httpRequest(time.Minute, &pb.HTTPFault{ErrorRate: 1, ErrorCode: 503})
	req.Id = "checkout-slow"
	go func() {
		resp, _ := proctest.Inject(context.Background(), nd.api, req)
		done <- resp
	}()
	faults := nd.waitFaults(t, 1)
	if faults[0].GetId() != "checkout-slow" {
		t.Errorf("List shows %q", faults[0].GetId())
	}
	nd.get(t)
	rev, err := nd.api.Revoke(context.Background(), &pb.RevokeRequest{Id: "checkout-slow"})
	if err != nil {
		t.Fatal(err)
	}
	if rev.GetFault().GetCounters().GetErrored() != 1 || rev.GetFault().GetEndReason() != "revoked" {
		t.Errorf("revoke returned %v", rev.GetFault())
	}
	if resp := <-done; resp.GetFault().GetEndReason() != "revoked" {
		t.Errorf("Inject returned %v", resp.GetFault())
	}
	nd.assertDirectWithin(t, time.Second, nil)
	_, err = nd.api.Revoke(context.Background(), &pb.RevokeRequest{Id: "checkout-slow"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("second revoke: %v, want NotFound", err)
	}
}

func TestSIGKILLLeavesNothingBehind(t *testing.T) {
	for _, kind := range proxyKinds {
		t.Run(kind.name, func(t *testing.T) {
			nd := newNode(t)
			go proctest.Inject(context.Background(), nd.api, kind.fault(nd))
			nd.waitFaults(t, 1)
			kind.during(t, nd)
			progs := netnstest.AttachedPrograms(t, nd.pod.NS)
			if len(progs) != 1 {
				t.Fatalf("%d programs attached during the fault, want 1", len(progs))
			}
			if err := nd.daemon.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed := time.Now()
			nd.daemon.Wait()
			nd.assertDirectWithin(t, time.Second, nil)
			t.Logf("direct again %s after SIGKILL", time.Since(killed).Round(time.Millisecond))
			deadline := time.Now().Add(time.Second)
			for len(netnstest.LivePrograms(t, progs)) > 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if live := netnstest.LivePrograms(t, progs); len(live) != 0 {
				t.Errorf("programs still loaded after SIGKILL: %v", live)
			}
		})
	}
}

func TestValidation(t *testing.T) {
	nd := newNode(t)
	rate := func(v float64) *float64 { return &v }
	ms := func(n int) *durationpb.Duration { return durationpb.New(time.Duration(n) * time.Millisecond) }
	for _, tc := range []struct {
		name string
		edit func(*pb.InjectRequest, *pb.HTTPFault)
		want string
	}{
		{"errorRate above 1", func(_ *pb.InjectRequest, f *pb.HTTPFault) { f.ErrorRate, f.ErrorCode = 1.5, 500 }, "errorRate must be in the range [0, 1], got 1.5"},
		{"errorRate negative", func(_ *pb.InjectRequest, f *pb.HTTPFault) { f.ErrorRate = -0.1 }, "errorRate must be in the range [0, 1], got -0.1"},
		{"delayVariation above averageDelay", func(_ *pb.InjectRequest, f *pb.HTTPFault) { f.AverageDelay, f.DelayVariation = ms(100), ms(200) }, "delayVariation (200ms) must not be greater than averageDelay (100ms)"},
		{"errorCode missing", func(_ *pb.InjectRequest, f *pb.HTTPFault) { f.ErrorRate = 0.5 }, "errorCode must be an HTTP status in 200-599 when errorRate > 0, got 0"},
		{"errorCode 600", func(_ *pb.InjectRequest, f *pb.HTTPFault) { f.ErrorRate, f.ErrorCode = 0.5, 600 }, "errorCode must be an HTTP status in 200-599, got 600"},
		{"errorCode 99", func(_ *pb.InjectRequest, f *pb.HTTPFault) { f.ErrorRate, f.ErrorCode = 0.5, 99 }, "got 99"},
		{"duration under 1s", func(r *pb.InjectRequest, _ *pb.HTTPFault) { r.Duration = ms(999) }, "duration must be at least 1s, got 999ms"},
		{"duration missing", func(r *pb.InjectRequest, _ *pb.HTTPFault) { r.Duration = nil }, "duration must be at least 1s, got 0s"},
		{"port 0", func(_ *pb.InjectRequest, f *pb.HTTPFault) { f.Port = 0 }, "port must be in 1-65535, got 0"},
		{"port 65536", func(_ *pb.InjectRequest, f *pb.HTTPFault) { f.Port = 65536 }, "port must be in 1-65535, got 65536"},
		{"netns missing", func(r *pb.InjectRequest, _ *pb.HTTPFault) {
			r.Target = &pb.Target{Kind: &pb.Target_NetnsPath{NetnsPath: "/run/netns/fl-test-does-not-exist"}}
		}, "netns /run/netns/fl-test-does-not-exist does not exist"},
		{"not a netns", func(r *pb.InjectRequest, _ *pb.HTTPFault) {
			r.Target = &pb.Target{Kind: &pb.Target_NetnsPath{NetnsPath: "/etc/hostname"}}
		}, "/etc/hostname is not a network namespace"},
		{"pid missing", func(r *pb.InjectRequest, _ *pb.HTTPFault) { r.Target = &pb.Target{Kind: &pb.Target_Pid{Pid: 1 << 30}} }, "pid 1073741824 does not exist"},
		{"pid negative", func(r *pb.InjectRequest, _ *pb.HTTPFault) { r.Target = &pb.Target{Kind: &pb.Target_Pid{Pid: -1}} }, "pid must be positive"},
		{"no target", func(r *pb.InjectRequest, _ *pb.HTTPFault) { r.Target = nil }, "target: give a netns path, a pid or a pod"},
		{"no fault", func(r *pb.InjectRequest, _ *pb.HTTPFault) { r.Fault = nil }, "no fault given"},
		{"delayRate above 1", func(_ *pb.InjectRequest, f *pb.HTTPFault) { f.DelayRate = rate(2) }, "delayRate must be in the range [0, 1], got 2"},
		{"negative averageDelay", func(_ *pb.InjectRequest, f *pb.HTTPFault) { f.AverageDelay = ms(-5) }, "averageDelay must not be negative"},
		{"bad error header", func(_ *pb.InjectRequest, f *pb.HTTPFault) { f.ErrorHeaders = map[string]string{"Bad Name": "x"} }, `errorHeaders: "Bad Name" is not a valid header name`},
		{"error header CRLF", func(_ *pb.InjectRequest, f *pb.HTTPFault) { f.ErrorHeaders = map[string]string{"X-A": "a\r\nb"} }, "must not contain CR, LF or NUL"},
		{"error header Content-Length", func(_ *pb.InjectRequest, f *pb.HTTPFault) { f.ErrorHeaders = map[string]string{"content-length": "1"} }, "Content-Length is set by faultline"},
		{"exclude not a path", func(_ *pb.InjectRequest, f *pb.HTTPFault) { f.Exclude = "/ok,health" }, `exclude: "health" is not a path`},
		{"match path glob", func(_ *pb.InjectRequest, f *pb.HTTPFault) { f.Match = &pb.HTTPMatch{Paths: []string{"/a/*/b"}} }, "* is only allowed at the end"},
		{"match method", func(_ *pb.InjectRequest, f *pb.HTTPFault) { f.Match = &pb.HTTPMatch{Methods: []string{"GE T"}} }, `match method "GE T" is not a valid HTTP method`},
		{"bad id", func(r *pb.InjectRequest, _ *pb.HTTPFault) { r.Id = "no spaces allowed" }, "id \"no spaces allowed\" must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &pb.HTTPFault{Port: 8080}
			req := nd.httpRequest(time.Minute, f)
			tc.edit(req, f)
			_, err := proctest.Inject(context.Background(), nd.api, req)
			st, _ := status.FromError(err)
			if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tc.want) {
				t.Errorf("got %v %q, want InvalidArgument containing %q", st.Code(), st.Message(), tc.want)
			}
		})
	}
	// A pod target needs Kubernetes mode.
	podReq := nd.httpRequest(time.Minute, &pb.HTTPFault{Port: 8080})
	podReq.Target = &pb.Target{Kind: &pb.Target_Pod{Pod: &pb.PodRef{Namespace: "shop", Name: "web-1"}}}
	if _, err := proctest.Inject(context.Background(), nd.api, podReq); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "Kubernetes mode") {
		t.Errorf("pod target in local mode: got %v, want FailedPrecondition about Kubernetes mode", err)
	}
	if n := len(netnstest.AttachedPrograms(t, nd.pod.NS)); n != 0 {
		t.Errorf("a refused fault left %d programs attached", n)
	}

	// A second fault on the same port: FailedPrecondition naming the first.
	first := nd.httpRequest(time.Minute, &pb.HTTPFault{ErrorRate: 1, ErrorCode: 503})
	first.Id = "first"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go proctest.Inject(ctx, nd.api, first)
	nd.waitFaults(t, 1)
	_, err := proctest.Inject(context.Background(), nd.api, nd.httpRequest(time.Minute, &pb.HTTPFault{}))
	if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), `fault "first"`) {
		t.Errorf("second fault: %v %q, want FailedPrecondition naming \"first\"", st.Code(), st.Message())
	}
}

func attachedPrograms(t *testing.T, nd *node) []uint32 {
	var out []uint32
	for _, id := range netnstest.AttachedPrograms(t, nd.pod.NS) {
		out = append(out, uint32(id))
	}
	return out
}
