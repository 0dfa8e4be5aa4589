//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/faultline-dev/faultline/internal/testkit/promtest"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// testMetricsAndStatus: Debian's prometheus scrapes the DaemonSet's
// faultlined of every node on its pod IP (port "metrics") during an HTTP fault on the
// three catalog pods; during the fault the gateway's Status and
// `faultline status` show the three with live counters; after it, PromQL
// gives each target's requests and errors as the fault returned them.
func testMetricsAndStatus(t *testing.T, e *env) {
	daemons, err := e.Client.CoreV1().Pods("faultline").List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=faultlined"})
	if err != nil || len(daemons.Items) != len(e.Nodes) {
		t.Fatalf("faultlined pods: %v, %v", daemons, err)
	}
	var scrape []string
	for _, d := range daemons.Items {
		scrape = append(scrape, d.Status.PodIP+":9464")
	}
	prom := promtest.Start(t, scrape...)
	if err := waitFor(context.Background(), 30*time.Second, "prometheus scraping every faultlined", func() error {
		if up := promtest.Query(t, prom, `sum(up{job="faultlined"})`); up != float64(len(scrape)) {
			return fmt.Errorf("%v of %d targets up", up, len(scrape))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	ps := e.pods(t, "app=catalog")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := e.injectHTTP(ctx, &pb.InjectHTTPRequest{
		Targets:  pods("shop", map[string]string{"app": "catalog"}),
		Duration: dur(8 * time.Second),
		Fault:    &pb.HTTPFault{Port: 8080, ErrorRate: 0.5, ErrorCode: 503, Exclude: probes},
	})
	for _, p := range ps {
		e.waitStatus(t, p.Status.PodIP, 503, 5*time.Second)
	}
	const perPod = 100
	for range perPod {
		for _, p := range ps {
			e.get(p.Status.PodIP)
		}
	}

	// Live, through the gateway and through the CLI's own (Kubernetes
	// mode: the Faults' status, which the nodes refresh when asked).
	st, err := e.gw.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GetFaults()) != 3 || st.GetTotal().GetRequests() < 3*perPod || len(st.GetUnreachable()) != 0 {
		t.Errorf("gateway status during the fault: %d faults, total %v, unreachable %v", len(st.GetFaults()), st.GetTotal(), st.GetUnreachable())
	}
	cmd := exec.Command(filepath.Join(e.path("bin"), "faultline"), "status", "--kubeconfig", e.Kubeconfig, "-o", "json")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("faultline status: %v %s", err, stderr(err))
	}
	var cli pb.StatusResponse
	if err := protojson.Unmarshal(out, &cli); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	for _, f := range cli.GetFaults() {
		if f.GetTarget().GetNamespace() != "shop" || f.GetTarget().GetNode() == "" || f.GetFault().GetState() != pb.FaultState_FAULT_STATE_ACTIVE ||
			time.Until(f.GetFault().GetExpires().AsTime()) <= 0 {
			t.Errorf("faultline status: %v", f)
		}
	}
	if len(cli.GetFaults()) != 3 || cli.GetTotal().GetRequests() < 3*perPod {
		t.Errorf("faultline status: %d faults, total %v", len(cli.GetFaults()), cli.GetTotal())
	}

	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	for _, tr := range r.resp.GetTargets() {
		id, c := tr.GetFault().GetId(), tr.GetFault().GetCounters()
		sel := fmt.Sprintf(`{fault=%q,namespace="shop",target=%q}`, id, tr.GetTarget().GetName())
		if err := waitFor(context.Background(), 10*time.Second, "prometheus at the final counters of "+id, func() error {
			req, errd := promtest.Query(t, prom, "faultline_fault_requests_total"+sel), promtest.Query(t, prom, "faultline_fault_requests_errored_total"+sel)
			if req != float64(c.GetRequests()) || errd != float64(c.GetErrored()) {
				return fmt.Errorf("PromQL requests %v errored %v; the fault returned %d and %d", req, errd, c.GetRequests(), c.GetErrored())
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		if c.GetErrored() == 0 || c.GetErrored() == c.GetRequests() {
			t.Errorf("target %s: %d of %d errored at rate 0.5", tr.GetTarget().GetName(), c.GetErrored(), c.GetRequests())
		}
	}
	t.Logf("prometheus gave the final counters of %d targets (total %v)", len(r.resp.GetTargets()), r.resp.GetTotal())
}

func stderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
