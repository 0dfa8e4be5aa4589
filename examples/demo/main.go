// Command demo plays a dependency-timeout incident on one machine:
// recommendations calls catalog four times per request with a 1s timeout
// each; catalog gets 900ms ± 150ms of delay for 40s; 5 clients load
// recommendations for 30s, once without retries and once with RETRIES=3.
// It prints the failure rates beside the rates the delay distribution
// predicts.
//
//	demo run    set up, play the incident, tear down (make demo)
//	demo up     set up and leave it running (make demo-up)
//	demo down   remove everything the demo made (make demo-down)
//
// The services run as containers in a private containerd (state under
// /run/faultline-demo, images cached under /var/cache/faultline/demo),
// each in a network namespace of its own on the bridge fldemo0
// (198.18.10.0/24). Everything is removed on exit, on Ctrl-C, and by a
// sweep at the start of every run, which also clears what a killed run
// left behind.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	containerd "github.com/containerd/containerd"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/faultline-dev/faultline/internal/testkit/ctrkit"
	"github.com/faultline-dev/faultline/internal/testkit/incident"
	"github.com/faultline-dev/faultline/internal/testkit/topo"
	"github.com/faultline-dev/faultline/pkg/gateway"
	ctrsource "github.com/faultline-dev/faultline/pkg/targets/containerd"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

const (
	stateDir     = "/run/faultline-demo"
	cacheDir     = "/var/cache/faultline/demo"
	ctrNamespace = "faultline-demo"
	bridge       = "fldemo0"
	nsPrefix     = "fl-demo-"
	// The incident.
	avgDelay    = 900 * time.Millisecond
	delayVar    = 150 * time.Millisecond
	faultFor    = 40 * time.Second
	loadFor     = 30 * time.Second
	clients     = 5
	callTimeout = time.Second // recommendations' client timeout per catalog call
	callsPerReq = 4
)

var (
	bridgeAddr = netip.MustParsePrefix("198.18.10.1/24")
	services   = []service{
		{name: "catalog", addr: "198.18.10.2", labels: map[string]string{"app": "catalog", "faultline.service": "catalog"}},
		{name: "recommendations", addr: "198.18.10.3", env: []string{"RETRIES=0"}, labels: map[string]string{"app": "recommendations", "faultline.service": "recommendations"}},
		{name: "recommendations-retry", addr: "198.18.10.4", env: []string{"RETRIES=3"}, labels: map[string]string{"app": "recommendations", "variant": "retry", "faultline.service": "recommendations-retry"}},
	}
)

type service struct {
	name   string
	addr   string
	env    []string
	labels map[string]string
}

func (s service) url() string { return "http://" + s.addr + ":8080" }

