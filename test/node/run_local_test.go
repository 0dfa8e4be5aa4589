package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/faultline-dev/faultline/internal/testkit/incident"
	"github.com/faultline-dev/faultline/internal/testkit/k6model"
	"github.com/faultline-dev/faultline/internal/testkit/netnstest"
	"github.com/faultline-dev/faultline/internal/testkit/proctest"
	"github.com/faultline-dev/faultline/pkg/targets/netnsdir"
)

// namedNetnsLab is the demo without containerd: catalog and
// recommendations as plain processes in named network namespaces, with
// the labels a user writes in /run/faultline/netns-labels.
type namedNetnsLab struct {
	bin       string
	namespace string // the faultline.namespace label: unique to the test
	catalog   *netnstest.Host
	reco      *netnstest.Host
	client    *netnstest.Host
	socket    string
	noCtrd    string // a containerd socket path where nothing is
}

func newNamedNetnsLab(t *testing.T) *namedNetnsLab {
	t.Helper()
	n := netnstest.NewNet(t)
	bin, err := proctest.Build("../../examples/catalog", "../../examples/recommendations", "../../internal/testkit/k6model/cmd/k6")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bin) })
	l := &namedNetnsLab{bin: bin, catalog: n.AddHost("catalog"), reco: n.AddHost("reco"), client: n.AddHost("client"),
		namespace: fmt.Sprintf("fltest-%d", time.Now().UnixNano()%1e9), noCtrd: filepath.Join(t.TempDir(), "containerd.sock")}
	// The port is only in the label: a fault that names none and did not
	// read it would go to port 80 (xk6-disruptor's default).
	l.label(t, l.catalog, "faultline.namespace="+l.namespace, "faultline.service=catalog", "faultline.port=8080", "app=catalog")
	l.label(t, l.reco, "faultline.namespace="+l.namespace, "app=recommendations")
	l.start(t, l.catalog, "catalog")
	l.start(t, l.reco, "recommendations", "CATALOG_URL="+l.url(l.catalog), "CALLS=4", "RETRIES=0")
	l.socket = proctest.StartFaultlined(t, binDir).Socket
	return l
}

func (l *namedNetnsLab) label(t *testing.T, h *netnstest.Host, labels ...string) {
	t.Helper()
	path := filepath.Join(netnsdir.DefaultLabelsDir, h.Name)
	if err := os.MkdirAll(netnsdir.DefaultLabelsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Join(labels, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
}

// start runs one of the demo's services inside h, until the test ends.
func (l *namedNetnsLab) start(t *testing.T, h *netnstest.Host, name string, env ...string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", h.Name, filepath.Join(l.bin, name))
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c := l.httpClient()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get(l.url(h) + "/health")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer: %v", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *namedNetnsLab) url(h *netnstest.Host) string {
	return "http://" + netip.AddrPortFrom(h.Addr, 8080).String()
}

func (l *namedNetnsLab) httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: l.client.Dial(), DisableKeepAlives: true}, Timeout: 5 * time.Second}
}

// runK6 runs `faultline run --local -- k6 run SCRIPT` (the k6 stand-in)
// from the client namespace and returns its exit status, output and
// exported summary.
func (l *namedNetnsLab) runK6(t *testing.T, script string) (int, string, summary) {
	t.Helper()
	export := filepath.Join(t.TempDir(), "summary.json")
	cmd := exec.Command(filepath.Join(binDir, "faultline"), "run", "--local", "--socket", l.socket, "--containerd-socket", l.noCtrd,
		"--", filepath.Join(l.bin, "k6"), "run", "--summary-export", export, script)
	cmd.Env = append(os.Environ(), "FL_K6_NETNS="+l.client.Path, "CATALOG_NAMESPACE="+l.namespace,
		"RECOMMENDATIONS_URL="+l.url(l.reco), "CATALOG_URL="+l.url(l.catalog), "CATALOG_GRPC="+netip.AddrPortFrom(l.catalog.Addr, 9000).String(),
		"FAULTLINE_ADDR=", "FAULTLINE_TOKEN=")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var s summary
	if b, err := os.ReadFile(export); err == nil {
		_ = json.Unmarshal(b, &s)
	}
	return code, out.String(), s
}

