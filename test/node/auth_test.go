package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/faultline-dev/faultline/internal/testkit/netnstest"
	"github.com/faultline-dev/faultline/pkg/auth"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// unauthClient is a gRPC client we did not write (Debian's python3-grpcio)
// that calls every Gateway method, server reflection and health, without a
// token and with a wrong one, and prints the status codes as JSON. It also
// tries to read the gateway's token file.
const unauthClient = `
import json, sys, grpc
addr, token_file = sys.argv[1], sys.argv[2]
methods = ["/faultline.v1.Gateway/" + m for m in ("Targets", "InjectHTTP", "InjectGrpc", "InjectNetwork", "InjectTcp", "TerminatePods", "Status", "RevokeAll")]
out = {}
try:
    open(token_file).read()
    out["token_file"] = "read"
except OSError as e:
    out["token_file"] = type(e).__name__
ch = grpc.insecure_channel(addr)
ident = lambda b: b
for label, md in (("none", None), ("wrong", [("authorization", "Bearer guessed")])):
    for m in methods:
        try:
            ch.unary_unary(m, request_serializer=ident, response_deserializer=ident)(b"", metadata=md, timeout=10)
            out[label + " " + m] = "OK"
        except grpc.RpcError as e:
            out[label + " " + m] = e.code().name
            out["message " + label] = e.details()
    for m in ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"):
        # ListServices request: field 7 (list_services), empty string.
        try:
            list(ch.stream_stream(m, request_serializer=ident, response_deserializer=ident)(iter([b"\x3a\x00"]), metadata=md, timeout=10))
            out[label + " " + m] = "OK"
        except grpc.RpcError as e:
            out[label + " " + m] = e.code().name
health = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=ident, response_deserializer=ident)(b"", timeout=10)
out["health"] = "SERVING" if health == b"\x08\x01" else repr(health)
print(json.dumps(out))
`

