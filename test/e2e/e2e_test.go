//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/faultline-dev/faultline/internal/testkit/k6model"
	"github.com/faultline-dev/faultline/internal/testkit/netnstest"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// probes is excluded from HTTP faults, as a user keeps the kubelet's
// readiness probes healthy so that the Service keeps its pods.
const probes = "/health"

func pods(ns string, sel map[string]string) *pb.TargetSet {
	return &pb.TargetSet{Kind: &pb.TargetSet_Pods{Pods: &pb.PodSelector{Namespace: ns, Select: &pb.LabelSet{Labels: sel}}}}
}

func service(ns, name string) *pb.TargetSet {
	return &pb.TargetSet{Kind: &pb.TargetSet_Service{Service: &pb.ServiceRef{Namespace: ns, Name: name}}}
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// inject runs an InjectHTTP call in the background.
func (e *env) injectHTTP(ctx context.Context, req *pb.InjectHTTPRequest) <-chan injectResult {
	ch := make(chan injectResult, 1)
	go func() {
		resp, err := e.gw.InjectHTTP(ctx, req)
		ch <- injectResult{resp, err}
	}()
	return ch
}

type injectResult struct {
	resp *pb.GatewayInjectResponse
	err  error
}

// TestKubernetes runs every scenario on one cluster, in order.
func TestKubernetes(t *testing.T) {
	e := setup(t)
	specsBefore := e.podSpecs(t, "app in (catalog,solo)")
	programsBefore := netnstest.ProgramsNamed(t, netnstest.ProgramNames...)

	steps := []struct {
		name string
		run  func(*testing.T, *env)
	}{
		{"PodDisruptorHTTP", testPodDisruptorHTTP},
		{"MetricsAndStatus", testMetricsAndStatus},
		{"ServiceDisruptorNamedPort", testServiceDisruptorNamedPort},
		{"ServiceDisruptorGrpc", testServiceDisruptorGrpc},
		{"NetworkFault", testNetworkFault},
		{"TCPFault", testTCPFault},
		{"FaultObjects", testFaultObjects},
		{"RevokeAll", testRevokeAll},
		{"GatewayKilled", testGatewayKilled},
		{"FaultPlan", testFaultPlan},
		{"Refusals", testRefusals},
		{"CancelMidFault", testCancelMidFault},
		{"K6Library", testK6Library},
		{"TimeToActive", testTimeToActive},
		{"PodDeletedMidFault", testPodDeletedMidFault},
		{"DaemonKilledMidFault", testDaemonKilledMidFault},
		{"TerminatePods", testTerminatePods},
	}
	failed := false
	// FAULTLINE_E2E_STEPS=A,B runs only those steps (while developing one).
	only := os.Getenv("FAULTLINE_E2E_STEPS")
	for _, s := range steps {
		if only != "" && !slices.Contains(strings.Split(only, ","), s.name) {
			continue
		}
		if failed {
			t.Run(s.name, func(t *testing.T) { t.Skip("an earlier step failed") })
			continue
		}
		// Probes go through faults like any client (the network fault
		// fails them): start each step with every pod ready again.
		e.waitReady(t, "shop", "app=catalog", 3)
		e.waitReady(t, "shop", "app=solo", 1)
		if !t.Run(s.name, func(t *testing.T) { s.run(t, e) }) {
			failed = true
			e.dumpLogs(t)
			out, err := e.Kubectl(context.Background(), "logs", "-n", "faultline", "-l", "app.kubernetes.io/name=faultlined", "--tail=60", "--prefix")
			t.Logf("--- faultlined (last lines)\n%s %v", out, err)
		}
	}

	// No fault changed a pod: same specs, annotations, labels, and no
	// ephemeral container (terminatePods replaced some catalog pods, so
	// compare the ones that are still there).
	after := e.podSpecs(t, "app in (catalog,solo)")
	compared := 0
	for name, before := range specsBefore {
		if now, ok := after[name]; ok {
			compared++
			if now != before {
				t.Errorf("pod %s changed:\nbefore %s\nafter  %s", name, before, now)
			}
		}
	}
	t.Logf("pod specs identical before and after every fault: %d pods compared", compared)
	if compared == 0 {
		t.Error("no pod left to compare")
	}

	// kubectl delete -k removes faultline, and with it every kernel hook.
	if out, err := e.Kubectl(context.Background(), "delete", "-k", e.overlay, "--wait=true", "--timeout=60s"); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("kubectl delete -k:\n%s", out)
	}
	if err := waitFor(context.Background(), 30*time.Second, "faultlined pods gone", func() error {
		l, err := e.Client.CoreV1().Pods("faultline").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(l.Items) > 0 {
			return fmt.Errorf("%d pods left", len(l.Items))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	left := netnstest.ProgramsNamed(t, netnstest.ProgramNames...)
	for id := range programsBefore {
		delete(left, id)
	}
	if len(left) > 0 {
		t.Errorf("after kubectl delete -k, faultline eBPF programs remain: %v", left)
	}
}

func testPodDisruptorHTTP(t *testing.T, e *env) {
	ps := e.pods(t, "app=catalog")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := e.injectHTTP(ctx, &pb.InjectHTTPRequest{
		Targets:  pods("shop", map[string]string{"app": "catalog"}),
		Duration: dur(4 * time.Second),
		Fault:    &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 503, ErrorBody: "injected", Exclude: probes},
	})
	for _, p := range ps {
		e.waitStatus(t, p.Status.PodIP, 503, 5*time.Second)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.resp.GetTargets()) != 3 || r.resp.GetTotal().GetErrored() == 0 {
		t.Errorf("response: %d targets, total %v; want 3 targets with errors counted", len(r.resp.GetTargets()), r.resp.GetTotal())
	}
	for _, p := range ps {
		if got := e.get(p.Status.PodIP); got != 200 {
			t.Errorf("pod %s after the fault: %d, want 200", p.Name, got)
		}
	}
}

// The Service's port 80 maps to the named container port "web" (8080).
func testServiceDisruptorNamedPort(t *testing.T, e *env) {
	ps := e.pods(t, "app=catalog")
	done := e.injectHTTP(context.Background(), &pb.InjectHTTPRequest{
		Targets:  service("shop", "catalog"),
		Duration: dur(3 * time.Second),
		Fault:    &pb.HTTPFault{AverageDelay: dur(300 * time.Millisecond), Exclude: probes},
	})
	time.Sleep(time.Second)
	for _, p := range ps {
		start := time.Now()
		if got := e.get(p.Status.PodIP); got != 200 {
			t.Errorf("pod %s: %d, want 200", p.Name, got)
		}
		if took := time.Since(start); took < 290*time.Millisecond {
			t.Errorf("pod %s answered in %s, want the 300ms delay", p.Name, took)
		}
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	onNodes := map[string]int{}
	for _, tr := range r.resp.GetTargets() {
		onNodes[tr.GetTarget().GetNode()]++
	}
	t.Logf("ServiceDisruptor's targets by node: %v", onNodes)
	if len(onNodes) != len(e.Nodes) {
		t.Errorf("the service's fault reached pods on %d nodes (%v), want %d", len(onNodes), onNodes, len(e.Nodes))
	}
	for _, tr := range r.resp.GetTargets() {
		if tr.GetFault().GetPort() != 8080 {
			t.Errorf("target %s faulted on port %d, want 8080 (service port 80 → targetPort web)", tr.GetTarget().GetName(), tr.GetFault().GetPort())
		}
	}
	// A service with several ports needs one named.
	_, err := e.gw.InjectHTTP(context.Background(), &pb.InjectHTTPRequest{
		Targets: service("shop", "catalog"), Duration: dur(time.Second),
		Fault: &pb.HTTPFault{Port: 81, ErrorRate: 1, ErrorCode: 500},
	})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "does not expose port 81") {
		t.Errorf("unknown service port: got %v, want InvalidArgument naming it", err)
	}
}

func testServiceDisruptorGrpc(t *testing.T, e *env) {
	ps := e.pods(t, "app=catalog")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := make(chan injectResult, 1)
	go func() {
		resp, err := e.gw.InjectGrpc(ctx, &pb.InjectGrpcRequest{
			Targets:  service("shop", "catalog-grpc"),
			Duration: dur(3 * time.Second),
			Fault:    &pb.GrpcFault{ErrorRate: 1, StatusCode: uint32(codes.Unavailable), StatusMessage: "injected", Methods: []string{"/grpc.health.v1.Health/Check"}},
		})
		ch <- injectResult{resp, err}
	}()
	// A new connection per attempt: a gRPC connection opened before the
	// fault is active stays direct (the fault leaves established
	// connections alone by default).
	check := func(ip string) error {
		conn, err := grpc.NewClient("passthrough:///"+net.JoinHostPort(ip, "9000"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		defer ccancel()
		_, err = healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{})
		return err
	}
	for _, p := range ps {
		var last error
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if last = check(p.Status.PodIP); status.Code(last) == codes.Unavailable && strings.Contains(last.Error(), "injected") {
				break
			}
		}
		if status.Code(last) != codes.Unavailable {
			t.Errorf("pod %s: health check got %v, want the injected Unavailable", p.Name, last)
		}
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.resp.GetTotal().GetErrored() == 0 {
		t.Errorf("total %v: no call counted as errored", r.resp.GetTotal())
	}
}

func testNetworkFault(t *testing.T, e *env) {
	ps := e.pods(t, "app=solo")
	ip := ps[0].Status.PodIP
	ch := make(chan injectResult, 1)
	go func() {
		resp, err := e.gw.InjectNetwork(context.Background(), &pb.InjectNetworkRequest{
			Targets:  pods("shop", map[string]string{"app": "solo"}),
			Duration: dur(3 * time.Second),
			Fault:    &pb.NetworkFault{Port: 8080, Protocol: "tcp"},
		})
		ch <- injectResult{resp, err}
	}()
	dropped := false
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && !dropped; time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, "8080"), 300*time.Millisecond)
		if err != nil {
			dropped = true
		} else {
			c.Close()
		}
	}
	if !dropped {
		t.Error("connections to the pod still succeed under a drop-all network fault")
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.resp.GetTotal().GetPacketsDropped() == 0 {
		t.Errorf("total %v: nothing dropped", r.resp.GetTotal())
	}
	e.waitStatus(t, ip, 200, 2*time.Second)
}

func testRefusals(t *testing.T, e *env) {
	ctx := context.Background()
	_, err := e.gw.InjectHTTP(ctx, &pb.InjectHTTPRequest{
		Targets: pods("infra", map[string]string{"app": "hostnet"}), Duration: dur(2 * time.Second),
		Fault: &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 500, Exclude: probes},
	})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "host network") {
		t.Errorf("hostNetwork pod: got %v, want FailedPrecondition about the host network", err)
	}
	_, err = e.gw.InjectHTTP(ctx, &pb.InjectHTTPRequest{
		Targets: pods("shop", map[string]string{"app": "nothing"}), Duration: dur(2 * time.Second),
		Fault: &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 500, Exclude: probes},
	})
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "no pods found matching selector") {
		t.Errorf("no match: got %v, want NotFound naming the selector", err)
	}
	_, err = e.gw.InjectHTTP(ctx, &pb.InjectHTTPRequest{
		Targets: pods("faultline", map[string]string{"app.kubernetes.io/name": "faultlined"}), Duration: dur(2 * time.Second),
		Fault: &pb.HTTPFault{Port: 7439, ErrorRate: 1, ErrorCode: 500},
	})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "allow-protected-namespaces") {
		t.Errorf("faultline's own namespace: got %v, want FailedPrecondition", err)
	}
	_, err = e.gw.InjectHTTP(ctx, &pb.InjectHTTPRequest{
		Targets: pods("shop", map[string]string{"app": "catalog"}), Duration: dur(2 * time.Second),
		Fault: &pb.HTTPFault{Port: 8080, ErrorRate: 2, ErrorCode: 500},
	})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("errorRate 2: got %v, want InvalidArgument", err)
	}
	// Pods in a selector that matches but are not ready are listed.
	resp, err := e.gw.Targets(ctx, &pb.TargetsRequest{Targets: service("shop", "catalog")})
	if err != nil || len(resp.GetTargets()) != 3 {
		t.Errorf("targets of service catalog: %v, %v; want 3", resp, err)
	}
	// Without the gateway's token, nothing: it acts with the kubeconfig's rights.
	conn, err := grpc.NewClient("passthrough:///"+e.gwAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = pb.NewGatewayClient(conn).TerminatePods(ctx, &pb.TerminatePodsRequest{Targets: service("shop", "catalog"), Count: "1"})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("terminatePods without the token: got %v, want Unauthenticated", err)
	}
}

