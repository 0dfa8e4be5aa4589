package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/faultline-dev/faultline/internal/testkit/proctest"
	"github.com/faultline-dev/faultline/internal/testkit/promtest"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// faultSeries counts the faultline_fault* lines of a scrape of faultlined.
func faultSeries(t *testing.T, metricsAddr string) int {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "faultline_fault") {
			n++
		}
	}
	return n
}

// TestPrometheusScrapesAnHTTPFault: a real Prometheus scrapes faultlined
// during an HTTP fault (100 ms ± 20 ms on every request, 503 on half) over
// 1,000 requests with 1,000 distinct paths. PromQL then gives the counters
// the fault returned at its end, the error share is the requested one
// within binomial noise, every observed delay lies in the requested
// interval's bucket, and the paths added no series.
func TestPrometheusScrapesAnHTTPFault(t *testing.T) {
	metricsAddr := promtest.FreePort(t)
	nd := newNode(t, "--metrics-listen", metricsAddr)
	prom := promtest.Start(t, metricsAddr)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	final := make(chan *pb.InjectResponse, 1)
	go func() {
		resp, err := proctest.Inject(ctx, nd.api, nd.httpRequest(time.Minute, &pb.HTTPFault{
			AverageDelay: durationpb.New(100 * time.Millisecond), DelayVariation: durationpb.New(20 * time.Millisecond),
			ErrorRate: 0.5, ErrorCode: 503}))
		if err != nil {
			t.Error(err)
		}
		final <- resp
	}()
	id := nd.waitFaults(t, 1)[0].GetId()

	base := nd.url[:len(nd.url)-1]
	if resp, err := nd.http.Get(base + "/warm"); err == nil {
		resp.Body.Close()
	}
	before := faultSeries(t, metricsAddr)

	const requests, conc = 1000, 20
	var wg sync.WaitGroup
	next := make(chan int)
	var mu sync.Mutex
	codes := map[int]int{}
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				resp, err := nd.http.Get(fmt.Sprintf("%s/p/%d", base, i))
				if err != nil {
					t.Error(err)
					continue
				}
				resp.Body.Close()
				mu.Lock()
				codes[resp.StatusCode]++
				mu.Unlock()
			}
		}()
	}
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < requests && time.Now().Before(deadline); i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if after := faultSeries(t, metricsAddr); after != before {
		t.Errorf("1,000 distinct paths changed faultline_fault* series from %d to %d", before, after)
	}

	// A scrape during the fault already sees it.
	sel := fmt.Sprintf(`{fault=%q}`, id)
	waitFor(t, 10*time.Second, func() bool {
		return promtest.Query(t, prom, "faultline_fault_requests_total"+sel) > 0 && promtest.Query(t, prom, "faultline_fault_bpf_links"+sel) == 1 &&
			promtest.Query(t, prom, "faultline_bpf_links_open") == 1 && promtest.Query(t, prom, `faultline_faults_active{kind="http"}`) == 1
	})

	if _, err := nd.api.Revoke(ctx, &pb.RevokeRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	c := (<-final).GetFault().GetCounters()
	t.Logf("final counters: %v; client saw %v", c, codes)
	waitFor(t, 10*time.Second, func() bool {
		return promtest.Query(t, prom, "faultline_fault_requests_total"+sel) == float64(c.GetRequests()) &&
			promtest.Query(t, prom, "faultline_fault_requests_errored_total"+sel) == float64(c.GetErrored())
	})
	// The end and the links it released show by the next scrapes.
	waitFor(t, 10*time.Second, func() bool {
		return promtest.Query(t, prom, `faultline_faults_ended_total{reason="revoked"}`) == 1 &&
			promtest.Query(t, prom, "faultline_bpf_links_open") == 0 &&
			promtest.Query(t, prom, "faultline_fault_bpf_links"+sel) == 0
	})

	// The error share is the requested 0.5 within 4 standard deviations.
	share := float64(c.GetErrored()) / float64(c.GetRequests())
	if sigma := 0.5 / 31.6; share < 0.5-4*sigma || share > 0.5+4*sigma {
		t.Errorf("error share %.3f over %d requests, want 0.5 ± %.3f", share, c.GetRequests(), 4*sigma)
	}
	// Every delay spent lies in (75 ms, 125 ms]: the requested [80, 120] ms
	// and the timer's slack.
	count := promtest.Query(t, prom, "faultline_fault_delay_seconds_count"+sel)
	in := promtest.Query(t, prom, fmt.Sprintf(`faultline_fault_delay_seconds_bucket{fault=%q,le="0.125"}`, id)) -
		promtest.Query(t, prom, fmt.Sprintf(`faultline_fault_delay_seconds_bucket{fault=%q,le="0.075"}`, id))
	if count != float64(c.GetDelayed()) || in < 0.99*count {
		t.Errorf("delay histogram: %v observations (%v in (75, 125] ms), fault delayed %d", count, in, c.GetDelayed())
	}
	if n := promtest.Query(t, prom, "faultline_proxy_overhead_seconds_count"+sel); n < 0 {
		t.Error("no overhead histogram")
	}
	checkDashboard(t, prom)
}

// checkDashboard runs every query of the shipped Grafana dashboard
// against prom: each must parse and evaluate.
func checkDashboard(t *testing.T, prom string) {
	t.Helper()
	b, err := os.ReadFile("../../deploy/examples/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct{ Targets []struct{ Expr string } }
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			q := strings.ReplaceAll(tg.Expr, "$__range", "5m")
			resp, err := http.Get("http://" + prom + "/api/v1/query?query=" + url.QueryEscape(q))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("dashboard query %s: %s", q, body)
			}
			n++
		}
	}
	if n < 10 {
		t.Errorf("dashboard has %d queries", n)
	}
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s", d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestFaultlinedLogsJSON: --log-format json gives one JSON object per
// line, with the same keys as the text format; a bad format exits 2.
func TestFaultlinedLogsJSON(t *testing.T) {
	bin := filepath.Join(binDir, "faultlined")
	if out, err := exec.Command(bin, "--log-format", "yaml").CombinedOutput(); err == nil || !strings.Contains(string(out), "must be text or json") {
		t.Errorf("--log-format yaml: %v, %q", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--socket", filepath.Join(t.TempDir(), "s.sock"), "--log-format", "json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	dec := json.NewDecoder(stderr)
	for {
		var line map[string]any
		if err := dec.Decode(&line); err != nil {
			t.Fatalf("log line is not JSON: %v", err)
		}
		if line["msg"] == "faultlined ready" {
			if line["level"] != "INFO" || line["socket"] == nil || line["time"] == nil {
				t.Errorf("ready line %v lacks level, socket or time", line)
			}
			return
		}
	}
}
