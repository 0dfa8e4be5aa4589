//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

const catalog503 = `  service: catalog
  duration: %s
  http:
    port: 8080
    errorRate: 1
    errorCode: 503
    exclude: /health
`

// faultStatus reads a Fault's status entry of the e2e node.
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
	for _, n := range f.Status.Nodes {
		if n.Node == nodeName {
			return n
		}
	}
	return kubefault.NodeStatus{}
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

	// Not opted in: refused in status, naming the label; nothing happens.
	if out, err := e.applyYAML(t, faultYAML("shop", "early", fmt.Sprintf(catalog503, "20s"))); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	st := e.waitPhase(t, "shop", "early", kubefault.PhaseFailed)
	if !strings.Contains(st.Message, "label it faultline.dev/faults=enabled") {
		t.Errorf("not opted in: %q", st.Message)
	}
	if code := e.get(ip); code != 200 {
		t.Errorf("a refused Fault changed the pod's answers: %d", code)
	}
	e.Kubectl(ctx, "delete", "fault", "early", "-n", "shop")
	if out, err := e.Kubectl(ctx, "label", "namespace", "shop", kubefault.OptInLabel+"="+kubefault.OptInValue); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	defer e.Kubectl(ctx, "label", "namespace", "shop", kubefault.OptInLabel+"-")

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

	deleted := time.Now()
	if out, err := e.Kubectl(ctx, "delete", "fault", "catalog-down", "-n", "shop", "--wait=false", "--as", "alice", "--as-group", "shop-team"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	called := time.Since(deleted)
	direct := e.waitStatus(t, ip, 200, 5*time.Second)
	t.Logf("kubectl delete fault: pods answer 200 again %s after it returned (kubectl took %s)", direct, called)
	if direct > time.Second {
		t.Errorf("the fault outlived its Fault by %s, want at most 1s", direct)
	}
	// kubectl describe pod shows what was done to the pod, by which Fault.
	err := waitFor(ctx, 10*time.Second, "FaultEnded event on "+catalog[0].Name, func() error {
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
// object on the catalog pods and a gateway fault on solo, within a second.
func testRevokeAll(t *testing.T, e *env) {
	ctx := context.Background()
	if out, err := e.Kubectl(ctx, "label", "namespace", "shop", kubefault.OptInLabel+"="+kubefault.OptInValue, "--overwrite"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	defer e.Kubectl(ctx, "label", "namespace", "shop", kubefault.OptInLabel+"-")
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
	if !strings.Contains(string(out), "deleted Fault shop/catalog-down") || !strings.Contains(string(out), "solo") {
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