func testCancelMidFault(t *testing.T, e *env) {
	ip := e.pods(t, "app=solo")[0].Status.PodIP
	ctx, cancel := context.WithCancel(context.Background())
	done := e.injectHTTP(ctx, &pb.InjectHTTPRequest{
		Targets: pods("shop", map[string]string{"app": "solo"}), Duration: dur(60 * time.Second),
		Fault: &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 500, Exclude: probes},
	})
	e.waitStatus(t, ip, 500, 5*time.Second)
	cancel()
	took := e.waitStatus(t, ip, 200, 2*time.Second)
	t.Logf("cancelled: pod answers directly %s after the cancel", took)
	if r := <-done; status.Code(r.err) != codes.Canceled {
		t.Errorf("cancelled call returned %v", r.err)
	}
}

// testTimeToActive measures the time from the Inject call to each pod's
// first faulted response, for 1 pod and for 30, and faultlined's memory.
func testTimeToActive(t *testing.T, e *env) {
	pid := e.faultlinedPID(t, e.Nodes[0].Name)
	idleAfterFaults := rssKiB(t, pid)
	one := e.measure(t, "app=solo", 1)
	if out, err := e.Kubectl(context.Background(), "apply", "-f", "testdata/fleet.yaml"); err != nil {
		t.Fatal(err)
	} else {
		t.Log(out)
	}
	e.waitReady(t, "shop", "app=fleet", 30)
	var busy int
	thirty := e.measureWith(t, "app=fleet", 30, func() { busy = rssKiB(t, pid) })
	time.Sleep(3 * time.Second) // the 30 faults drain
	after := rssKiB(t, pid)
	if out, err := e.Kubectl(context.Background(), "logs", "-n", "faultline", "-l", "app.kubernetes.io/name=faultlined", "--tail=200"); err == nil {
		t.Logf("faultlined's own view: %s", startSpread(out, 30, thirty.called))
	}
	if b, err := os.ReadFile(e.path("logs", "gateway.log")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, `msg="Fault active"`) {
				t.Logf("gateway: %s", line)
			}
		}
	}
	t.Logf("\n| targets | time to first faulted response (max over pods) | median |\n|---|---|---|\n| 1 | %s | %s |\n| 30 | %s | %s |\nfaultlined RSS: idle at start %.1f MiB, idle after 7 faults %.1f MiB, with 30 active faults %.1f MiB, after them %.1f MiB",
		one.max, one.median, thirty.max, thirty.median, float64(e.startRSS)/1024, float64(idleAfterFaults)/1024, float64(busy)/1024, float64(after)/1024)
	if one.max > 3*time.Second || thirty.max > 10*time.Second {
		t.Errorf("time to active far beyond the targets (300ms, 1s): %s, %s", one.max, thirty.max)
	}
	// Wait for the fleet to go: 30 pods terminating keep the kubelet busy.
	if _, err := e.Kubectl(context.Background(), "delete", "-f", "testdata/fleet.yaml", "--wait=true", "--timeout=120s"); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(context.Background(), 120*time.Second, "fleet pods gone", func() error {
		if n := len(e.pods(t, "app=fleet")); n > 0 {
			return fmt.Errorf("%d left", n)
		}
		l, err := e.Client.CoreV1().Pods("shop").List(context.Background(), metav1.ListOptions{LabelSelector: "app=fleet"})
		if err == nil && len(l.Items) > 0 {
			return fmt.Errorf("%d pods left", len(l.Items))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

type timing struct {
	max, median time.Duration
	called      time.Time // when Inject was called
}

// pollEvery is how often each pod is asked during a measurement: the
// answer is late by up to this much, and polling 30 pods faster would load
// the 2 CPUs that faultlined needs.
const pollEvery = 10 * time.Millisecond

func (e *env) measure(t *testing.T, selector string, n int) timing {
	return e.measureWith(t, selector, n, func() {})
}

// measureWith starts a 10s error fault on the pods, polls each pod until
// its first faulted response, runs during (while every fault is active),
// then cancels the fault.
func (e *env) measureWith(t *testing.T, selector string, n int, during func()) timing {
	t.Helper()
	ps := e.pods(t, selector)
	if len(ps) != n {
		t.Fatalf("%d pods for %s, want %d", len(ps), selector, n)
	}
	label := strings.SplitN(selector, "=", 2)
	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	done := e.injectHTTP(ctx, &pb.InjectHTTPRequest{
		Targets: pods("shop", map[string]string{label[0]: label[1]}), Duration: dur(20 * time.Second),
		Fault: &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 503, Exclude: probes},
	})
	times := make([]time.Duration, len(ps))
	var wg sync.WaitGroup
	// Keep-alive polling: the fault resets established connections at its
	// start, so the next request reconnects through the proxy; new
	// connections for every poll would load the CPUs faultlined needs.
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < 15*time.Second {
				resp, err := client.Get("http://" + net.JoinHostPort(p.Status.PodIP, "8080") + "/ingredients/1")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode == 503 {
						times[i] = time.Since(start)
						return
					}
				}
				time.Sleep(pollEvery)
			}
		}()
	}
	wg.Wait()
	during()
	cancel()
	if r := <-done; r.err != nil && status.Code(r.err) != codes.Canceled {
		t.Fatalf("inject: %v", r.err)
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	for _, d := range times {
		if d == 0 {
			t.Fatalf("a pod never answered with the fault")
		}
	}
	return timing{max: times[len(times)-1].Round(time.Millisecond), median: times[len(times)/2].Round(time.Millisecond), called: start}
}

