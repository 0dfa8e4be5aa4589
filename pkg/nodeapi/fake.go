package nodeapi

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/fault"
)

// FakeFaults is a Faults double for tests of the layers above the engine:
// faults that run until stopped or until their duration, with a Start that
// can be made to wait for its context.
type FakeFaults struct {
	Blocked bool // Start waits for its context to end

	mu      sync.Mutex
	started []fault.Spec
	faults  map[string]*FakeFault
}

// FakeFault is a FakeFaults fault; stopped, it counts 3 requests.
type FakeFault struct {
	mu   sync.Mutex
	st   engine.Status
	done chan struct{}
	once sync.Once
}

func (f *FakeFault) Status() engine.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *FakeFault) Done() <-chan struct{} { return f.done }

func (f *FakeFault) Stop(r engine.Reason) engine.Status {
	f.once.Do(func() {
		f.mu.Lock()
		f.st.State, f.st.EndReason = engine.StateEnded, r
		f.st.Counters.Requests = 3
		f.mu.Unlock()
		close(f.done)
	})
	return f.Status()
}

func (ff *FakeFaults) Start(ctx context.Context, t engine.Target, spec fault.Spec) (Fault, error) {
	ff.mu.Lock()
	ff.started = append(ff.started, spec)
	ff.mu.Unlock()
	if ff.Blocked {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	f := &FakeFault{st: engine.Status{ID: spec.ID, Kind: spec.Fault.Kind(), Target: t, Claim: spec.Fault.Claim(), State: engine.StateActive,
		Started: time.Now(), Expires: time.Now().Add(spec.Duration)}, done: make(chan struct{})}
	time.AfterFunc(spec.Duration, func() { f.Stop(engine.ReasonExpired) })
	ff.mu.Lock()
	if ff.faults == nil {
		ff.faults = map[string]*FakeFault{}
	}
	ff.faults[spec.ID] = f
	ff.mu.Unlock()
	return f, nil
}

// Started returns the specs Start was called with.
func (ff *FakeFaults) Started() []fault.Spec {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	return append([]fault.Spec(nil), ff.started...)
}

// Fault returns a started fault by id.
func (ff *FakeFaults) Fault(id string) *FakeFault {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	return ff.faults[id]
}

func (ff *FakeFaults) List() []engine.Status {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	var out []engine.Status
	for _, f := range ff.faults {
		if st := f.Status(); st.State != engine.StateEnded {
			out = append(out, st)
		}
	}
	return out
}

func (ff *FakeFaults) Revoke(id string) (engine.Status, error) {
	f := ff.Fault(id)
	if f == nil {
		return engine.Status{}, fmt.Errorf("%w: no active fault with id %q", errdefs.ErrNotFound, id)
	}
	return f.Stop(engine.ReasonRevoked), nil
}
