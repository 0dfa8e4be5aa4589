//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/faultline-dev/faultline/pkg/kubefault"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// applyYAML runs kubectl apply -f on doc, with extra kubectl arguments
// (e.g. --as to act as another user).
func (e *env) applyYAML(t *testing.T, doc string, args ...string) (string, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "fault.yaml")
	if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return e.Kubectl(context.Background(), append([]string{"apply", "-f", f}, args...)...)
}

// faultYAML is a Fault in namespace ns with spec lines (indented 2).
func faultYAML(ns, name, spec string) string {
	return fmt.Sprintf("apiVersion: faultline.dev/v1alpha1\nkind: Fault\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n%s", name, ns, spec)
}

// testPodYAML is a pod that no fault should reach, in NAMESPACE.
const testPodYAML = `apiVersion: v1
kind: Pod
metadata:
  name: bystander
  namespace: NAMESPACE
  labels: {app: bystander}
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - name: catalog
      image: faultline.local/catalog:e2e
      imagePullPolicy: Never
`

const catalog503 = `  service: catalog
  duration: %s
  http:
    port: 8080
    errorRate: 1
    errorCode: 503
    exclude: /health
`

// faultStatus reads a Fault's status, its nodes' entries merged into one:
// the nodes' phase when they agree (else "mixed"), every node's targets.
func (e *env) faultStatus(t *testing.T, ns, name string) kubefault.NodeStatus {
	t.Helper()
	out, err := e.Kubectl(context.Background(), "get", "fault", name, "-n", ns, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var f kubefault.Fault
	if err := json.Unmarshal([]byte(out), &f); err != nil {
		t.Fatal(err)
	}
	var all kubefault.NodeStatus
	for i, n := range f.Status.Nodes {
		if i == 0 {
			all.Phase, all.Message, all.EndReason = n.Phase, n.Message, n.EndReason
		} else if n.Phase != all.Phase {
			all.Phase = "mixed"
		}
		all.Targets = append(all.Targets, n.Targets...)
	}
	slices.SortFunc(all.Targets, func(a, b kubefault.TargetStatus) int { return strings.Compare(a.Pod, b.Pod) })
	return all
}

// waitPhase waits until the Fault's status on the node is phase.
func (e *env) waitPhase(t *testing.T, ns, name, phase string) kubefault.NodeStatus {
	t.Helper()
	var st kubefault.NodeStatus
	err := waitFor(context.Background(), 20*time.Second, fmt.Sprintf("Fault %s/%s %s", ns, name, phase), func() error {
		if st = e.faultStatus(t, ns, name); st.Phase != phase {
			return fmt.Errorf("phase %q (%s)", st.Phase, st.Message)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// testFaultObjects: Faults as Kubernetes objects, applied with kubectl.
// Admission refuses invalid Faults naming the field; a namespace that has
// not opted in, or a Fault matching more pods than it allows, is refused
// in status; dryRun touches nothing; a Fault faults the catalog pods and
// its deletion ends that within a second; a user bound to the
// fault-injector Role may create Faults in its namespace, not in another.
func testFaultObjects(t *testing.T, e *env) {
	ctx := context.Background()
	for _, tc := range []struct{ spec, want string }{
		{strings.Replace(fmt.Sprintf(catalog503, "30s"), "errorRate: 1", "errorRate: 2", 1), "spec.http.errorRate: Invalid value: 2: spec.http.errorRate in body should be less than or equal to 1"},
		{fmt.Sprintf(catalog503, "10x"), "spec.duration in body should match"},
		{fmt.Sprintf(catalog503, "48h"), "duration must be from 1s to 24h"},
		{fmt.Sprintf(catalog503, "30s") + "  network: {}\n", "give exactly one fault: http, grpc, tcp or network"},
		{"  duration: 30s\n  http: {port: 8080, errorRate: 1, errorCode: 503}\n", "give selector or service"},
		{fmt.Sprintf(catalog503, "30s") + "    match: {paths: [/a]}\n    failFirst: {attempts: 0}\n", "spec.http.failFirst.attempts in body should be greater than or equal to 1"},
		{"  service: catalog\n  duration: 30s\n  tcp:\n    port: 8080\n    upstream: [{latency: {latency: 5ms}, bandwidth: {rate: 10}}]\n", "give at most one of latency, bandwidth"},
	} {
		out, err := e.applyYAML(t, faultYAML("shop", "bad", tc.spec))
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("kubectl apply of an invalid Fault: %v\n%s\nwant a refusal with %q", err, out, tc.want)
		} else {
			t.Logf("refused at admission: %s", strings.TrimSpace(out))
		}
	}
	if _, err := e.Kubectl(ctx, "get", "fault", "bad", "-n", "shop"); err == nil {
		t.Error("an invalid Fault was stored")
	}
	catalog := e.pods(t, "app=catalog")
	ip := catalog[0].Status.PodIP

	// Not opted in: refused in status, naming the label, and by the
	// gateway with that message; nothing happens.
	if out, err := e.Kubectl(ctx, "label", "namespace", "shop", kubefault.OptInLabel+"-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	optIn := func() {
		if out, err := e.Kubectl(ctx, "label", "namespace", "shop", kubefault.OptInLabel+"="+kubefault.OptInValue, "--overwrite"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	defer optIn()
	if out, err := e.applyYAML(t, faultYAML("shop", "early", fmt.Sprintf(catalog503, "20s"))); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	st := e.waitPhase(t, "shop", "early", kubefault.PhaseFailed)
	if !strings.Contains(st.Message, "label it faultline.dev/faults=enabled") {
		t.Errorf("not opted in: %q", st.Message)
	}
	_, err := e.gw.InjectHTTP(ctx, &pb.InjectHTTPRequest{Targets: pods("shop", map[string]string{"app": "catalog"}), Duration: dur(20 * time.Second),
		Fault: &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 503, Exclude: probes}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "label it faultline.dev/faults=enabled") {
		t.Errorf("gateway in a namespace not opted in: %v, want FailedPrecondition naming the label", err)
	} else {
		t.Logf("gateway in a namespace not opted in: %v", err)
	}
	if code := e.get(ip); code != 200 {
		t.Errorf("a refused Fault changed the pod's answers: %d", code)
	}
	e.Kubectl(ctx, "delete", "fault", "early", "-n", "shop")
	optIn()

	// Over-broad, then dry run.
	e.applyYAML(t, faultYAML("shop", "broad", fmt.Sprintf(catalog503, "20s")+"  maxTargets: 2\n"))
	if st := e.waitPhase(t, "shop", "broad", kubefault.PhaseFailed); !strings.Contains(st.Message, "more than 2 pods match") {
		t.Errorf("over-broad: %q", st.Message)
	}
	e.Kubectl(ctx, "delete", "fault", "broad", "-n", "shop")
	e.applyYAML(t, faultYAML("shop", "dry", fmt.Sprintf(catalog503, "20s")+"  dryRun: true\n"))
	if st := e.waitPhase(t, "shop", "dry", kubefault.PhaseDryRun); len(st.Targets) != 3 || e.get(ip) != 200 {
		t.Errorf("dry run: %+v, the pod answers %d", st, e.get(ip))
	}
	e.Kubectl(ctx, "delete", "fault", "dry", "-n", "shop")

	// The fault, through a user who holds only the fault-injector Role.
	if out, err := e.Kubectl(ctx, "apply", "-f", "../../deploy/examples/fault-injector-role.yaml"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	as := []string{"--as", "alice", "--as-group", "shop-team"}
	applied := time.Now()
	if out, err := e.applyYAML(t, faultYAML("shop", "catalog-down", fmt.Sprintf(catalog503, "60s")), as...); err != nil {
		t.Fatalf("alice in shop: %v\n%s", err, out)
	}
	toFault := e.waitStatus(t, ip, 503, 10*time.Second)
	t.Logf("Fault applied by alice: pod answers 503 %s after kubectl apply returned (%s after it was called)", toFault, time.Since(applied)-toFault)
	st = e.waitPhase(t, "shop", "catalog-down", kubefault.PhaseActive)
	if len(st.Targets) != 3 || st.Targets[0].State != "active" {
		t.Errorf("status %+v", st)
	}
	for _, p := range catalog {
		if code := e.get(p.Status.PodIP); code != 503 {
			t.Errorf("pod %s answers %d under the Fault", p.Name, code)
		}
	}
	out, _ := e.Kubectl(ctx, "get", "faults", "-n", "shop", "-o", "wide")
	t.Logf("kubectl get faults -o wide:\n%s", out)
	if !strings.Contains(out, "catalog-down") || !strings.Contains(out, "Active") {
		t.Errorf("kubectl get faults shows no active catalog-down")
	}
	e.Kubectl(ctx, "create", "namespace", "other")
	defer e.Kubectl(ctx, "delete", "namespace", "other", "--wait=false")
	if out, err := e.applyYAML(t, faultYAML("other", "elsewhere", fmt.Sprintf(catalog503, "60s")), as...); err == nil || !strings.Contains(out, "Forbidden") && !strings.Contains(out, "forbidden") {
		t.Errorf("alice in namespace other: %v\n%s\nwant Forbidden", err, out)
	} else {
		t.Logf("alice in namespace other: %s", strings.TrimSpace(out))
	}
	if out, err := e.Kubectl(ctx, "label", "namespace", "other", kubefault.OptInLabel+"="+kubefault.OptInValue); err != nil {
		t.Fatalf("%v\n%s", err, out) // opted in: only RBAC stands in the way
	}
	if out, err := e.applyYAML(t, strings.Replace(testPodYAML, "NAMESPACE", "other", 1)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}

	// The same through a gateway acting as alice: the fault in shop, which
	// the Fault above already holds (a second fault on the same port is
	// refused), and PermissionDenied in other, where nothing happens.
	alice := e.startGateway(t, "gateway-alice", e.userKubeconfig(t, "alice", "shop-team"))
	_, err = alice.client.InjectHTTP(ctx, &pb.InjectHTTPRequest{Targets: pods("other", map[string]string{"app": "bystander"}), Duration: dur(20 * time.Second),
		Fault: &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 503}})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("alice's gateway in namespace other: %v, want PermissionDenied", err)
	} else {
		t.Logf("alice's gateway in namespace other: %v", err)
	}
	if out, _ := e.Kubectl(ctx, "get", "faults", "-n", "other", "-o", "name"); strings.TrimSpace(out) != "" {
		t.Errorf("Faults in namespace other: %s", out)
	}

	deleted := time.Now()
	if out, err := e.Kubectl(ctx, "delete", "fault", "catalog-down", "-n", "shop", "--wait=false", "--as", "alice", "--as-group", "shop-team"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	called := time.Since(deleted)
	var direct time.Duration
	for _, p := range catalog { // on both nodes
		e.waitStatus(t, p.Status.PodIP, 200, 5*time.Second)
		direct = time.Since(deleted) - called
	}
	t.Logf("kubectl delete fault: every pod (both nodes) answers 200 again %s after it returned (kubectl took %s)", direct, called)
	if direct > time.Second {
		t.Errorf("the fault outlived its Fault by %s, want at most 1s", direct)
	}
	aliceShop := time.Now()
	resp, err := alice.client.InjectHTTP(ctx, &pb.InjectHTTPRequest{Targets: pods("shop", map[string]string{"app": "catalog"}), Duration: dur(2 * time.Second),
		Fault: &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 503, Exclude: probes}})
	if err != nil || len(resp.GetTargets()) != 3 {
		t.Errorf("alice's gateway in shop: %v, %v", resp, err)
	} else {
		t.Logf("alice's gateway in shop: 3 targets faulted for 2s, the call took %s", time.Since(aliceShop).Round(time.Millisecond))
	}
	// kubectl describe pod shows what was done to the pod, by which Fault.
	err = waitFor(ctx, 10*time.Second, "FaultEnded event on "+catalog[0].Name, func() error {
		out, err := e.Kubectl(ctx, "describe", "pod", "-n", "shop", catalog[0].Name)
		if err != nil {
			return err
		}
		if !strings.Contains(out, "FaultStarted") || !strings.Contains(out, "FaultEnded") {
			return fmt.Errorf("no FaultStarted and FaultEnded events yet")
		}
		i := strings.Index(out, "Events:")
		t.Logf("kubectl describe pod %s:\n%s", catalog[0].Name, out[i:])
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// testRevokeAll: one command ends every fault in the cluster: a Fault
// object on the catalog pods and a gateway's (a Fault it holds) on solo,
// within a second.
func testRevokeAll(t *testing.T, e *env) {
	ctx := context.Background()
	catalog, solo := e.pods(t, "app=catalog"), e.pods(t, "app=solo")
	if out, err := e.applyYAML(t, faultYAML("shop", "catalog-down", fmt.Sprintf(catalog503, "60s"))); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	gwDone := e.injectHTTP(ctx, &pb.InjectHTTPRequest{Targets: pods("shop", map[string]string{"app": "solo"}), Duration: dur(time.Minute),
		Fault: &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 500, Exclude: probes}})
	e.waitStatus(t, catalog[0].Status.PodIP, 503, 10*time.Second)
	e.waitStatus(t, solo[0].Status.PodIP, 500, 10*time.Second)

	start := time.Now()
	cmd := exec.Command(filepath.Join(e.path("bin"), "faultline"), "revoke", "--all", "--kubeconfig", e.Kubeconfig)
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("faultline revoke --all: %v\n%s", err, out)
	}
	for _, p := range append(catalog, solo...) {
		e.waitStatus(t, p.Status.PodIP, 200, 5*time.Second)
	}
	end := time.Since(start) // the command and the slowest pod
	t.Logf("faultline revoke --all took %s; every pod answered directly %s after it started:\n%s", took, end, out)
	if !strings.Contains(string(out), "deleted Fault shop/catalog-down") || !strings.Contains(string(out), "deleted Fault shop/faultline-http-") {
		t.Errorf("revoke --all output:\n%s", out)
	}
	if end > time.Second {
		t.Errorf("revoke --all ended every fault in %s, want at most 1s", end)
	}
	if r := <-gwDone; r.err != nil && status.Code(r.err) != codes.OK {
		t.Logf("the gateway's inject call ended: %v", r.err)
	}
	if _, err := e.Kubectl(ctx, "get", "fault", "catalog-down", "-n", "shop"); err == nil {
		t.Error("the Fault object is still there")
	}
}

// testGatewayKilled: a gateway killed with SIGKILL mid-fault stops
// renewing its Fault's lease, and the node ends the fault within 2s; the
// Fault, left behind, says why.
func testGatewayKilled(t *testing.T, e *env) {
	ctx := context.Background()
	ip := e.pods(t, "app=solo")[0].Status.PodIP
	gw := e.startGateway(t, "gateway-killed", e.Kubeconfig)
	go gw.client.InjectHTTP(ctx, &pb.InjectHTTPRequest{Targets: pods("shop", map[string]string{"app": "solo"}), Duration: dur(time.Minute),
		Fault: &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 503, Exclude: probes}})
	e.waitStatus(t, ip, 503, 10*time.Second)
	killed := time.Now()
	if err := gw.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	took := e.waitStatus(t, ip, 200, 5*time.Second)
	t.Logf("gateway SIGKILLed mid-fault: the pod answers directly %s later (%s after the kill)", took, time.Since(killed).Round(time.Millisecond))
	if time.Since(killed) > 2*time.Second {
		t.Errorf("the fault outlived its gateway by %s, want at most 2s", time.Since(killed))
	}
	out, err := e.Kubectl(ctx, "get", "faults", "-n", "shop", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Fields(out)
	if len(names) != 1 {
		t.Fatalf("Faults left: %q, want the killed gateway's", names)
	}
	name := strings.TrimPrefix(names[0], "fault.faultline.dev/")
	if st := e.waitPhase(t, "shop", name, kubefault.PhaseEnded); st.EndReason != kubefault.EndLeaseExpired {
		t.Errorf("the orphaned Fault's status: %+v", st)
	}
	e.Kubectl(ctx, "delete", "fault", name, "-n", "shop")
}

// planYAML is a FaultPlan of the seed incident and a second dependency:
// the catalog (shop) slow by 300ms for catalogFor, and from payAt the
// payments pod (namespace payments) answering 503 for payFor.
func planYAML(name string, catalogFor, payAt, payFor time.Duration) string {
	return fmt.Sprintf(`apiVersion: faultline.dev/v1alpha1
kind: FaultPlan
metadata:
  name: %s
spec:
  steps:
    - name: catalog-slow
      namespace: shop
      service: catalog
      duration: %s
      http: {port: 8080, averageDelay: 300ms, exclude: /health}
    - name: payments-down
      namespace: payments
      selector: {matchLabels: {app: bystander}}
      start: %s
      duration: %s
      http: {port: 8080, errorRate: 1, errorCode: 503}
`, name, catalogFor, payAt, payFor)
}

// testFaultPlan: faultline apply -f runs a plan across two namespaces
// with its offsets and prints the timeline; Ctrl-C ends every step at
// once; the same YAML through kubectl apply runs until kubectl delete.
func testFaultPlan(t *testing.T, e *env) {
	ctx := context.Background()
	e.Kubectl(ctx, "create", "namespace", "payments")
	defer e.Kubectl(ctx, "delete", "namespace", "payments", "--wait=false")
	if out, err := e.Kubectl(ctx, "label", "namespace", "payments", kubefault.OptInLabel+"="+kubefault.OptInValue, "--overwrite"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := e.applyYAML(t, strings.Replace(testPodYAML, "NAMESPACE", "payments", 1)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var pay string
	if err := waitFor(ctx, 60*time.Second, "payments pod running", func() error {
		p, err := e.Client.CoreV1().Pods("payments").Get(ctx, "bystander", metav1.GetOptions{})
		if err != nil || p.Status.PodIP == "" || e.get(p.Status.PodIP) != 200 {
			return fmt.Errorf("not serving yet (%v)", err)
		}
		pay = p.Status.PodIP
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	catalog := e.pods(t, "app=catalog")[0].Status.PodIP
	slow := func() bool {
		start := time.Now()
		return e.get(catalog) == 200 && time.Since(start) >= 290*time.Millisecond
	}
	file := filepath.Join(t.TempDir(), "plan.yaml")
	bin := filepath.Join(e.path("bin"), "faultline")

	// The whole plan: 6s of slow catalog; payments down from +2s for 3s.
	os.WriteFile(file, []byte(planYAML("incident", 6*time.Second, 2*time.Second, 3*time.Second)), 0o644)
	var out strings.Builder
	cmd := exec.Command(bin, "apply", "-f", file, "--kubeconfig", e.Kubeconfig)
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	e.waitStatus(t, pay, 200, time.Second)
	if err := waitFor(ctx, 3*time.Second, "catalog slow", func() error {
		if !slow() {
			return fmt.Errorf("not slow")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	toDown := e.waitStatus(t, pay, 503, 5*time.Second)
	at := time.Since(start)
	toUp := e.waitStatus(t, pay, 200, 6*time.Second)
	t.Logf("plan: payments down %s after apply started (offset 2s), up again %s later (duration 3s)", at.Round(time.Millisecond), toUp.Round(time.Millisecond))
	if at < 1500*time.Millisecond || toUp < 2*time.Second {
		t.Errorf("payments down at +%s for %s, want from +2s for 3s (waited %s)", at, toUp, toDown)
	}
	select {
	case err := <-done:
		t.Logf("faultline apply (%v, after %s):\n%s", err, time.Since(start).Round(time.Millisecond), out.String())
		if err != nil || !strings.Contains(out.String(), "catalog-slow") || !strings.Contains(out.String(), "payments-down") || !strings.Contains(out.String(), "expired") {
			t.Errorf("faultline apply: %v", err)
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("faultline apply did not end:\n%s", out.String())
	}
	if left, _ := e.Kubectl(ctx, "get", "faultplans", "-o", "name"); strings.TrimSpace(left) != "" {
		t.Errorf("FaultPlans left after faultline apply: %s", left)
	}

	// Ctrl-C mid-plan ends every step.
	os.WriteFile(file, []byte(planYAML("interrupted", time.Minute, 0, time.Minute)), 0o644)
	out.Reset()
	cmd = exec.Command(bin, "apply", "-f", file, "--kubeconfig", e.Kubeconfig)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done = make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	e.waitStatus(t, pay, 503, 10*time.Second)
	interrupted := time.Now()
	cmd.Process.Signal(os.Interrupt)
	e.waitStatus(t, pay, 200, 5*time.Second)
	took := time.Since(interrupted)
	err := <-done
	t.Logf("Ctrl-C: payments direct %s after it; faultline apply exited (%v):\n%s", took.Round(time.Millisecond), err, out.String())
	if took > time.Second {
		t.Errorf("Ctrl-C ended the plan in %s, want at most 1s", took)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 || !strings.Contains(out.String(), "interrupted") {
		t.Errorf("faultline apply after Ctrl-C: %v, want exit status 130 and a line saying so", err)
	}
	if slow() {
		t.Error("the catalog is still slow after Ctrl-C")
	}

	// kubectl apply of the same YAML, until kubectl delete.
	if o, err := e.applyYAML(t, planYAML("by-kubectl", time.Minute, 0, time.Minute)); err != nil {
		t.Fatalf("%v\n%s", err, o)
	}
	e.waitStatus(t, pay, 503, 10*time.Second)
	if o, err := e.Kubectl(ctx, "get", "faultplan", "by-kubectl", "-o", "wide"); err == nil {
		t.Logf("kubectl get faultplan:\n%s", o)
	}
	deleted := time.Now()
	e.Kubectl(ctx, "delete", "faultplan", "by-kubectl", "--wait=false")
	e.waitStatus(t, pay, 200, 5*time.Second)
	if took := time.Since(deleted); took > 1500*time.Millisecond {
		t.Errorf("kubectl delete faultplan ended it in %s", took)
	}
}
