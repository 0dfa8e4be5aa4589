package node

import (
	"context"
	"errors"
	"net/netip"
	"os"
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
// on :8443 with a fresh self-signed certificate for catalog.test, pay.test
// and shop.test (written to DIR/cert.pem), until the test ends.
func startTLSServer(t *testing.T, nd *node) string {
	addr, _ := startTLSServerIn(t, nd, t.TempDir())
	return addr
}

func startTLSServerIn(t *testing.T, nd *node, dir string) (addr, cert string) {
	t.Helper()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=catalog.test",
		"-addext", "subjectAltName=DNS:catalog.test,DNS:pay.test,DNS:shop.test").CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	cmd := exec.Command("ip", "netns", "exec", nd.pod.Name, "openssl", "s_server", "-accept", "8443", "-cert", cert, "-key", key, "-www", "-quiet")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = proctest.LogTo(t, "s_server"), proctest.LogTo(t, "s_server")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr = netip.AddrPortFrom(nd.pod.Addr, 8443).String()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := nd.client.Dial()(context.Background(), "tcp", addr); err == nil {
			c.Close()
			return addr, cert
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

// curlName fetches https://NAME:8443/ from the client namespace with
// Debian's curl, NAME resolved to the pod (--resolve: no DNS), and returns
// curl's exit code, its error line and the handshake's time
// (time_appconnect).
func curlName(t *testing.T, nd *node, name string, args ...string) (int, string, time.Duration) {
	t.Helper()
	argv := append([]string{"netns", "exec", nd.client.Name, "curl", "-sS", "-o", "/dev/null", "--max-time", "10",
		"--resolve", name + ":8443:" + nd.pod.Addr.String(), "-w", "%{http_code} %{time_appconnect}"}, args...)
	cmd := exec.Command("ip", append(argv, "https://"+name+":8443/")...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	_, secs, _ := strings.Cut(strings.TrimSpace(stdout.String()), " ")
	s, _ := strconv.ParseFloat(secs, 64)
	return code, strings.TrimSpace(stderr.String()), time.Duration(s * float64(time.Second))
}

func tlsFault(nd *node, tf *pb.TlsFault) *pb.InjectRequest {
	return &pb.InjectRequest{
		Target:   &pb.Target{Kind: &pb.Target_NetnsPath{NetnsPath: nd.pod.Path}},
		Duration: durationpb.New(time.Minute),
		Fault:    &pb.InjectRequest_Tcp{Tcp: &pb.TcpFault{Port: 8443, Tls: tf}},
	}
}

// TestTLSFaultsOnOpenSSL: Debian's openssl s_server and curl, which
// verifies the server against its certificate (--cacert). Each TLS action
// hits only the server name it matches; curl reports each as it would the
// real failure: a reset handshake (exit 35, reset by peer), an alert
// (exit 35, the alert's name), a certificate it cannot verify (exit 60),
// which curl -k accepts and talks to s_server through; a handshake delay
// shows in time_appconnect.
func TestTLSFaultsOnOpenSSL(t *testing.T) {
	nd := newNode(t)
	dir := t.TempDir()
	_, cert := startTLSServerIn(t, nd, dir)
	verify := []string{"--cacert", cert}
	for _, name := range []string{"pay.test", "shop.test"} {
		if code, msg, _ := curlName(t, nd, name, verify...); code != 0 {
			t.Fatalf("direct %s: curl exit %d: %s", name, code, msg)
		}
	}
	// A CA of the test's own, made by openssl, to issue the fault's
	// expired certificate: curl trusting it sees the expiry and nothing else.
	caCert, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", caKey, "-out", caCert, "-days", "1", "-subj", "/CN=test CA").CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	caPEM, _ := os.ReadFile(caCert)
	keyPEM, _ := os.ReadFile(caKey)

	for _, tc := range []struct {
		name   string
		tf     *pb.TlsFault
		curl   []string
		exit   int
		stderr string
	}{
		{"reset", &pb.TlsFault{Action: &pb.TlsFault_Reset_{Reset_: &pb.TlsReset{}}}, verify, 35, "reset by peer"},
		{"alert", &pb.TlsFault{Action: &pb.TlsFault_Alert{Alert: "handshake_failure"}}, verify, 35, "alert handshake failure"},
		{"unknown_ca", &pb.TlsFault{Action: &pb.TlsFault_Certificate{Certificate: &pb.TlsCertificate{Defect: "unknown_ca"}}}, verify, 60, "self-signed certificate in certificate chain"},
		{"wrong_name", &pb.TlsFault{Action: &pb.TlsFault_Certificate{Certificate: &pb.TlsCertificate{Defect: "wrong_name"}}}, verify, 60, "SSL certificate problem"},
		{"expired", &pb.TlsFault{Action: &pb.TlsFault_Certificate{Certificate: &pb.TlsCertificate{Defect: "expired", CaCertPem: string(caPEM), CaKeyPem: string(keyPEM)}}},
			[]string{"--cacert", caCert}, 60, "certificate has expired"},
		{"wrong_name with the CA", &pb.TlsFault{Action: &pb.TlsFault_Certificate{Certificate: &pb.TlsCertificate{Defect: "wrong_name", CaCertPem: string(caPEM), CaKeyPem: string(keyPEM)}}},
			[]string{"--cacert", caCert}, 60, "no alternative certificate subject name matches target host name 'pay.test'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.tf.ServerNames = []string{"pay.test"}
			c := withFault(t, nd, tlsFault(nd, tc.tf), func() {
				if code, msg, _ := curlName(t, nd, "pay.test", tc.curl...); code != tc.exit || !strings.Contains(msg, tc.stderr) {
					t.Errorf("pay.test: curl exit %d %q, want exit %d with %q", code, msg, tc.exit, tc.stderr)
				} else {
					t.Logf("pay.test: curl exit %d: %s", code, msg)
				}
				if code, msg, _ := curlName(t, nd, "shop.test", verify...); code != 0 {
					t.Errorf("shop.test (not matched): curl exit %d: %s", code, msg)
				}
				if tc.tf.GetCertificate() != nil {
					if code, msg, _ := curlName(t, nd, "pay.test", "-k"); code != 0 {
						t.Errorf("pay.test with -k: curl exit %d: %s", code, msg)
					}
				}
			})
			want := uint64(1)
			if tc.tf.GetCertificate() != nil {
				want = 2
			}
			if c.GetTlsHandshakes() < 2 || c.GetTlsHandshakesFaulted() != want {
				t.Errorf("counters: %d handshakes, %d faulted; want at least 2, %d faulted", c.GetTlsHandshakes(), c.GetTlsHandshakesFaulted(), want)
			}
		})
	}

	t.Run("handshake_delay", func(t *testing.T) {
		const d = 500 * time.Millisecond
		_, _, direct := curlName(t, nd, "pay.test", verify...)
		withFault(t, nd, tlsFault(nd, &pb.TlsFault{ServerNames: []string{"*.test"}, Action: &pb.TlsFault_HandshakeDelay{HandshakeDelay: durationpb.New(d)}}), func() {
			code, msg, took := curlName(t, nd, "pay.test", verify...)
			t.Logf("time_appconnect %s direct, %s under a %s handshake delay", direct, took, d)
			if code != 0 || took < d || took > d+direct+time.Second {
				t.Errorf("curl exit %d (%s), handshake %s; want it to work in about %s + %s", code, msg, took, d, direct)
			}
		})
	})
}
