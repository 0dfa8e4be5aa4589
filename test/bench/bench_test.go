// Package bench measures faultline's zero-fault overhead against direct
// traffic, in one run on one machine, and prints a table. It runs only when
// FAULTLINE_BENCH=1 (make bench), as root.
//
// Set-up: the app is a separate Go process serving HTTP/1.1 on :8080 in a
// pod namespace; faultlined is the real daemon binary; the load comes from
// wrk (or a Go client when wrk is missing) in a client namespace. Direct and
// proxied rounds alternate so drift on a shared machine hits both alike,
// and each figure is the median of the rounds.
package bench

import (
	"context"
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
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/faultline-dev/faultline/internal/netnstest"
	"github.com/faultline-dev/faultline/internal/proctest"
	"github.com/faultline-dev/faultline/pkg/netns"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

func TestMain(m *testing.M) {
	if path := os.Getenv("FL_BENCH_APP_NETNS"); path != "" {
		runApp(path)
		return
	}
	if path := os.Getenv("FL_BENCH_L4_NETNS"); path != "" {
		runL4(path)
		return
	}
	os.Exit(m.Run())
}

// runApp is the application process: a plain net/http server.
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

const rounds = 3

func TestBenchTable(t *testing.T) {
	if os.Getenv("FAULTLINE_BENCH") == "" {
		t.Skip("set FAULTLINE_BENCH=1 (make bench)")
	}
	n := netnstest.NewNet(t)
	pod, client := n.AddHost("pod"), n.AddHost("client")
	startProcess(t, exec.Command("/proc/self/exe"), "FL_BENCH_APP_NETNS="+pod.Path)
	startProcess(t, exec.Command("/proc/self/exe"), "FL_BENCH_L4_NETNS="+pod.Path)
	url := "http://" + netip.AddrPortFrom(pod.Addr, 8080).String() + "/"
	l4url := "http://" + netip.AddrPortFrom(pod.Addr, 9090).String() + "/"
	waitHTTP(t, client, url)
	waitHTTP(t, client, l4url)

	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", bin+"/", "../../cmd/faultlined").CombinedOutput(); err != nil {
		t.Fatalf("build faultlined: %v\n%s", err, out)
	}
	socket := filepath.Join(t.TempDir(), "fl.sock")
	startProcess(t, exec.Command(filepath.Join(bin, "faultlined"), "--socket", socket, "--log-level", "warn"))
	api := dialNode(t, socket)

	var fault context.CancelFunc
	setProxy := func(on bool) {
		if !on {
			if fault != nil {
				fault()
				fault = nil
				time.Sleep(200 * time.Millisecond)
			}
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		fault = cancel
		go api.Inject(ctx, &pb.InjectRequest{
			Target:   &pb.Target{Kind: &pb.Target_NetnsPath{NetnsPath: pod.Path}},
			Duration: durationpb.New(time.Hour),
			Fault:    &pb.InjectRequest_Http{Http: &pb.HTTPFault{Port: 8080}},
		})
		go api.Inject(ctx, &pb.InjectRequest{
			Target:   &pb.Target{Kind: &pb.Target_NetnsPath{NetnsPath: pod.Path}},
			Duration: durationpb.New(time.Hour),
			Fault:    &pb.InjectRequest_Grpc{Grpc: &pb.GrpcFault{Port: 9000}},
		})
		proctest.WaitFaults(t, api, 2)
	}
	defer setProxy(false)

	wrk, _ := exec.LookPath("wrk")
	grpcAddr := netip.AddrPortFrom(pod.Addr, 9000).String()
	type sample struct{ ka, close, p50, p99, grpc []float64 }
	res := map[string]*sample{"direct": {}, "proxied": {}, "l4": {}}
	for r := 0; r < rounds; r++ {
		for _, mode := range []string{"direct", "proxied", "l4"} {
			setProxy(mode == "proxied")
			u := url
			if mode == "l4" {
				u = l4url
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
			setProxy(false)
		}
	}
	d, p, l4 := res["direct"], res["proxied"], res["l4"]
	tool := "wrk -t2 -c50 3s"
	if wrk == "" {
		tool = "Go client, 50 conns, 3s"
	}
	fmt.Printf("\nfaultline zero-fault overhead, HTTP/1.1, median of %d alternating rounds (%s)\n\n", rounds, tool)
	fmt.Printf("| %-34s | %10s | %17s | %17s |\n", "measure", "direct", "faultline proxy", "L4 splice (ref.)")
	fmt.Printf("|%s|%s|%s|%s|\n", strings.Repeat("-", 36), strings.Repeat("-", 12), strings.Repeat("-", 19), strings.Repeat("-", 19))
	row := func(name string, a, b, c float64) {
		fmt.Printf("| %-34s | %10.0f | %8.0f (%5.1f%%) | %8.0f (%5.1f%%) |\n", name, a, b, 100*b/a, c, 100*c/a)
	}
	row("keep-alive requests/s", median(d.ka), median(p.ka), median(l4.ka))
	row("new connection per request, req/s", median(d.close), median(p.close), median(l4.close))
	lat := func(name string, a, b, c float64) {
		fmt.Printf("| %-34s | %7.0f µs | %6.0f µs (%+4.0f) | %6.0f µs (%+4.0f) |\n", name, a, b, b-a, c, c-a)
	}
	lat("p50 latency, sequential keep-alive", median(d.p50), median(p.p50), median(l4.p50))
	lat("p99 latency, sequential keep-alive", median(d.p99), median(p.p99), median(l4.p99))
	fmt.Printf("| %-34s | %10.0f | %8.0f (%5.1f%%) | %17s |\n", "gRPC unary calls/s (1 conn, 50 streams)", median(d.grpc), median(p.grpc), 100*median(p.grpc)/median(d.grpc), "-")
	fmt.Println()
}

func startProcess(t *testing.T, cmd *exec.Cmd, env ...string) {
	t.Helper()
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
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

func dialNode(t *testing.T, socket string) pb.NodeClient {
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(socket); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewNodeClient(conn)
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
