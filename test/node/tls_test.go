package node

import (
	"context"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/faultline-dev/faultline/internal/testkit/proctest"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// startTLSServer runs Debian's openssl s_server (-www) in the pod namespace
// on :8443 with a fresh self-signed certificate, until the test ends.
func startTLSServer(t *testing.T, nd *node) string {
	t.Helper()
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=catalog.test").CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	cmd := exec.Command("ip", "netns", "exec", nd.pod.Name, "openssl", "s_server", "-accept", "8443", "-cert", cert, "-key", key, "-www", "-quiet")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = proctest.LogTo(t, "s_server"), proctest.LogTo(t, "s_server")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := netip.AddrPortFrom(nd.pod.Addr, 8443).String()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := nd.client.Dial()(context.Background(), "tcp", addr); err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatal("openssl s_server did not listen within 10s")
		}
	}
}

// curlTLS fetches https://ADDR/ with Debian's curl from the client
// namespace and returns the status and the total time.
func curlTLS(t *testing.T, nd *node, addr string) (string, time.Duration) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", nd.client.Name, "curl", "-sk", "-o", "/dev/null", "--max-time", "10",
		"-w", "%{http_code} %{time_total}", "https://"+addr+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v: %s", err, out)
	}
	code, secs, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	s, _ := strconv.ParseFloat(secs, 64)
	return code, time.Duration(s * float64(time.Second))
}

// TestTLSServiceUnderTCPLatency: a tcp fault works on TLS unchanged (the
// bytes are relayed as they are, so the handshake completes): curl to
// openssl s_server is slower by the latency of each server flight, the
// handshake's and the response's.
func TestTLSServiceUnderTCPLatency(t *testing.T) {
	nd := newNode(t)
	addr := startTLSServer(t, nd)
	code, direct := curlTLS(t, nd, addr)
	if code != "200" {
		t.Fatalf("direct: %s", code)
	}
	const latency = 200 * time.Millisecond
	req := &pb.InjectRequest{
		Target:   &pb.Target{Kind: &pb.Target_NetnsPath{NetnsPath: nd.pod.Path}},
		Duration: durationpb.New(time.Minute),
		Fault: &pb.InjectRequest_Tcp{Tcp: &pb.TcpFault{Port: 8443, Downstream: []*pb.Toxic{{
			Kind: &pb.Toxic_Latency{Latency: &pb.LatencyToxic{Latency: durationpb.New(latency)}},
		}}}},
	}
	var faulted time.Duration
	c := withFault(t, nd, req, func() {
		code, faulted = curlTLS(t, nd, addr)
		if code != "200" {
			t.Errorf("through the fault: %s", code)
		}
	})
	t.Logf("curl https: %s direct, %s under a %s downstream latency; %d bytes downstream", direct, faulted, latency, c.GetBytesDownstream())
	// TLS 1.3: the server's handshake flight, then the response: two
	// downstream flights at least.
	if faulted < 2*latency || faulted > 2*latency+direct+500*time.Millisecond {
		t.Errorf("curl took %s under the fault, want about %s more than direct (%s)", faulted, 2*latency, direct)
	}
}
