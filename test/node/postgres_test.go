package node

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
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

// pgBin is Debian 12's PostgreSQL (package postgresql, which test/deps.sh
// installs).
const pgBin = "/usr/lib/postgresql/15/bin"

// startPostgres runs a throwaway PostgreSQL as the postgres user in the pod
// namespace on :5432, trusting every client, until the test ends.
func startPostgres(t *testing.T, nd *node) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(pgBin, "postgres")); err != nil {
		t.Fatal("PostgreSQL 15 is not installed (make test-deps installs it)")
	}
	dir, err := os.MkdirTemp("", "fl-test-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	data := filepath.Join(dir, "data")
	asPostgres := func(args ...string) *exec.Cmd {
		return exec.Command("setpriv", append([]string{"--reuid=postgres", "--regid=postgres", "--init-groups"}, args...)...)
	}
	u, err := user.Lookup("postgres") // made by the package
	if err != nil {
		t.Fatalf("no postgres user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	os.Chown(dir, uid, gid)
	if out, err := asPostgres(filepath.Join(pgBin, "initdb"), "-D", data, "--auth=trust", "-U", "postgres", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	hba, err := os.OpenFile(filepath.Join(data, "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	hba.WriteString("host all all 0.0.0.0/0 trust\n")
	hba.Close()
	cmd := exec.Command("ip", "netns", "exec", nd.pod.Name, "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
		filepath.Join(pgBin, "postgres"), "-D", data, "-k", dir, "-h", "0.0.0.0", "-p", "5432", "-c", "fsync=off")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = proctest.LogTo(t, "postgres"), proctest.LogTo(t, "postgres")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGQUIT); cmd.Wait() })
	addr := netip.AddrPortFrom(nd.pod.Addr, 5432).String()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if out, err := psql(nd, "SELECT 1"); err == nil && out == "1" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("postgres at %s not ready within 20s", addr)
		}
	}
}

// psql runs Debian's psql in the client namespace.
func psql(nd *node, sql string) (string, error) {
	cmd := exec.Command("ip", "netns", "exec", nd.client.Name, "psql", "-X", "-A", "-t", "-h", nd.pod.Addr.String(), "-p", "5432", "-U", "postgres",
		"-v", "ON_ERROR_STOP=1", "-c", sql)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=5")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func pgFault(nd *node, downstream *pb.Toxic) *pb.InjectRequest {
	return &pb.InjectRequest{
		Target:   &pb.Target{Kind: &pb.Target_NetnsPath{NetnsPath: nd.pod.Path}},
		Duration: durationpb.New(2 * time.Minute),
		Fault:    &pb.InjectRequest_Tcp{Tcp: &pb.TcpFault{Port: 5432, Downstream: []*pb.Toxic{downstream}}},
	}
}

// withFault runs fn while the fault runs, then revokes it.
func withFault(t *testing.T, nd *node, req *pb.InjectRequest, fn func()) *pb.Counters {
	t.Helper()
	done := make(chan *pb.InjectResponse, 1)
	go func() {
		resp, err := proctest.Inject(context.Background(), nd.api, req)
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	faults := nd.waitFaults(t, 1)
	fn()
	if _, err := nd.api.Revoke(context.Background(), &pb.RevokeRequest{Id: faults[0].GetId()}); err != nil {
		t.Fatal(err)
	}
	return (<-done).GetFault().GetCounters()
}

// TestPostgresUnderTCPToxics: Debian's PostgreSQL and psql. Copying a
// 20 MB table out under a 1 MB/s downstream bandwidth takes 20 s ± 10%;
// reset_peer makes a running query fail (libpq reports the reset as a lost
// connection; a raw connection sees the RST);
// limit_data cuts a result set.
func TestPostgresUnderTCPToxics(t *testing.T) {
	nd := newNode(t)
	startPostgres(t, nd)
	if out, err := psql(nd, "CREATE TABLE t AS SELECT repeat('x', 995) AS s FROM generate_series(1, 20000)"); err != nil {
		t.Fatalf("create table: %v: %s", err, out)
	}
	// What the copy sends: each row's 995 bytes and newline in a CopyData
	// message (5 bytes of header), about 20.1 MB.
	const bytes, rate = 20000 * (995 + 1 + 5), 1_000_000
	start := time.Now()
	if out, err := psql(nd, `\copy t TO '/dev/null'`); err != nil {
		t.Fatalf("copy, direct: %v: %s", err, out)
	}
	direct := time.Since(start)

	t.Run("bandwidth", func(t *testing.T) {
		var took time.Duration
		c := withFault(t, nd, pgFault(nd, &pb.Toxic{Kind: &pb.Toxic_Bandwidth{Bandwidth: &pb.BandwidthToxic{Rate: rate}}}), func() {
			start := time.Now()
			if out, err := psql(nd, `\copy t TO '/dev/null'`); err != nil {
				t.Fatalf("copy: %v: %s", err, out)
			}
			took = time.Since(start)
		})
		want := time.Duration(bytes) * time.Second / rate
		t.Logf("copy of %.1f MB: %s direct, %s at %d B/s (want %s ± 10%%); %d bytes downstream", float64(bytes)/1e6, direct.Round(time.Millisecond), took.Round(time.Millisecond), rate, want.Round(time.Millisecond), c.GetBytesDownstream())
		if took < want*9/10 || took > want*11/10 {
			t.Errorf("copy took %s, want %s ± 10%%", took, want)
		}
	})
	t.Run("reset_peer", func(t *testing.T) {
		c := withFault(t, nd, pgFault(nd, &pb.Toxic{Kind: &pb.Toxic_ResetPeer{ResetPeer: &pb.ResetPeerToxic{Timeout: durationpb.New(time.Second)}}}), func() {
			// libpq reports a reset (ECONNRESET) as the server closing
			// the connection; a raw connection shows the RST itself.
			out, err := psql(nd, "SELECT pg_sleep(5)")
			if err == nil || !strings.Contains(out, "server closed the connection unexpectedly") {
				t.Errorf("a query running past the reset: %v: %q, want psql's connection-lost error", err, out)
			}
			c, err := nd.client.Dial()(context.Background(), "tcp", netip.AddrPortFrom(nd.pod.Addr, 5432).String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			start := time.Now()
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) || time.Since(start) < 900*time.Millisecond {
				t.Errorf("a raw connection after %s: %v, want a reset after 1s", time.Since(start), err)
			}
		})
		if c.GetTcpConnectionsCut() != 2 {
			t.Errorf("counters %v: want two connections cut", c)
		}
	})
	t.Run("limit_data", func(t *testing.T) {
		withFault(t, nd, pgFault(nd, &pb.Toxic{Kind: &pb.Toxic_LimitData{LimitData: &pb.LimitDataToxic{Bytes: 100_000}}}), func() {
			out, err := psql(nd, "SELECT s FROM t")
			if err == nil || !strings.Contains(out, "server closed the connection unexpectedly") {
				t.Errorf("a result set past the limit: %v: %q, want the connection closed", err, out[max(0, len(out)-300):])
			}
		})
	})
	if out, err := psql(nd, "SELECT count(*) FROM t"); err != nil || out != "20000" {
		t.Errorf("after the faults: %q %v", out, err)
	}
}
