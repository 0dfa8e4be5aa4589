// Package bench measures faultline against direct traffic and against a
// plain L4 splice forwarder, in one run on one machine, and prints tables
// (make bench, as root). Every figure is a ratio or a difference against a
// baseline measured in the same run: these machines are shared and noisy.
//
// The first table's last column is this tree's tcp relay, with a toxic
// that applies to no connection: both directions spliced by the kernel.
// FAULTLINE_BENCH_CONTROL=1 adds a column of this tree again (no
// metrics, started last), which tells a column's position from its
// effect; FAULTLINE_BENCH_ONLY=table|accuracy runs one table.
//
// Set-up: the application is a separate process serving HTTP/1.1 on :8080
// and gRPC on :9000 in a pod namespace; faultlined and the faultline CLI
// are the real binaries, built from this tree and, with
// FAULTLINE_BENCH_BASELINE=REV, from that git revision too, so that both
// are measured in the same run; the load comes from wrk (or a Go client
// when wrk is missing) in a client namespace. Rounds alternate so that
// drift on a shared machine hits every variant alike, and each figure is
// the median of the rounds.
//
// The delay-accuracy table follows the topology: the application
// and faultlined share CPU 0, a sequential keep-alive client runs alone on
// CPU 1, and each added latency is a request's latency minus the median of
// 300 direct requests.
package bench

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/faultline-dev/faultline/internal/testkit/netnstest"
	"github.com/faultline-dev/faultline/pkg/netns"
)

func TestMain(m *testing.M) {
	switch {
	case os.Getenv("FL_BENCH_APP_NETNS") != "":
		runApp(os.Getenv("FL_BENCH_APP_NETNS"))
	case os.Getenv("FL_BENCH_L4_NETNS") != "":
		runL4(os.Getenv("FL_BENCH_L4_NETNS"))
	case os.Getenv("FL_BENCH_CLIENT_NETNS") != "":
		runClient(os.Getenv("FL_BENCH_CLIENT_NETNS"), os.Args[len(os.Args)-3:])
	default:
		os.Exit(m.Run())
	}
}

// runApp is the application process: a plain net/http server and a
// grpc-go echo service.
func runApp(path string) {
	ln, _ := listenIn(path, ":8080")
	gln, _ := listenIn(path, ":9000")
	gs := grpc.NewServer()
	testpb.RegisterTestServiceServer(gs, echoService{})
	go gs.Serve(gln)
	body := []byte("hello from the app\n")
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	}))
}

type echoService struct {
	testpb.UnimplementedTestServiceServer
}

func (echoService) UnaryCall(_ context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: req.GetPayload()}, nil
}

// runL4 is the reference a user-space proxy cannot beat: a plain L4
// forwarder from :9090 to the app, copying with splice(2) (Go's TCP-to-TCP
// io.Copy), no parsing at all.
func runL4(path string) {
	ln, ns := listenIn(path, ":9090")
	dial := ns.Dialer(nil)
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			up, err := dial(context.Background(), "tcp", "127.0.0.1:8080")
			if err != nil {
				return
			}
			defer up.Close()
			go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
			io.Copy(c, up)
		}()
	}
}

// runClient is the delay-accuracy client, a process of its own so that
// it can run alone on a CPU: args are http|grpc, the address and a count;
// it prints each sequential call's latency in microseconds.
func runClient(path string, args []string) {
	ns, err := netns.Open(path)
	if err != nil {
		panic(err)
	}
	n, _ := strconv.Atoi(args[2])
	dial := ns.Dialer(nil)
	var call func() error
	switch args[0] {
	case "http":
		c, err := dial(context.Background(), "tcp", args[1])
		if err != nil {
			panic(err)
		}
		req, buf := []byte("GET / HTTP/1.1\r\nHost: app\r\n\r\n"), make([]byte, 4096)
		call = func() error {
			if _, err := c.Write(req); err != nil {
				return err
			}
			return readResponse(c, buf)
		}
	case "grpc":
		cc, err := grpc.NewClient("passthrough:///"+args[1], grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return dial(ctx, "tcp", a) }))
		if err != nil {
			panic(err)
		}
		c := testpb.NewTestServiceClient(cc)
		req := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hello")}}
		call = func() error { _, err := c.UnaryCall(context.Background(), req); return err }
	}
	idle, _ := time.ParseDuration(os.Getenv("FL_BENCH_CLIENT_IDLE"))
	w := bufio.NewWriter(os.Stdout)
	began := time.Now()
	for i := -10; i < n; i++ { // 10 to warm up
		time.Sleep(idle)
		start := time.Now()
		if err := call(); err != nil {
			panic(fmt.Sprintf("call %d of %d, %s after the first: %v", i+10, n+10, time.Since(began).Round(time.Millisecond), err))
		}
		if i >= 0 {
			fmt.Fprintln(w, time.Since(start).Microseconds())
		}
	}
	w.Flush()
}

