// Package proctest builds faultline's binaries for process-level tests and
// runs faultlined, killing it when the test ends.
package proctest

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// Build builds the given packages (paths relative to the calling test's
// directory) into a new temporary directory and returns it.
func Build(pkgs ...string) (string, error) {
	dir, err := os.MkdirTemp("", "faultline-bin-")
	if err != nil {
		return "", err
	}
	args := append([]string{"build", "-o", dir + "/"}, pkgs...)
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return dir, nil
}

// Daemon is a running faultlined.
type Daemon struct {
	Socket string
	Cmd    *exec.Cmd
}

// StartFaultlined runs binDir/faultlined on a socket of its own, logging to
// the test, and waits for the socket.
func StartFaultlined(t *testing.T, binDir string, args ...string) *Daemon {
	t.Helper()
	d := &Daemon{Socket: filepath.Join(t.TempDir(), "faultlined.sock")}
	d.Cmd = exec.Command(filepath.Join(binDir, "faultlined"), append([]string{"--socket", d.Socket, "--log-level", "debug"}, args...)...)
	d.Cmd.Stderr = LogTo(t, "faultlined")
	if err := d.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Cmd.Process.Kill()
		d.Cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(d.Socket); err == nil {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatal("faultlined did not create its socket")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LogTo returns a writer that logs each write to t, as "name: ...": the
// output of a process a test runs.
func LogTo(t testing.TB, name string) io.Writer { return logWriter{t, name} }

type logWriter struct {
	t    testing.TB
	name string
}

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s: %s", w.name, strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// WaitFaults waits up to 5s until faultlined lists exactly n faults, all
// active, and returns them.
func WaitFaults(t testing.TB, api pb.NodeClient, n int) []*pb.FaultStatus {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := api.List(context.Background(), &pb.ListRequest{})
		if err == nil && len(resp.GetFaults()) == n && !slices.ContainsFunc(resp.GetFaults(), func(f *pb.FaultStatus) bool { return f.GetState() != pb.FaultState_FAULT_STATE_ACTIVE }) {
			return resp.GetFaults()
		}
		if time.Now().After(deadline) {
			t.Fatalf("faultlined lists %d faults (err %v), want %d, all ready", len(resp.GetFaults()), err, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Inject runs a fault through faultlined's streaming Inject until it
// ends, and returns its last message (the final status), or the error
// that ended the call.
func Inject(ctx context.Context, api pb.NodeClient, req *pb.InjectRequest) (*pb.InjectResponse, error) {
	stream, err := api.Inject(ctx, req)
	if err != nil {
		return nil, err
	}
	var last *pb.InjectResponse
	for {
		m, err := stream.Recv()
		if err == io.EOF && last != nil {
			return last, nil
		}
		if err != nil {
			return nil, err
		}
		last = m
	}
}
