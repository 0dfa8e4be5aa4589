package containerd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/faultline-dev/faultline/pkg/targets"
	"github.com/faultline-dev/faultline/pkg/targets/netnsdir"
)

// The source against a real containerd is tested in test/local; these
// are the cases without one.

func TestAbsentCostsNothing(t *testing.T) {
	s := &Source{Address: filepath.Join(t.TempDir(), "containerd.sock")}
	start := time.Now()
	_, err := s.Resolve(context.Background(), targets.Set{Pods: &targets.Selector{}})
	if !errors.Is(err, targets.ErrAbsent) || time.Since(start) > time.Second {
		t.Errorf("no socket file: %v after %s, want ErrAbsent at once", err, time.Since(start))
	}
}

func TestStaleSocketFailsAtOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "containerd.sock")
	// A socket file nobody listens on, as a crashed containerd leaves.
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	s := &Source{Address: path}
	start := time.Now()
	_, err = s.Resolve(context.Background(), targets.Set{Pods: &targets.Selector{}})
	if err == nil || errors.Is(err, targets.ErrAbsent) || !strings.Contains(err.Error(), "connection refused") || time.Since(start) > 2*time.Second {
		t.Errorf("stale socket: %v after %s, want a connection-refused error at once", err, time.Since(start))
	}
}

func TestMultiWithoutContainerd(t *testing.T) {
	dir := t.TempDir()
	netnsDir, labelsDir := filepath.Join(dir, "netns"), filepath.Join(dir, "labels")
	os.Mkdir(netnsDir, 0o700)
	os.Mkdir(labelsDir, 0o700)
	os.WriteFile(filepath.Join(netnsDir, "catalog"), nil, 0o600)
	os.WriteFile(filepath.Join(labelsDir, "catalog"), []byte("faultline.namespace=demo\nfaultline.service=catalog\n"), 0o600)
	ctr := &Source{Address: filepath.Join(dir, "containerd.sock")}
	m := targets.Multi{"containerd": ctr, "netns": &netnsdir.Source{Dir: netnsDir, LabelsDir: labelsDir}}

	res, err := m.Resolve(context.Background(), targets.Set{Service: &targets.Service{Name: "catalog", Namespace: "demo"}})
	if err != nil || len(res.Targets) != 1 || res.Targets[0].Source != "netns" {
		t.Fatalf("got %+v, %v; want the netns target", res, err)
	}
	wantNote := "containerd at " + ctr.Address + ": not on this machine: no socket file"
	if len(res.Notes) != 1 || res.Notes[0] != wantNote {
		t.Errorf("notes %q, want %q", res.Notes, wantNote)
	}

	os.RemoveAll(netnsDir)
	res, err = m.Resolve(context.Background(), targets.Set{Service: &targets.Service{Name: "catalog", Namespace: "demo"}})
	if err != nil || len(res.Targets) != 0 || len(res.Sources) != 2 || !strings.Contains(res.Sources[1], "named netns in "+netnsDir+" (not on this machine") {
		t.Errorf("both absent: %+v, %v; want no targets, both sources named", res, err)
	}
}
