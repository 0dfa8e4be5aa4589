package local

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/faultline-dev/faultline/internal/incident"
	"github.com/faultline-dev/faultline/internal/k6model"
	"github.com/faultline-dev/faultline/pkg/gateway"
)

// serveGateway serves the lab's gateway on a loopback port, as faultline
// run does, and returns its address.
func (l *lab) serveGateway(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := gateway.NewGRPCServer(l.gw)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

// model returns a k6 model whose scripts' connections leave from the
// lab's client namespace, like a k6 on a client host.
func (l *lab) model(envs map[string]string) *k6model.Model {
	m := k6model.New(envs)
	clientDial := l.client.Dial()
	m.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if strings.HasPrefix(addr, "127.") { // the gateway, as faultline run serves it
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
		return clientDial(ctx, network, addr)
	}
	return m
}

// script writes a k6 script importing the library and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	lib, _ := filepath.Abs("../../k6ext/disruptor.js")
	p := filepath.Join(t.TempDir(), "script.js")
	src := fmt.Sprintf("import { PodDisruptor, ServiceDisruptor } from %q;\n%s\n", lib, body)
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// demo starts the demo's services in the lab: catalog (namespace demo,
// service catalog, HTTP 8080, gRPC 9000) and recommendations.
func (l *lab) demo(t *testing.T) (catalog, reco string) {
	t.Helper()
	l.run(t, "catalog", map[string]string{"faultline.namespace": "demo", "app": "catalog", "faultline.service": "catalog", "faultline.port": "8080"})
	catalog = l.url("catalog")
	l.runImage(t, env.reco, "recommendations", map[string]string{"faultline.namespace": "demo", "app": "recommendations"},
		"CATALOG_URL="+catalog, "CALLS=4", "RETRIES=0")
	return catalog, l.url("recommendations")
}

func TestK6InjectBlocksForItsDuration(t *testing.T) {
	l := newLab(t)
	l.demo(t)
	addr := l.serveGateway(t)
	p := script(t, `export default function () { new ServiceDisruptor('catalog', 'demo').injectHTTPFaults({averageDelay: '10ms'}, '5s'); }`)
	vu, err := k6model.New(map[string]string{"FAULTLINE_ADDR": addr}).NewVU(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	defer vu.Close()
	stop := make(chan struct{})
	go func() { // traffic, so that the fault sees requests
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				l.status(t, "catalog")
			}
		}
	}()
	start := time.Now()
	err = vu.Call("default")
	close(stop)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if took < 5*time.Second || took > 5500*time.Millisecond {
		t.Errorf("injectHTTPFaults(f, '5s') returned after %s", took)
	}
	t.Logf("returned after %s", took)
}