func main() {
	cmd := "run"
	if len(os.Args) > 1 {
		cmd = os.Args[1]
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: run as root (it creates network namespaces and runs containerd)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd {
	case "run":
		sweep()
		err = run(ctx)
		fmt.Println("cleaning up ...")
		sweep()
	case "up":
		sweep()
		if err = up(ctx); err != nil {
			sweep()
		} else {
			printUp()
		}
	case "down":
		sweep()
		fmt.Println("demo removed")
	default:
		err = fmt.Errorf("unknown command %q: use run, up or down", cmd)
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "demo: interrupted; everything was removed")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// up builds the images and starts containerd, the services and faultlined.
func up(ctx context.Context) error {
	bin, err := filepath.Abs("bin")
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(bin, "faultlined")); err != nil {
		return fmt.Errorf("bin/faultlined is missing: run make build (make demo does)")
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	step("starting a private containerd")
	d, err := ctrkit.StartContainerd(ctx, stateDir, filepath.Join(cacheDir, "containerd"))
	if err != nil {
		return err
	}
	writePID("containerd", d.PID())
	client, err := d.Client()
	if err != nil {
		return err
	}
	defer client.Close()
	cctx := ctrkit.WithNamespace(ctx, ctrNamespace)

	step("building the service images (no registry)")
	images := map[string]containerd.Image{}
	for _, app := range []string{"catalog", "recommendations"} {
		out := filepath.Join(stateDir, app)
		if err := ctrkit.GoBuild(ctx, "./examples/"+app, out); err != nil {
			return err
		}
		if images[app], err = ctrkit.BuildImage(cctx, client, "faultline.local/"+app+":demo", out); err != nil {
			return err
		}
	}

	step("creating network namespaces on bridge " + bridge + " (" + bridgeAddr.String() + ")")
	if err := topo.AddBridge(nil, bridge, bridgeAddr); err != nil {
		return err
	}
	for i, s := range services {
		h, err := topo.CreateNetns(nsPrefix + s.name)
		if err != nil {
			return err
		}
		err = topo.Attach(nil, bridge, fmt.Sprintf("fldv%d", i), h, netip.MustParsePrefix(s.addr+"/24"))
		h.Close()
		if err != nil {
			return err
		}
	}

	step("starting the containers")
	for _, s := range services {
		img := images["catalog"]
		env := s.env
		if strings.HasPrefix(s.name, "recommendations") {
			img = images["recommendations"]
			env = append(env, "CATALOG_URL="+services[0].url(), fmt.Sprintf("CALLS=%d", callsPerReq))
		}
		labels := map[string]string{"faultline.namespace": "demo", "faultline.name": s.name, "faultline.port": "8080"}
		for k, v := range s.labels {
			labels[k] = v
		}
		if _, err := ctrkit.Run(cctx, client, ctrkit.Spec{ID: s.name, Image: img, Labels: labels, Env: env,
			NetnsPath: "/run/netns/" + nsPrefix + s.name, LogPath: filepath.Join(stateDir, s.name+".log")}); err != nil {
			return err
		}
	}
	for _, s := range services {
		if err := waitHealthy(ctx, s.url()+"/health"); err != nil {
			return fmt.Errorf("%s: %w (log: %s)", s.name, err, filepath.Join(stateDir, s.name+".log"))
		}
	}

	step("starting faultlined")
	fl := exec.Command(filepath.Join(bin, "faultlined"), "--socket", filepath.Join(stateDir, "faultlined.sock"))
	logf, err := os.Create(filepath.Join(stateDir, "faultlined.log"))
	if err != nil {
		return err
	}
	fl.Stdout, fl.Stderr = logf, logf
	fl.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := fl.Start(); err != nil {
		return err
	}
	writePID("faultlined", fl.Process.Pid)
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(filepath.Join(stateDir, "faultlined.sock")); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("faultlined did not start: see " + logf.Name())
}

func printUp() {
	fmt.Printf(`
The demo is up.
  catalog                %s   labels app=catalog, service catalog
  recommendations        %s   labels app=recommendations, service recommendations (RETRIES=0)
  recommendations-retry  %s   labels app=recommendations,variant=retry (RETRIES=3)
  namespace "demo"; faultlined socket %s; containerd %s (namespace %s)

Try:
  curl %s/recommendations
  export FAULTLINE_SOCKET=%s FAULTLINE_CONTAINERD=%s
  bin/faultline targets --local -n demo -l app=recommendations
  bin/faultline inject http --local -n demo --service catalog --delay 900ms --delay-variation 150ms --duration 40s
  bin/faultline run --local -- k6 run examples/k6/timeout-incident.js

Remove it all with: make demo-down
`, services[0].url(), services[1].url(), services[2].url(), filepath.Join(stateDir, "faultlined.sock"),
		filepath.Join(stateDir, "containerd.sock"), ctrNamespace, services[1].url(),
		filepath.Join(stateDir, "faultlined.sock"), filepath.Join(stateDir, "containerd.sock"))
}

// run is the whole demo: up, the incident twice, the report.
func run(ctx context.Context) error {
	if err := up(ctx); err != nil {
		return err
	}
	src := &ctrsource.Source{Address: filepath.Join(stateDir, "containerd.sock"), Namespaces: []string{ctrNamespace}}
	defer src.Close()
	tr := &gateway.LocalTransport{Socket: filepath.Join(stateDir, "faultlined.sock")}
	defer tr.Close()
	gw := &gateway.Server{Source: src, Transport: tr, Logger: slog.New(slog.DiscardHandler)}

	base := baseLatency(ctx)
	p := incident.CallFailure(avgDelay, delayVar, callTimeout, base)
	results := []result{}
	for _, sc := range []struct {
		name    string
		svc     service
		retries int
	}{
		{"without retries", services[1], 0},
		{"with RETRIES=3", services[2], 3},
	} {
		step(fmt.Sprintf("incident %s: catalog gets %s ± %s for %s; %d clients load %s for %s",
			sc.name, avgDelay, delayVar, faultFor, clients, sc.svc.name, loadFor))
		r, err := playIncident(ctx, gw, sc.svc)
		if err != nil {
			return err
		}
		r.name = sc.name
		r.expected = incident.RequestFailure(p, callsPerReq, sc.retries)
		results = append(results, r)
	}
	report(results, base, p)
	runK6()
	return nil
}

type result struct {
	name             string
	requests, failed int
	expected         float64
	counters         *pb.Counters
}

func playIncident(ctx context.Context, gw *gateway.Server, svc service) (result, error) {
	type faultOut struct {
		resp *pb.GatewayInjectResponse
		err  error
	}
	fctx, cancelFault := context.WithCancel(ctx)
	defer cancelFault()
	fault := make(chan faultOut, 1)
	go func() {
		resp, err := gw.InjectHTTP(fctx, &pb.InjectHTTPRequest{
			Targets:  &pb.TargetSet{Kind: &pb.TargetSet_Service{Service: &pb.ServiceRef{Name: "catalog", Namespace: "demo"}}},
			Duration: durationpb.New(faultFor),
			Fault:    &pb.HTTPFault{AverageDelay: durationpb.New(avgDelay), DelayVariation: durationpb.New(delayVar)},
		})
		fault <- faultOut{resp, err}
	}()
	// Wait until the fault is active: catalog calls get slow.
	deadline := time.Now().Add(10 * time.Second)
	for {
		start := time.Now()
		resp, err := http.Get(services[0].url() + "/ingredients/0")
		if err == nil {
			resp.Body.Close()
		}
		if time.Since(start) > avgDelay/2 {
			break
		}
		select {
		case out := <-fault:
			return result{}, fmt.Errorf("the fault did not start: %w", out.err)
		default:
		}
		if time.Now().After(deadline) {
			return result{}, errors.New("the fault did not become active within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}

	var r result
	var mu sync.Mutex
	var wg sync.WaitGroup
	stopAt := time.Now().Add(loadFor)
	client := &http.Client{Timeout: 60 * time.Second}
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stopAt) && ctx.Err() == nil {
				ok := false
				resp, err := client.Get(svc.url() + "/recommendations")
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					ok = resp.StatusCode == http.StatusOK
				}
				mu.Lock()
				r.requests++
				if !ok {
					r.failed++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	out := <-fault
	if out.err != nil {
		return r, out.err
	}
	r.counters = out.resp.GetTotal()
	return r, nil
}

// baseLatency is the median time of a direct catalog call, which eats
// into the 1s timeout.
func baseLatency(ctx context.Context) time.Duration {
	var ds []time.Duration
	for range 21 {
		start := time.Now()
		resp, err := http.Get(services[0].url() + "/ingredients/0")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			ds = append(ds, time.Since(start))
		}
	}
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

func report(rs []result, base time.Duration, p float64) {
	fmt.Printf("\nOne catalog call times out with probability %.3f (delay uniform in [%s, %s], %s timeout, %s direct latency);\n",
		p, avgDelay-delayVar, avgDelay+delayVar, callTimeout, base.Round(100*time.Microsecond))
	fmt.Printf("a request makes %d calls and fails if any call fails.\n\n", callsPerReq)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "scenario\trequests\tfailed\tfailure rate\texpected\t±3σ (binomial)\tverdict\tfault: requests\tdelayed\terrored\t")
	for _, r := range rs {
		rate := 0.0
		if r.requests > 0 {
			rate = float64(r.failed) / float64(r.requests)
		}
		sigma := incident.Sigma(r.expected, r.requests)
		verdict := "within noise"
		if math.Abs(rate-r.expected) > 3*sigma+0.5/math.Max(1, float64(r.requests)) {
			verdict = "OUTSIDE noise"
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%.1f%%\t%.1f%%\t%.1f%%\t%s\t%d\t%d\t%d\t\n", r.name, r.requests, r.failed, 100*rate,
			100*r.expected, 300*sigma, verdict, r.counters.GetRequests(), r.counters.GetDelayed(), r.counters.GetErrored())
	}
	w.Flush()
	fmt.Println()
}

func runK6() {
	k6, err := exec.LookPath("k6")
	if err != nil {
		step("k6 is not on the PATH: skipping examples/k6/timeout-incident.js (see README, \"Using faultline from k6\")")
		return
	}
	if _, err := os.Stat("examples/k6/timeout-incident.js"); err != nil {
		step("examples/k6/timeout-incident.js is not there yet: skipping the k6 step")
		return
	}
	step("running examples/k6/timeout-incident.js through faultline run --local")
	cmd := exec.Command("bin/faultline", "run", "--local", "--containerd-socket", filepath.Join(stateDir, "containerd.sock"),
		"--socket", filepath.Join(stateDir, "faultlined.sock"), "--", k6, "run", "examples/k6/timeout-incident.js")
	cmd.Env = append(os.Environ(), "RECOMMENDATIONS_URL="+services[1].url())
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Println("k6 step failed:", err)
	}
}

// sweep removes everything the demo may have made, whether a previous run
// finished or was killed: containers, processes, namespaces, links, state.
func sweep() {
	sock := filepath.Join(stateDir, "containerd.sock")
	if c, err := containerd.New(sock, containerd.WithTimeout(time.Second)); err == nil {
		ctx := ctrkit.WithNamespace(context.Background(), ctrNamespace)
		if cs, err := c.Containers(ctx); err == nil {
			for _, ctr := range cs {
				if err := ctrkit.Remove(ctx, ctr); err != nil {
					fmt.Fprintf(os.Stderr, "demo: remove container %s: %v\n", ctr.ID(), err)
				}
			}
		}
		c.Close()
	}
	for _, name := range []string{"faultlined", "containerd"} {
		stopPID(name)
	}
	for _, s := range services {
		topo.DeleteNetns(nsPrefix + s.name)
	}
	for i := range services {
		topo.DeleteLink(nil, fmt.Sprintf("fldv%d", i))
	}
	topo.DeleteLink(nil, bridge)
	os.RemoveAll(stateDir)
}

func writePID(name string, pid int) {
	os.WriteFile(filepath.Join(stateDir, name+".pid"), []byte(strconv.Itoa(pid)), 0o600)
}

// stopPID stops a process recorded by writePID: SIGTERM, then SIGKILL.
func stopPID(name string) {
	b, err := os.ReadFile(filepath.Join(stateDir, name+".pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	if syscall.Kill(pid, syscall.SIGTERM) != nil {
		return
	}
	for i := 0; i < 100; i++ {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, syscall.WNOHANG, nil) // reap our own child
		time.Sleep(50 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
}

func waitHealthy(ctx context.Context, url string) error {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func step(msg string) { fmt.Printf("==> %s\n", msg) }