// TestGatewayNeedsItsToken starts `faultline gateway --local` as root and
// calls it as an unprivileged user (setpriv) with Python's grpcio: every
// call but health is Unauthenticated, and the token file cannot be read.
// Then the token's owner uses the CLI and the k6 library unchanged: both
// find the token in the gateway's default token file.
func TestGatewayNeedsItsToken(t *testing.T) {
	l := newNamedNetnsLab(t)
	config := t.TempDir() // the gateway user's XDG_CONFIG_HOME
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	gw := exec.Command(filepath.Join(binDir, "faultline"), "gateway", "--local", "--listen", addr, "--socket", l.socket, "--containerd-socket", l.noCtrd)
	gw.Env = append(os.Environ(), "XDG_CONFIG_HOME="+config)
	stderr, _ := gw.StderrPipe()
	gw.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Process.Kill(); gw.Wait() })
	tokenFile := filepath.Join(config, "faultline", "gateway-token")
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "gateway ready") {
				ready <- sc.Text()
			}
		}
	}()
	select {
	case line := <-ready:
		token, _ := os.ReadFile(tokenFile)
		if !strings.Contains(line, "token_file="+tokenFile) || len(token) < 40 || strings.Contains(line, strings.TrimSpace(string(token))) {
			t.Errorf("log line %q: want the token file's path and never the token", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway did not start")
	}

	// The unprivileged caller.
	dir, err := os.MkdirTemp("", "fl-unauth-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	script := filepath.Join(dir, "client.py")
	if err := os.WriteFile(script, []byte(unauthClient), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "/usr/bin/python3", script, addr, tokenFile)
	cmd.Dir, cmd.Env = "/", []string{"HOME=/nonexistent", "PATH=/usr/bin:/bin"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("python client as nobody: %v\n%s", err, errb.String())
	}
	var got map[string]string
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("python client output %q: %v", out.String(), err)
	}
	t.Logf("as nobody: %v", got)
	if got["token_file"] != "PermissionError" || got["health"] != "SERVING" {
		t.Errorf("token file %s, health %s: want PermissionError and SERVING", got["token_file"], got["health"])
	}
	calls := 0
	for k, v := range got {
		if strings.HasPrefix(k, "none ") || strings.HasPrefix(k, "wrong ") {
			calls++
			if v != "UNAUTHENTICATED" {
				t.Errorf("%s: %s, want UNAUTHENTICATED", k, v)
			}
		}
	}
	if calls != 20 {
		t.Errorf("%d calls checked, want 20", calls)
	}
	wantHint := "the token is in " + tokenFile
	if !strings.HasPrefix(got["message none"], "no bearer token") || !strings.Contains(got["message none"], wantHint) ||
		!strings.HasPrefix(got["message wrong"], "wrong bearer token") {
		t.Errorf("messages %q / %q: want them to say where the token comes from", got["message none"], got["message wrong"])
	}

	// The owner: the CLI and the library find the token themselves.
	owner := append(os.Environ(), "XDG_CONFIG_HOME="+config, "FAULTLINE_ADDR="+addr, "FAULTLINE_TOKEN=", "FAULTLINE_TOKEN_FILE=")
	cli := exec.Command(filepath.Join(binDir, "faultline"), "targets", "-n", l.namespace, "--service", "catalog")
	cli.Env = owner
	if b, err := cli.CombinedOutput(); err != nil || !strings.Contains(string(b), "catalog") {
		t.Errorf("CLI as the owner: %v\n%s", err, b)
	}
	cli = exec.Command(filepath.Join(binDir, "faultline"), "targets", "-n", l.namespace, "--service", "catalog")
	cli.Env = append(owner, "FAULTLINE_TOKEN=guessed")
	if b, err := cli.CombinedOutput(); err == nil || !strings.Contains(string(b), "faultline: wrong bearer token; the token is in "+tokenFile) {
		t.Errorf("CLI with a wrong token: %v\n%s", err, b)
	}
	lib := filepath.Join(t.TempDir(), "targets.js")
	libPath, _ := filepath.Abs("../../k6ext/disruptor.js")
	os.WriteFile(lib, []byte(fmt.Sprintf(`import { ServiceDisruptor } from %q;
export const options = { thresholds: { checks: ['rate==1'] } };
import { check } from 'k6';
export default function () {
  const names = new ServiceDisruptor('catalog', %q).targets();
  check(names, { 'the library lists the target': (n) => n.length === 1 });
}
`, libPath, l.namespace)), 0o644)
	k6 := exec.Command(filepath.Join(l.bin, "k6"), "run", lib)
	k6.Env = owner
	if b, err := k6.CombinedOutput(); err != nil {
		t.Errorf("the library as the owner: %v\n%s", err, b)
	}
}

// TestFaultlinedListenNeedsToken: faultlined's optional TCP listener takes
// the same bearer token, kept beside its socket; health stays open.
func TestFaultlinedListenNeedsToken(t *testing.T) {
	netnstest.RequireRoot(t)
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	socket := filepath.Join(dir, "faultlined.sock")
	d := exec.Command(filepath.Join(binDir, "faultlined"), "--socket", socket, "--listen", addr)
	d.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Process.Kill(); d.Wait() })
	call := func(opts ...grpc.DialOption) error {
		cc, err := grpc.NewClient("passthrough:///"+addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		_, err = pb.NewNodeClient(cc).List(context.Background(), &pb.ListRequest{})
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for status.Code(call()) == codes.Unavailable && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if err := call(); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), filepath.Join(dir, "faultlined.token")) {
		t.Errorf("List without the token: %v, want Unauthenticated naming the token file", err)
	}
	token, err := auth.ReadFile(filepath.Join(dir, "faultlined.token"), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := call(grpc.WithPerRPCCredentials(auth.Bearer(token))); err != nil {
		t.Errorf("List with the token: %v", err)
	}
	cc, _ := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer cc.Close()
	if _, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health without a token: %v", err)
	}
}