type summary struct {
	Metrics map[string]k6model.MetricSummary `json:"metrics"`
	Errors  int                              `json:"errors"`
}

// TestRunLocalExamplesOnNamedNetns runs the k6 examples unchanged, through
// faultline run --local, against services in named network namespaces on a
// machine without containerd: the missing containerd is a note, not a
// failure, and the faults land on the port of the faultline.port label.
func TestRunLocalExamplesOnNamedNetns(t *testing.T) {
	l := newNamedNetnsLab(t)

	r := faultline(t, "targets", "--local", "--containerd-socket", l.noCtrd, "-n", l.namespace, "--service", "catalog")
	if r.code != 0 || !strings.Contains(r.stdout, "catalog") || !strings.Contains(r.stderr, "note: containerd at "+l.noCtrd+": not on this machine: no socket file") {
		t.Errorf("targets without containerd: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = faultline(t, "targets", "--local", "--containerd-socket", l.noCtrd, "-n", l.namespace, "--service", "nothing")
	if r.code != 1 || !strings.Contains(r.stderr, "service does not have any backing pods; looked in containerd at "+l.noCtrd+" (not on this machine: no socket file), named netns in /run/netns") {
		t.Errorf("no match: exit %d, %q; want NotFound naming the sources asked", r.code, r.stderr)
	}

	// The direct latency the incident's prediction needs.
	var direct []time.Duration
	c := l.httpClient()
	for range 11 {
		start := time.Now()
		if resp, err := c.Get(l.url(l.catalog) + "/ingredients/1"); err == nil {
			resp.Body.Close()
		}
		direct = append(direct, time.Since(start))
	}
	slices.Sort(direct)

	t.Run("timeout-incident", func(t *testing.T) {
		code, out, s := l.runK6(t, "../../examples/k6/timeout-incident.js")
		failed := s.Metrics["http_req_failed"]
		expected := incident.RequestFailure(incident.CallFailure(900*time.Millisecond, 150*time.Millisecond, time.Second, direct[5]), 4, 0)
		sigma := incident.Sigma(expected, failed.Count)
		t.Logf("exit %d; %d requests, failure rate %.3f, expected %.3f ± %.3f (3σ); catalog requests delayed %v\n%s",
			code, failed.Count, failed.Rate, expected, 3*sigma, s.Metrics["faultline_requests_delayed"].Sum, out)
		if code != 99 || !strings.Contains(out, "✗ http_req_failed: rate<0.05") {
			t.Errorf("exit %d: want 99, the SLO threshold broken by the incident", code)
		}
		if failed.Count < 20 || math.Abs(failed.Rate-expected) > 3*sigma+1/float64(failed.Count) {
			t.Errorf("failure rate %.3f over %d requests, expected %.3f ± %.3f", failed.Rate, failed.Count, expected, 3*sigma)
		}
		if s.Metrics["faultline_requests_delayed"].Sum == 0 || s.Errors != 0 {
			t.Errorf("the fault delayed nothing on faultline.port 8080 (or iterations threw: %d)", s.Errors)
		}
	})
	for _, ex := range []string{"grpc-faults", "network-faults"} {
		t.Run(ex, func(t *testing.T) {
			code, out, s := l.runK6(t, "../../examples/k6/"+ex+".js")
			t.Logf("exit %d; faulted %v errored %v refused %v\n%s", code, s.Metrics["faultline_requests_faulted"].Sum,
				s.Metrics["faultline_requests_errored"].Sum, s.Metrics["faultline_connections_refused"].Sum, out)
			if code != 0 || s.Errors != 0 {
				t.Errorf("exit %d with %d iterations throwing, want 0: every threshold holds", code, s.Errors)
			}
		})
	}
}
