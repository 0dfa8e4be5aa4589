package local

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faultline-dev/faultline/internal/testkit/k6model"
	"github.com/faultline-dev/faultline/pkg/auth"
	"github.com/faultline-dev/faultline/pkg/gateway"
)

// serveGateway serves the lab's gateway on a loopback port with a token
// of its own, as faultline run does, and returns the environment a script
// gets from faultline run: FAULTLINE_ADDR and FAULTLINE_TOKEN.
func (l *lab) serveGateway(t *testing.T) map[string]string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	token, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	gs := gateway.NewGRPCServer(l.gw, auth.NewChecker(token, "test"))
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return map[string]string{"FAULTLINE_ADDR": ln.Addr().String(), auth.EnvToken: token}
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
	gw := l.serveGateway(t)
	p := script(t, `export default function () { new ServiceDisruptor('catalog', 'demo').injectHTTPFaults({averageDelay: '10ms'}, '5s'); }`)
	vu, err := k6model.New(gw).NewVU(context.Background(), p)
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
	gw := l.serveGateway(t)
	p := script(t, `export default function () { new ServiceDisruptor('catalog', 'shop').injectHTTPFaults({port: 8080, errorRate: 1, errorCode: 503}, '60s'); }`)
	ctx, cancel := context.WithCancel(context.Background())
	vu, err := k6model.New(gw).NewVU(ctx, p)
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
	gw := l.serveGateway(t)
	p := script(t, fmt.Sprintf(`export default function () {
		const names = new PodDisruptor({namespace: %q, select: {labels: {app: 'victim'}}}).terminatePods({count: '50%%'});
		globalThis.names = names.join(',');
	}`, ctrNamespace))
	vu, err := k6model.New(gw).NewVU(context.Background(), p)
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