func TestK6InterruptRevokesEveryTarget(t *testing.T) {
	l := newLab(t)
	l.shop(t)
	addr := l.serveGateway(t)
	p := script(t, `export default function () { new ServiceDisruptor('catalog', 'shop').injectHTTPFaults({port: 8080, errorRate: 1, errorCode: 503}, '60s'); }`)
	ctx, cancel := context.WithCancel(context.Background())
	vu, err := k6model.New(map[string]string{"FAULTLINE_ADDR": addr}).NewVU(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer vu.Close()
	done := make(chan error, 1)
	go func() { done <- vu.Call("default") }()
	waitFaults(t, l, 2)
	if code := l.status(t, "catalog-1"); code != 503 {
		t.Fatalf("during the fault: %d", code)
	}
	cancel()
	interrupted := time.Now()
	<-done
	for _, name := range []string{"catalog-1", "catalog-2"} {
		for {
			resp, err := l.http().Get(l.url(name) + "/ingredients/1")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Since(interrupted) > time.Second {
				t.Fatalf("%s still faulted 1s after the interrupt: %v", name, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFaults(t, l, 0)
	t.Logf("every target back to direct %s after the interrupt", time.Since(interrupted).Round(time.Millisecond))
}

func TestK6TerminatePods(t *testing.T) {
	l := newLab(t)
	for i := range 4 {
		l.run(t, fmt.Sprintf("victim-%d", i), map[string]string{"app": "victim"})
	}
	addr := l.serveGateway(t)
	p := script(t, fmt.Sprintf(`export default function () {
		const names = new PodDisruptor({namespace: %q, select: {labels: {app: 'victim'}}}).terminatePods({count: '50%%'});
		globalThis.names = names.join(',');
	}`, ctrNamespace))
	vu, err := k6model.New(map[string]string{"FAULTLINE_ADDR": addr}).NewVU(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	defer vu.Close()
	if err := vu.Call("default"); err != nil {
		t.Fatal(err)
	}
	names := strings.Split(vu.Global("names"), ",")
	if len(names) != 2 || !strings.HasPrefix(names[0], "victim-") {
		t.Errorf("terminated %v, want 2 victims", names)
	}
}

// TestK6Examples runs every example of examples/k6 unchanged against the
// local demo set-up; only the k6 binary is missing.
func TestK6Examples(t *testing.T) {
	l := newLab(t)
	catalog, reco := l.demo(t)
	addr := l.serveGateway(t)
	envs := map[string]string{
		"FAULTLINE_ADDR": addr, "RECOMMENDATIONS_URL": reco, "CATALOG_URL": catalog,
		"CATALOG_GRPC": strings.TrimPrefix(strings.Replace(catalog, ":8080", ":9000", 1), "http://"),
	}
	base := directLatency(t, l)

	t.Run("timeout-incident", func(t *testing.T) {
		m := l.model(envs)
		res, err := m.Run(context.Background(), "../../examples/k6/timeout-incident.js")
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Errors) > 0 {
			t.Fatalf("%d iterations threw, the first: %v", res.ErrorCount, res.Errors)
		}
		n := m.Metrics.Count("http_req_failed", nil)
		rate := m.Metrics.Rate("http_req_failed", nil)
		p := incident.CallFailure(900*time.Millisecond, 150*time.Millisecond, time.Second, base)
		expected := incident.RequestFailure(p, 4, 0)
		sigma := incident.Sigma(expected, n)
		t.Logf("%d requests, failure rate %.3f, expected %.3f ± %.3f (3σ); threshold results %v; faultline_requests %v",
			n, rate, expected, 3*sigma, res.Thresholds, m.Metrics.Sum("faultline_requests", nil))
		if n < 20 || math.Abs(rate-expected) > 3*sigma+1/float64(n) {
			t.Errorf("failure rate %.3f over %d requests, expected %.3f ± %.3f", rate, n, expected, 3*sigma)
		}
		if res.Thresholds["http_req_failed: rate<0.05"] {
			t.Errorf("the SLO threshold held during the incident: %v", res.Thresholds)
		}
		if m.Metrics.Sum("faultline_requests_delayed", map[string]string{"kind": "http"}) == 0 {
			t.Errorf("no faultline counters in the k6 metrics")
		}
	})
	for _, ex := range []string{"grpc-faults", "network-faults"} {
		t.Run(ex, func(t *testing.T) {
			m := l.model(envs)
			res, err := m.Run(context.Background(), "../../examples/k6/"+ex+".js")
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Errors) > 0 {
				t.Fatalf("%d iterations threw, the first: %v", res.ErrorCount, res.Errors)
			}
			for th, ok := range res.Thresholds {
				if !ok {
					t.Errorf("threshold %s failed", th)
				}
			}
			t.Logf("thresholds %v; http_req_failed %.3f; checks %.3f; refused %v; grpc errored %v", res.Thresholds,
				m.Metrics.Rate("http_req_failed", nil), m.Metrics.Rate("checks", nil),
				m.Metrics.Sum("faultline_connections_refused", nil), m.Metrics.Sum("faultline_requests_errored", map[string]string{"kind": "grpc"}))
		})
	}
}

// directLatency is the median time of a direct catalog call from the
// client namespace.
func directLatency(t *testing.T, l *lab) time.Duration {
	var ds []time.Duration
	for range 11 {
		start := time.Now()
		l.status(t, "catalog")
		ds = append(ds, time.Since(start))
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}
