package local

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/faultline-dev/faultline/internal/testkit/k6model"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// TestStatusShowsLiveCounters: while a fault runs on two containers,
// `faultline status` (table and JSON) and the k6 library's status() give
// its targets, time left and the counters of the requests sent so far.
func TestStatusShowsLiveCounters(t *testing.T) {
	l := newLab(t)
	l.shop(t)
	gw := l.serveGateway(t)
	p := script(t, `
export function inject() {
  new ServiceDisruptor('catalog', 'shop').injectHTTPFaults({port: 8080, errorRate: 1, errorCode: 503}, '30s');
}
export function probe() {
  globalThis.status = JSON.stringify(new ServiceDisruptor('catalog', 'shop').status());
}`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	injector, err := k6model.New(gw).NewVU(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer injector.Close()
	done := make(chan error, 1)
	go func() { done <- injector.Call("inject") }()
	waitFaults(t, l, 2)
	const perTarget = 7
	for range perTarget {
		for _, name := range []string{"catalog-1", "catalog-2"} {
			if code := l.status(t, name); code != 503 {
				t.Fatalf("%s during the fault: %d", name, code)
			}
		}
	}

	// The CLI, every fault on this machine, as JSON.
	out, err := l.faultline("status", "--local", "-o", "json").Output()
	if err != nil {
		t.Fatalf("faultline status: %v", stderrOf(err))
	}
	var resp pb.StatusResponse
	if err := protojson.Unmarshal(out, &resp); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(resp.GetFaults()) != 2 || resp.GetTotal().GetRequests() != 2*perTarget || resp.GetTotal().GetErrored() != 2*perTarget {
		t.Errorf("status: %d faults, total %v; want 2 and %d requests, all errored", len(resp.GetFaults()), resp.GetTotal(), 2*perTarget)
	}
	for _, f := range resp.GetFaults() {
		left := time.Until(f.GetFault().GetExpires().AsTime())
		if f.GetFault().GetState() != pb.FaultState_FAULT_STATE_ACTIVE || left < 20*time.Second || left > 30*time.Second || f.GetTarget().GetNode() != "local" {
			t.Errorf("fault %v: state, time left %s or node wrong", f, left)
		}
	}

	// The table, for one service's targets.
	out, err = l.faultline("status", "--local", "-n", "shop", "--service", "catalog").Output()
	if err != nil {
		t.Fatalf("faultline status: %v", stderrOf(err))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "LEFT") || !strings.Contains(lines[1], "shop/catalog-") || !strings.Contains(lines[1], "active") {
		t.Errorf("table:\n%s", out)
	}

	// The k6 library, from another VU while the fault runs.
	prober, err := k6model.New(gw).NewVU(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer prober.Close()
	if err := prober.Call("probe"); err != nil {
		t.Fatal(err)
	}
	var st struct {
		Faults []struct {
			Target, State string
			RemainingMs   float64
			Counters      map[string]float64
		}
		Total map[string]float64
	}
	if err := json.Unmarshal([]byte(prober.Global("status")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Faults) != 2 || st.Total["requests"] != 2*perTarget || st.Total["errored"] != 2*perTarget ||
		st.Faults[0].State != "active" || st.Faults[0].RemainingMs < 20000 || st.Faults[0].Counters["errored"] != perTarget {
		t.Errorf("k6 status(): %s", prober.Global("status"))
	}
	t.Logf("k6 status(): %s", prober.Global("status"))

	cancel()
	<-done
	waitFaults(t, l, 0)
	out, err = l.faultline("status", "--local").Output()
	if err != nil || strings.TrimSpace(string(out)) != "no faults running" {
		t.Errorf("after the fault: %q, %v", out, stderrOf(err))
	}
}

// TestStatusWithoutFaultlined: one line naming the socket, exit 1.
func TestStatusWithoutFaultlined(t *testing.T) {
	l := newLab(t)
	cmd := l.faultline("status", "--local", "--socket", "/nonexistent/faultlined.sock")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(errb.String(), "/nonexistent/faultlined.sock") || strings.Count(errb.String(), "\n") != 1 {
		t.Errorf("got %v, %q", err, errb.String())
	}
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return err.Error() + ": " + string(ee.Stderr)
	}
	if err == nil {
		return ""
	}
	return err.Error()
}