// listenIn listens on addr inside the namespace at path, or panics: it
// runs in the helper processes, where there is no test to fail.
func listenIn(path, addr string) (net.Listener, *netns.Handle) {
	ns, err := netns.Open(path)
	if err != nil {
		panic(err)
	}
	ln, err := ns.Listen(context.Background(), "tcp", addr)
	if err != nil {
		panic(err)
	}
	return ln, ns
}

const defaultRounds = 5

// version is a build of faultline: this tree, or the baseline revision.
type version struct {
	name   string
	bin    string
	socket string
	daemon *exec.Cmd
	// metrics is the /metrics address of a daemon that serves them, and
	// is scraped every second during the run.
	metrics string
	// tcp: the first table's faults are tcp faults whose one toxic applies
	// to no connection (toxicity 0): the relay splicing both directions.
	tcp bool
}

func TestBenchTable(t *testing.T) {
	if os.Getenv("FAULTLINE_BENCH") == "" {
		t.Skip("set FAULTLINE_BENCH=1 (make bench)")
	}
	n := netnstest.NewNet(t)
	pod, client := n.AddHost("pod"), n.AddHost("client")
	app := startProcess(t, exec.Command("/proc/self/exe"), "FL_BENCH_APP_NETNS="+pod.Path)
	startProcess(t, exec.Command("/proc/self/exe"), "FL_BENCH_L4_NETNS="+pod.Path)
	url := "http://" + netip.AddrPortFrom(pod.Addr, 8080).String() + "/"
	l4url := "http://" + netip.AddrPortFrom(pod.Addr, 9090).String() + "/"
	waitHTTP(t, client, url)
	waitHTTP(t, client, l4url)

	versions := []*version{build(t, "this tree", "")}
	// The same build with metrics on, scraped every second: what they
	// cost on the request path.
	versions = append(versions, &version{name: "metrics on", bin: versions[0].bin, metrics: "127.0.0.1:19464"})
	if os.Getenv("FAULTLINE_BENCH_CONTROL") != "" {
		// The same build again, without metrics, started last: tells a
		// column's position from what it measures.
		versions = append(versions, &version{name: "control", bin: versions[0].bin})
	}
	if rev := os.Getenv("FAULTLINE_BENCH_BASELINE"); rev != "" {
		versions = append(versions, build(t, "baseline "+rev, rev))
	}
	for _, v := range versions {
		v.socket = filepath.Join(t.TempDir(), "fl.sock")
		args := []string{"--socket", v.socket, "--log-level", cmp.Or(os.Getenv("FAULTLINE_BENCH_LOG_LEVEL"), "warn")}
		if v.metrics != "" {
			args = append(args, "--metrics-listen", v.metrics)
		}
		v.daemon = startProcess(t, exec.Command(filepath.Join(v.bin, "faultlined"), args...))
		waitSocket(t, v.socket)
		if v.metrics != "" {
			scrapeEverySecond(t, v.metrics)
		}
	}

	var scrapeCPU time.Duration
	var scrapeLines int
	if on := versionNamed(versions, "metrics on"); on != nil {
		scrapeCPU, scrapeLines = scrapeCost(t, on, pod.Path)
	}

	// The first table's columns: the versions, then this tree's TCP relay
	// (same daemon) with no toxic applied.
	columns := append(slices.Clone(versions), &version{name: "tcp, no toxic", bin: versions[0].bin, socket: versions[0].socket, daemon: versions[0].daemon, tcp: true})

	wrk, _ := exec.LookPath("wrk")
	grpcAddr := netip.AddrPortFrom(pod.Addr, 9000).String()
	type sample struct{ ka, close, p50, p99, grpc []float64 }
	res := map[string]*sample{"direct": {}, "l4": {}}
	for _, v := range columns {
		res[v.name] = &sample{}
	}
	modes := []string{"direct", "l4"}
	for _, v := range columns {
		modes = append(modes, v.name)
	}
	only := os.Getenv("FAULTLINE_BENCH_ONLY") // "accuracy" skips the first table, "table" the second
	rounds := defaultRounds
	if n, err := strconv.Atoi(os.Getenv("FAULTLINE_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	for r := 0; r < rounds && only != "accuracy"; r++ {
		// Each round starts one mode later, so that no mode always
		// follows the same one.
		for i := range modes {
			mode := modes[(i+r)%len(modes)]
			u := url
			var stop func()
			switch mode {
			case "direct":
			case "l4":
				u = l4url
			default:
				v := versionNamed(columns, mode)
				kind, grpcKind, extra := "http", "grpc", []string(nil)
				if v.tcp {
					kind, grpcKind, extra = "tcp", "tcp", []string{"--toxic", "downstream:latency=1ms,toxicity=0"}
				}
				stop = inject(t, v, pod.Path, kind, append([]string{"--port", "8080"}, extra...)...)
				stopGRPC := inject(t, v, pod.Path, grpcKind, append([]string{"--port", "9000"}, extra...)...)
				stop = func(a, b func()) func() { return func() { a(); b() } }(stop, stopGRPC)
			}
			s := res[mode]
			s.ka = append(s.ka, load(t, wrk, client, u, false))
			s.close = append(s.close, load(t, wrk, client, u, true))
			p50, p99 := latency(t, client, u, 2000)
			s.p50 = append(s.p50, p50)
			s.p99 = append(s.p99, p99)
			if mode != "l4" {
				s.grpc = append(s.grpc, grpcLoad(t, client, grpcAddr))
			}
			if stop != nil {
				stop()
			}
		}
	}
	tool := "wrk -t2 -c50 3s"
	if wrk == "" {
		tool = "Go client, 50 conns, 3s"
	}
	d, l4 := res["direct"], res["l4"]
	fmt.Printf("\nfaultline zero-fault overhead, median of %d alternating rounds (%s)\n\n", rounds, tool)
	header := fmt.Sprintf("| %-40s | %10s | %19s |", "measure", "direct", "L4 splice (ref.)")
	rule := fmt.Sprintf("|%s|%s|%s|", strings.Repeat("-", 42), strings.Repeat("-", 12), strings.Repeat("-", 21))
	for _, v := range columns {
		header += fmt.Sprintf(" %-21s |", "faultline, "+v.name)
		rule += strings.Repeat("-", 23) + "|"
	}
	if only != "accuracy" {
		fmt.Println(header)
		fmt.Println(rule)
		ratio := func(name string, get func(*sample) []float64) {
			a := median(get(d))
			line := fmt.Sprintf("| %-40s | %10.0f |", name, a)
			if l := get(l4); len(l) > 0 {
				line += fmt.Sprintf(" %9.0f (%5.1f%%) |", median(l), 100*median(l)/a)
			} else {
				line += fmt.Sprintf(" %19s |", "-")
			}
			for _, v := range columns {
				b := median(get(res[v.name]))
				line += fmt.Sprintf(" %11.0f (%5.1f%%) |", b, 100*b/a)
			}
			fmt.Println(line)
		}
		lat := func(name string, get func(*sample) []float64) {
			a := median(get(d))
			line := fmt.Sprintf("| %-40s | %7.0f µs | %9.0f µs (%+4.0f) |", name, a, median(get(l4)), median(get(l4))-a)
			for _, v := range columns {
				b := median(get(res[v.name]))
				line += fmt.Sprintf(" %11.0f µs (%+4.0f) |", b, b-a)
			}
			fmt.Println(line)
		}
		ratio("keep-alive requests/s", func(s *sample) []float64 { return s.ka })
		ratio("new connection per request, req/s", func(s *sample) []float64 { return s.close })
		lat("p50 latency, sequential keep-alive", func(s *sample) []float64 { return s.p50 })
		lat("p99 latency, sequential keep-alive", func(s *sample) []float64 { return s.p99 })
		ratio("gRPC unary calls/s (1 conn, 50 streams)", func(s *sample) []float64 { return s.grpc })
		// What metrics cost, from the rounds' paired differences (both
		// builds measured minutes apart against the same direct figure).
		if on := versionNamed(versions, "metrics on"); on != nil {
			var diff []float64
			tree, m := res[versions[0].name], res[on.name]
			for r := range tree.ka {
				diff = append(diff, 100*(tree.ka[r]-m.ka[r])/d.ka[r])
			}
			fmt.Printf("\nmetrics on cost %.1f points of keep-alive pass-through (median of %d rounds' paired differences: %s)\n",
				median(diff), len(diff), points(diff))
			fmt.Printf("one scrape costs faultlined %s of CPU (%d lines, 2 faults): %.2f%% of a CPU at a 1 s interval\n",
				scrapeCPU, scrapeLines, 100*scrapeCPU.Seconds())
		}
	}

	if only == "table" {
		return
	}
	// Delay accuracy: app and daemon on CPU 0, the client alone on CPU 1.
	for _, p := range []*exec.Cmd{app} {
		pin(t, p, "0")
	}
	for _, v := range versions {
		pin(t, v.daemon, "0")
	}
	const requests, base = 500, 300
	fmt.Printf("\ndelay accuracy, 100ms ± 20ms, %d sequential keep-alive requests each; added = latency − median of %d direct requests;\napp and faultlined on CPU 0, client on CPU 1\n\n", requests, base)
	fmt.Printf("| %-12s | %-22s | %12s | %12s | %12s | %12s | %22s |\n", "protocol", "build", "mean added", "p1 added", "p50 added", "p99 added", "share in [80, 120] ms")
	fmt.Printf("|%s|%s|%s|%s|%s|%s|%s|\n", strings.Repeat("-", 14), strings.Repeat("-", 24), strings.Repeat("-", 14), strings.Repeat("-", 14), strings.Repeat("-", 14), strings.Repeat("-", 14), strings.Repeat("-", 24))
	for _, proto := range []struct{ name, addr, kind, port string }{
		{"HTTP/1.1", netip.AddrPortFrom(pod.Addr, 8080).String(), "http", "8080"},
		{"gRPC", grpcAddr, "grpc", "9000"},
	} {
		direct := clientRun(t, client, proto.kind, proto.addr, base)
		slices.Sort(direct)
		zero := direct[len(direct)/2]
		// What any added latency costs here: direct requests that each
		// follow 100 ms of idleness find the CPUs and caches cold.
		cold := clientRun(t, client, proto.kind, proto.addr, 100, "FL_BENCH_CLIENT_IDLE=100ms")
		slices.Sort(cold)
		fmt.Printf("| %-12s | %-22s | %12s | %12s | %9.2f ms | %12s | %22s |\n", proto.name, "direct, 100ms idle before", "-", "-", (cold[len(cold)/2]-zero)/1000, "-", "-")
		for _, v := range versions {
			stop := inject(t, v, pod.Path, proto.kind, "--port", proto.port, "--delay", "100ms", "--delay-variation", "20ms")
			lat := clientRun(t, client, proto.kind, proto.addr, requests)
			stop()
			var sum float64
			in := 0
			added := make([]float64, len(lat))
			for i, l := range lat {
				added[i] = (l - zero) / 1000
				sum += added[i]
				if added[i] >= 80 && added[i] <= 120 {
					in++
				}
			}
			slices.Sort(added)
			n := len(added)
			fmt.Printf("| %-12s | %-22s | %9.2f ms | %9.2f ms | %9.2f ms | %9.2f ms | %21.1f%% |\n", proto.name, v.name, sum/float64(n), added[n/100], added[n/2], added[n*99/100], 100*float64(in)/float64(n))
		}
	}
	fmt.Println()
}

func points(v []float64) string {
	var parts []string
	for _, x := range v {
		parts = append(parts, fmt.Sprintf("%+.1f", x))
	}
	return strings.Join(parts, ", ")
}

// scrapeEverySecond GETs addr's /metrics every second until the test ends.
// scrapeCost returns the CPU time the daemon spends per scrape, over 200
// scrapes in a row with an HTTP and a gRPC fault active, and the scrape's
// size in lines.
func scrapeCost(t *testing.T, v *version, netnsPath string) (time.Duration, int) {
	t.Helper()
	stop := inject(t, v, netnsPath, "http", "--port", "8080")
	defer stop()
	stopGRPC := inject(t, v, netnsPath, "grpc", "--port", "9000")
	defer stopGRPC()
	const n = 200
	lines := 0
	before := cpuTime(t, v.daemon.Process.Pid)
	for range n {
		resp, err := http.Get("http://" + v.metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		lines = strings.Count(string(b), "\n")
	}
	return (cpuTime(t, v.daemon.Process.Pid) - before) / n, lines
}

// cpuTime is a process's user and system CPU time (/proc/PID/stat).
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ is 100
}

func scrapeEverySecond(t *testing.T, addr string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
}

func versionNamed(vs []*version, name string) *version {
	for _, v := range vs {
		if v.name == name {
			return v
		}
	}
	return nil
}

// build builds faultlined and faultline from this tree, or from git
// revision rev in a temporary worktree.
func build(t *testing.T, name, rev string) *version {
	t.Helper()
	bin, src := t.TempDir(), "../.."
	if rev != "" {
		src = filepath.Join(t.TempDir(), "src")
		if out, err := exec.Command("git", "worktree", "add", "--detach", src, rev).CombinedOutput(); err != nil {
			t.Fatalf("git worktree add %s: %v\n%s", rev, err, out)
		}
		t.Cleanup(func() { exec.Command("git", "worktree", "remove", "--force", src).Run() })
	}
	cmd := exec.Command("go", "build", "-o", bin+"/", "./cmd/faultlined", "./cmd/faultline")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	return &version{name: name, bin: bin}
}

// inject starts a fault with the version's own CLI (whose flags every
// version shares) and returns a function that revokes it (Ctrl-C).
func inject(t *testing.T, v *version, netnsPath, kind string, args ...string) func() {
	t.Helper()
	id := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	cmd := exec.Command(filepath.Join(v.bin, "faultline"), append([]string{"inject", kind, "--id", id, "--socket", v.socket, "--netns", netnsPath, "--duration", "1h"}, args...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitListed(t, v, id, true)
	return func() {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
		waitListed(t, v, id, false)
		time.Sleep(100 * time.Millisecond)
	}
}

// waitListed waits until the version's daemon lists the fault id as
// active (an HTTP fault resets the connections made while it starts), or
// no longer lists it, through the version's own CLI.
func waitListed(t *testing.T, v *version, id string, listed bool) {
	t.Helper()
	for range 500 {
		out, err := exec.Command(filepath.Join(v.bin, "faultline"), "list", "--socket", v.socket, "-o", "json").Output()
		var resp struct{ Faults []struct{ ID, State string } }
		if err == nil && json.Unmarshal(out, &resp) == nil {
			found := slices.ContainsFunc(resp.Faults, func(f struct{ ID, State string }) bool {
				// Gone means not listed at all; a baseline may have no state.
				return f.ID == id && (!listed || f.State == "" || f.State == "FAULT_STATE_ACTIVE")
			})
			if found == listed {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: faultlined does not list %s (listed=%v)", v.name, id, listed)
}

// clientRun runs the accuracy client alone on CPU 1 and returns its
// latencies in microseconds.
func clientRun(t *testing.T, h *netnstest.Host, kind, addr string, n int, env ...string) []float64 {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("taskset", "-c", "1", self, kind, addr, strconv.Itoa(n))
	cmd.Env = append(append(os.Environ(), "FL_BENCH_CLIENT_NETNS="+h.Path), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("accuracy client: %v", err)
	}
	var lat []float64
	for _, line := range strings.Fields(string(out)) {
		v, _ := strconv.ParseFloat(line, 64)
		lat = append(lat, v)
	}
	if len(lat) != n {
		t.Fatalf("accuracy client printed %d latencies, want %d", len(lat), n)
	}
	return lat
}

// pin moves every thread of a running process to cpus.
func pin(t *testing.T, p *exec.Cmd, cpus string) {
	t.Helper()
	if out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(p.Process.Pid)).CombinedOutput(); err != nil {
		t.Fatalf("taskset: %v\n%s", err, out)
	}
}

func startProcess(t *testing.T, cmd *exec.Cmd, env ...string) *exec.Cmd {
	t.Helper()
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func waitSocket(t *testing.T, path string) {
	for range 500 {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no socket %s", path)
}

func waitHTTP(t *testing.T, h *netnstest.Host, url string) {
	c := &http.Client{Transport: &http.Transport{DialContext: h.Dial()}, Timeout: time.Second}
	for i := 0; i < 100; i++ {
		if resp, err := c.Get(url); err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("app did not come up")
}

var wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)

// load returns requests per second over 3s with 50 connections.
func load(t *testing.T, wrk string, h *netnstest.Host, url string, closeEach bool) float64 {
	t.Helper()
	if wrk == "" {
		return goLoad(t, h, url, closeEach)
	}
	args := []string{"netns", "exec", h.Name, wrk, "-t2", "-c50", "-d3s"}
	if closeEach {
		args = append(args, "-H", "Connection: close")
	}
	out, err := exec.Command("ip", append(args, url)...).CombinedOutput()
	if err != nil {
		t.Fatalf("wrk: %v\n%s", err, out)
	}
	m := wrkRPS.FindSubmatch(out)
	if m == nil {
		t.Fatalf("wrk output: %s", out)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func goLoad(t *testing.T, h *netnstest.Host, url string, closeEach bool) float64 {
	tr := &http.Transport{DialContext: h.Dial(), MaxIdleConnsPerHost: 50, DisableKeepAlives: closeEach}
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	deadline := time.Now().Add(3 * time.Second)
	counts := make(chan int, 50)
	for range 50 {
		go func() {
			n := 0
			for time.Now().Before(deadline) {
				resp, err := c.Get(url)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				n++
			}
			counts <- n
		}()
	}
	total := 0
	for range 50 {
		total += <-counts
	}
	return float64(total) / 3
}

// latency returns p50 and p99 in microseconds of n sequential requests on
// one keep-alive connection, written and read raw to measure the path, not
// the client library.
func latency(t *testing.T, h *netnstest.Host, url string, n int) (float64, float64) {
	t.Helper()
	addr := strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/")
	c, err := h.Dial()(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET / HTTP/1.1\r\nHost: app\r\n\r\n")
	buf := make([]byte, 4096)
	samples := make([]float64, 0, n)
	for i := 0; i < n+100; i++ {
		start := time.Now()
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		if err := readResponse(c, buf); err != nil {
			t.Fatal(err)
		}
		if i >= 100 { // warm-up
			samples = append(samples, float64(time.Since(start).Microseconds()))
		}
	}
	slices.Sort(samples)
	return samples[len(samples)/2], samples[len(samples)*99/100]
}

var contentLength = regexp.MustCompile(`(?i)content-length: (\d+)`)

// readResponse reads one small response with Content-Length.
func readResponse(c net.Conn, buf []byte) error {
	got := 0
	for {
		k, err := c.Read(buf[got:])
		if err != nil {
			return err
		}
		got += k
		s := string(buf[:got])
		if i := strings.Index(s, "\r\n\r\n"); i >= 0 {
			m := contentLength.FindStringSubmatch(s[:i])
			if m == nil {
				return fmt.Errorf("no content-length in %q", s[:i])
			}
			cl, _ := strconv.Atoi(m[1])
			if got >= i+4+cl {
				return nil
			}
		}
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// grpcLoad returns unary calls per second over 3s: 50 concurrent callers
// on one connection, as a typical gRPC client multiplexes.
func grpcLoad(t *testing.T, h *netnstest.Host, addr string) float64 {
	t.Helper()
	dial := h.Dial()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return dial(ctx, "tcp", a) }))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := testpb.NewTestServiceClient(cc)
	req := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hello")}}
	if _, err := c.UnaryCall(context.Background(), req); err != nil {
		t.Fatalf("grpc warm-up: %v", err)
	}
	deadline := time.Now().Add(3 * time.Second)
	counts := make(chan int, 50)
	for range 50 {
		go func() {
			n := 0
			for time.Now().Before(deadline) {
				if _, err := c.UnaryCall(context.Background(), req); err == nil {
					n++
				}
			}
			counts <- n
		}()
	}
	total := 0
	for range 50 {
		total += <-counts
	}
	return float64(total) / 3
}