func testPodDeletedMidFault(t *testing.T, e *env) {
	ps := e.pods(t, "app=catalog")
	done := e.injectHTTP(context.Background(), &pb.InjectHTTPRequest{
		Targets: pods("shop", map[string]string{"app": "catalog"}), Duration: dur(15 * time.Second),
		Fault: &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 503, Exclude: probes},
	})
	for _, p := range ps {
		e.waitStatus(t, p.Status.PodIP, 503, 5*time.Second)
	}
	victim := ps[0]
	grace := int64(1)
	deleted := time.Now()
	if err := e.Client.CoreV1().Pods("shop").Delete(context.Background(), victim.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(context.Background(), 12*time.Second, "pod gone", func() error {
		_, err := e.Client.CoreV1().Pods("shop").Get(context.Background(), victim.Name, metav1.GetOptions{})
		if err == nil {
			return fmt.Errorf("%s still there", victim.Name)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("pod %s deleted (grace 1s) and gone after %s", victim.Name, time.Since(deleted).Round(time.Millisecond))
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := r.resp.GetTotal().GetTargetsDeleted(); got != 1 {
		t.Errorf("targets_deleted = %d, want 1", got)
	}
	for _, tr := range r.resp.GetTargets() {
		want := "expired"
		if tr.GetTarget().GetName() == victim.Name {
			want = "target-deleted"
		}
		if got := tr.GetFault().GetEndReason(); got != want {
			t.Errorf("target %s ended %q, want %q", tr.GetTarget().GetName(), got, want)
		}
	}
	e.waitReady(t, "shop", "app=catalog", 3)
}

func testDaemonKilledMidFault(t *testing.T, e *env) {
	solo := e.pods(t, "app=solo")[0]
	ip, node := solo.Status.PodIP, solo.Spec.NodeName
	done := e.injectHTTP(context.Background(), &pb.InjectHTTPRequest{
		Targets: pods("shop", map[string]string{"app": "solo"}), Duration: dur(60 * time.Second),
		Fault: &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 503, Exclude: probes},
	})
	e.waitStatus(t, ip, 503, 5*time.Second)
	pid := e.faultlinedPID(t, node)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	took := e.waitStatus(t, ip, 200, time.Second)
	t.Logf("faultlined SIGKILLed mid-fault: the pod answers directly %s later", took)
	// The restarted daemon reports the fault ended (it does not resume
	// it), and the gateway's call fails with that report.
	if r := <-done; r.err == nil || !strings.Contains(r.err.Error(), "faultlined restarted mid-fault") {
		t.Errorf("the fault's call ended with %v, want the restarted daemon's report", r.err)
	} else {
		t.Logf("the fault's call ended with: %v", r.err)
	}
	// The DaemonSet restarts it, and a new fault works.
	if err := waitFor(context.Background(), 60*time.Second, "faultlined restarted", func() error {
		l, err := e.Client.CoreV1().Pods("faultline").List(context.Background(), metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		if err != nil || len(l.Items) != 1 {
			return fmt.Errorf("%v, %d pods on node %s", err, len(l.Items), node)
		}
		p := l.Items[0]
		if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].RestartCount < 1 || !isReady(&p) {
			return fmt.Errorf("not restarted and ready yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if newPID := e.faultlinedPID(t, node); newPID == pid {
		t.Fatalf("faultlined pid unchanged (%d)", pid)
	}
	done = e.injectHTTP(context.Background(), &pb.InjectHTTPRequest{
		Targets: pods("shop", map[string]string{"app": "solo"}), Duration: dur(2 * time.Second),
		Fault: &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 503, Exclude: probes},
	})
	e.waitStatus(t, ip, 503, 5*time.Second)
	if r := <-done; r.err != nil {
		t.Fatalf("fault after the restart: %v", r.err)
	}
}

func testTerminatePods(t *testing.T, e *env) {
	before := map[string]bool{}
	for _, p := range e.pods(t, "app=catalog") {
		before[p.Name] = true
	}
	resp, err := e.gw.TerminatePods(context.Background(), &pb.TerminatePodsRequest{Targets: service("shop", "catalog"), Count: "1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetTerminated()) != 1 || !before[resp.GetTerminated()[0]] {
		t.Fatalf("terminated %v, want one of %v", resp.GetTerminated(), slices.Sorted(maps.Keys(before)))
	}
	_, err = e.Client.CoreV1().Pods("shop").Get(context.Background(), resp.GetTerminated()[0], metav1.GetOptions{})
	if err == nil {
		t.Errorf("pod %s still exists after terminatePods returned", resp.GetTerminated()[0])
	}
	_, err = e.gw.TerminatePods(context.Background(), &pb.TerminatePodsRequest{Targets: service("shop", "catalog"), Count: "0"})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("count 0: got %v, want InvalidArgument", err)
	}
	e.waitReady(t, "shop", "app=catalog", 3)
}

// startSpread summarizes the times of the last n "fault started" log lines.
func startSpread(logs string, n int, called time.Time) string {
	var times []time.Time
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, `msg="fault started"`) {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		if at, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			times = append(times, at)
		}
	}
	if len(times) < n {
		return fmt.Sprintf("%d fault-started lines", len(times))
	}
	// kubectl gives one pod's lines after the other's: order by time.
	slices.SortFunc(times, time.Time.Compare)
	times = times[len(times)-n:]
	return fmt.Sprintf("the %d faults started %s to %s after the Inject call", n, times[0].Sub(called).Round(time.Millisecond), times[n-1].Sub(called).Round(time.Millisecond))
}

// testK6Library runs an xk6-disruptor script, with only its import line
// changed, on the embedded k6 model against this cluster's gateway: a
// PodDisruptor with a named port.
func testK6Library(t *testing.T, e *env) {
	lib, err := filepath.Abs("../../k6ext/disruptor.js")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "script.js")
	src := fmt.Sprintf(`import { PodDisruptor } from %q;
export default function () {
  const d = new PodDisruptor({ namespace: 'shop', select: { labels: { app: 'catalog' } } });
  const names = d.targets();
  if (names.length !== 3) throw new Error('targets: ' + JSON.stringify(names));
  d.injectHTTPFaults({ port: 'web', errorRate: 1, errorCode: 503, exclude: '/health' }, '3s');
}
`, lib)
	if err := os.WriteFile(script, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	vu, err := k6model.New(map[string]string{"FAULTLINE_ADDR": e.gwAddr, "FAULTLINE_TOKEN": e.gwToken}).NewVU(context.Background(), script)
	if err != nil {
		t.Fatal(err)
	}
	defer vu.Close()
	done := make(chan error, 1)
	go func() { done <- vu.Call("default") }()
	for _, p := range e.pods(t, "app=catalog") {
		faulted := false
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !faulted; time.Sleep(10 * time.Millisecond) {
			select {
			case err := <-done:
				t.Fatalf("the script ended before pod %s saw the fault: %v", p.Name, err)
			default:
			}
			faulted = e.get(p.Status.PodIP) == 503
		}
		if !faulted {
			t.Errorf("pod %s never answered 503 during the script's fault", p.Name)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("script: %v", err)
	}
}

// testTCPFault: a tcp fault through the gateway, on the port a Service
// names (the solo pod's "web"): HTTP answers are late by the downstream
// latency while it lasts, and direct after.
func testTCPFault(t *testing.T, e *env) {
	ip := e.pods(t, "app=solo")[0].Status.PodIP
	ch := make(chan injectResult, 1)
	go func() {
		resp, err := e.gw.InjectTcp(context.Background(), &pb.InjectTcpRequest{
			Targets:  pods("shop", map[string]string{"app": "solo"}),
			Duration: dur(4 * time.Second),
			PortName: "web",
			Fault:    &pb.TcpFault{Downstream: []*pb.Toxic{{Kind: &pb.Toxic_Latency{Latency: &pb.LatencyToxic{Latency: dur(300 * time.Millisecond)}}}}},
		})
		ch <- injectResult{resp, err}
	}()
	slow := false
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && !slow; time.Sleep(20 * time.Millisecond) {
		start := time.Now()
		slow = e.get(ip) == 200 && time.Since(start) >= 300*time.Millisecond
	}
	if !slow {
		t.Error("no answer was late by the 300ms downstream latency")
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	if c := r.resp.GetTotal(); c.GetTcpConnections() == 0 || c.GetTcpConnectionsToxic() != c.GetTcpConnections() || c.GetBytesDownstream() == 0 {
		t.Errorf("total %v", c)
	}
	start := time.Now()
	if code := e.get(ip); code != 200 || time.Since(start) > 200*time.Millisecond {
		t.Errorf("after the fault: %d in %s, want a direct 200", code, time.Since(start))
	}
}
