package engine_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/faultline-dev/faultline/internal/testkit/netnstest"
	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/fault"
)

// Targets and starts the engine refuses, with nothing left running.

func TestHostNetnsRefused(t *testing.T) {
	netnstest.RequireRoot(t)
	eng := engine.New(engine.Options{})
	defer eng.Close()
	for _, target := range []engine.Target{{NetnsPath: "/proc/self/ns/net"}, {PID: 1}, {PID: os.Getpid()}} {
		_, err := eng.Start(context.Background(), target, spec(t, &fault.HTTP{Port: 8080, ErrorRate: 1, ErrorStatus: 503}))
		if !errdefs.IsFailedPrecondition(err) {
			t.Errorf("%s: got %v, want FailedPrecondition", target, err)
		} else {
			t.Logf("%s: %v", target, err)
		}
	}
	if n := len(eng.List()); n != 0 {
		t.Errorf("%d faults after refusals", n)
	}
}

func TestFIFOAsNetnsIsInvalidAtOnce(t *testing.T) {
	netnstest.RequireRoot(t)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	eng := engine.New(engine.Options{})
	defer eng.Close()
	start := time.Now()
	_, err := eng.Start(context.Background(), engine.Target{NetnsPath: fifo}, spec(t, &fault.HTTP{Port: 8080, ErrorRate: 1, ErrorStatus: 503}))
	if !errdefs.IsInvalidArgument(err) || time.Since(start) > time.Second {
		t.Fatalf("after %v: %v, want InvalidArgument at once", time.Since(start), err)
	}
	t.Log(err)
}

// TestSixtyFifthFaultExplained: the kernel takes 64 sk_lookup programs per
// namespace; the 65th fault says so instead of "argument list too long".
func TestSixtyFifthFaultExplained(t *testing.T) {
	n := netnstest.NewNet(t)
	pod := n.AddHost("pod")
	eng := engine.New(engine.Options{})
	defer eng.Close()
	target := engine.Target{NetnsPath: pod.Path}
	for i := range 64 {
		if _, err := eng.Start(context.Background(), target, spec(t, &fault.HTTP{Port: uint16(9000 + i), ErrorRate: 1, ErrorStatus: 503})); err != nil {
			t.Fatalf("fault %d: %v", i+1, err)
		}
	}
	_, err := eng.Start(context.Background(), target, spec(t, &fault.HTTP{Port: 9064, ErrorRate: 1, ErrorStatus: 503}))
	if !errdefs.IsResourceExhausted(err) {
		t.Fatalf("65th fault: %v, want ResourceExhausted", err)
	}
	t.Log(err)
	if n := len(eng.List()); n != 64 {
		t.Errorf("%d faults, want the 64 that started", n)
	}
}
