package node

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/faultline-dev/faultline/internal/testkit/netnstest"
	"github.com/faultline-dev/faultline/internal/testkit/proctest"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// startRedis runs Debian's redis-server in the pod namespace on :6379
// until the test ends, and returns its address.
func startRedis(t *testing.T, nd *node) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is not installed (make test-deps installs it)")
	}
	cmd := exec.Command("ip", "netns", "exec", nd.pod.Name, bin, "--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = proctest.LogTo(t, "redis"), proctest.LogTo(t, "redis")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := netip.AddrPortFrom(nd.pod.Addr, 6379).String()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := nd.client.Dial()(context.Background(), "tcp", addr); err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not listen within 10s")
		}
	}
}

// redisCLI runs Debian's redis-cli in the client namespace.
func redisCLI(t *testing.T, nd *node, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", nd.client.Name, "redis-cli", "-h", nd.pod.Addr.String(), "-p", "6379"}, args...)...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// latency samples redis-cli --latency for a second: min, max, avg in ms.
func redisLatency(t *testing.T, nd *node) (lo, hi, avg float64, samples int) {
	t.Helper()
	out, err := redisCLI(t, nd, "--latency", "--raw")
	if err != nil {
		t.Fatalf("redis-cli --latency: %v: %s", err, out)
	}
	if _, err := fmt.Sscan(out, &lo, &hi, &avg, &samples); err != nil {
		t.Fatalf("redis-cli --latency printed %q: %v", out, err)
	}
	return lo, hi, avg, samples
}

func tcpLatency(nd *node, d time.Duration, latency, jitter time.Duration) *pb.InjectRequest {
	return &pb.InjectRequest{
		Target:   &pb.Target{Kind: &pb.Target_NetnsPath{NetnsPath: nd.pod.Path}},
		Duration: durationpb.New(d),
		Fault: &pb.InjectRequest_Tcp{Tcp: &pb.TcpFault{Port: 6379, Downstream: []*pb.Toxic{{
			Kind: &pb.Toxic_Latency{Latency: &pb.LatencyToxic{Latency: durationpb.New(latency), Jitter: durationpb.New(jitter)}},
		}}}},
	}
}

// TestRedisUnderTCPLatency: Debian's redis-server behind a 50 ms ± 10 ms
// downstream latency: every redis-cli --latency sample lies in the
// interval (plus slack), the fault counts the connections and bytes, and
// after it the next command is direct.
func TestRedisUnderTCPLatency(t *testing.T) {
	nd := newNode(t)
	startRedis(t, nd)
	setStart := time.Now()
	if out, err := redisCLI(t, nd, "SET", "k", "v"); err != nil || out != "OK" {
		t.Fatalf("SET before the fault: %q %v", out, err)
	}
	t.Logf("SET before the fault took %s (redis-cli included)", time.Since(setStart).Round(time.Millisecond))
	dlo, dhi, _, _ := redisLatency(t, nd)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan *pb.InjectResponse, 1)
	go func() {
		resp, err := proctest.Inject(ctx, nd.api, tcpLatency(nd, time.Minute, 50*time.Millisecond, 10*time.Millisecond))
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	nd.waitFaults(t, 1)
	lo, hi, avg, n := redisLatency(t, nd)
	t.Logf("redis-cli --latency: direct min %.2f max %.2f ms; faulted min %.2f max %.2f avg %.2f ms over %d samples", dlo, dhi, lo, hi, avg, n)
	const slack = 20 // ms, for a loaded machine
	if lo < 40 || hi > 60+slack || n < 5 {
		t.Errorf("samples in [%.2f, %.2f] ms, want every one in [40, 60] (+%d ms slack)", lo, hi, slack)
	}
	if out, err := redisCLI(t, nd, "GET", "k"); err != nil || out != "v" {
		t.Errorf("GET during the fault: %q %v", out, err)
	}
	faults := nd.waitFaults(t, 1)
	if _, err := nd.api.Revoke(context.Background(), &pb.RevokeRequest{Id: faults[0].GetId()}); err != nil {
		t.Fatal(err)
	}
	resp := <-done
	c := resp.GetFault().GetCounters()
	if c.GetTcpConnections() < 2 || c.GetTcpConnectionsToxic() != c.GetTcpConnections() || c.GetBytesDownstream() == 0 || c.GetBytesUpstream() == 0 {
		t.Errorf("counters %v", c)
	}
	// The next command is direct.
	start := time.Now()
	if out, err := redisCLI(t, nd, "PING"); err != nil || out != "PONG" {
		t.Fatalf("PING after the fault: %q %v", out, err)
	}
	t.Logf("PING after the fault took %s (redis-cli included)", time.Since(start).Round(time.Millisecond))
	if lo, _, _, _ := redisLatency(t, nd); lo > 10 {
		t.Errorf("after the fault, redis-cli --latency min %.2f ms: not direct", lo)
	}
}

// TestRedisDirectWithinASecondOfSIGKILL: faultlined killed mid-fault
// leaves redis reachable directly within 1 s, nothing attached.
func TestRedisDirectWithinASecondOfSIGKILL(t *testing.T) {
	nd := newNode(t)
	addr := startRedis(t, nd)
	go proctest.Inject(context.Background(), nd.api, tcpLatency(nd, time.Minute, 200*time.Millisecond, 0))
	nd.waitFaults(t, 1)
	if d := redisPing(t, nd, addr); d < 200*time.Millisecond {
		t.Fatalf("PING took %s during a 200ms fault", d)
	}
	if err := nd.daemon.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	nd.daemon.Wait()
	for {
		if d := redisPing(t, nd, addr); d < 100*time.Millisecond {
			break
		}
		if time.Since(killed) > time.Second {
			t.Fatal("redis not direct within 1s of SIGKILL")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("redis direct %s after SIGKILL", time.Since(killed).Round(time.Millisecond))
	if left := netnstest.AttachedPrograms(t, nd.pod.NS); len(left) != 0 {
		t.Errorf("programs still attached: %v", left)
	}
}

// redisPing sends PING over RESP on a new connection and returns how long
// the answer took (an hour when it failed).
func redisPing(t *testing.T, nd *node, addr string) time.Duration {
	t.Helper()
	c, err := nd.client.Dial()(context.Background(), "tcp", addr)
	if err != nil {
		return time.Hour
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	start := time.Now()
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return time.Hour
	}
	b := make([]byte, 7)
	if n, err := c.Read(b); err != nil || !strings.HasPrefix(string(b[:n]), "+PONG") {
		return time.Hour
	}
	return time.Since(start)
}

// TestCLIInjectTCP: faultline inject tcp on Debian's redis: redis-cli is
// slower by the latency while it runs, and the CLI prints the fault's
// connections and bytes.
func TestCLIInjectTCP(t *testing.T) {
	nd := newNode(t)
	addr := startRedis(t, nd)
	res := make(chan cliResult, 1)
	go func() {
		res <- faultline(t, "inject", "tcp", "--socket", nd.socket, "--netns", nd.pod.Path, "--port", "6379",
			"--toxic", "downstream:latency=100ms", "--toxic", "upstream:slicer=1,delay=1ms", "--duration", "2s")
	}()
	nd.waitFaults(t, 1)
	if d := redisPing(t, nd, addr); d < 100*time.Millisecond || d > 600*time.Millisecond {
		t.Errorf("PING took %s under a 100ms downstream latency", d)
	}
	r := <-res
	if r.code != 0 || !strings.Contains(r.stdout, "tcp fault") || !strings.Contains(r.stdout, "BYTES_DOWNSTREAM") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	t.Logf("faultline inject tcp:\n%s", r.stdout)
}
