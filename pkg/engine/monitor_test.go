package engine_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/fault"
	"github.com/faultline-dev/faultline/pkg/proxy/httpfault"
)

// monitor is a test double of engine.Monitor.
type monitor struct {
	mu               sync.Mutex
	delays, overhead []float64
	ended            []engine.Status
}

type obs struct {
	m *monitor
	v *[]float64
}

func (o obs) Observe(v float64) { o.m.mu.Lock(); *o.v = append(*o.v, v); o.m.mu.Unlock() }

func (m *monitor) Observers(string, fault.Kind, engine.Target) (httpfault.Observer, httpfault.Observer) {
	return obs{m, &m.delays}, obs{m, &m.overhead}
}

func (m *monitor) Ended(st engine.Status) { m.mu.Lock(); m.ended = append(m.ended, st); m.mu.Unlock() }

// TestMonitorSeesDelaysOverheadLinksAndTheEnd: a proxy fault reports each
// delay as spent and the overhead of undelayed requests to the monitor,
// holds one link while active, and is reported ended once, with its
// reason and final counters.
func TestMonitorSeesDelaysOverheadLinksAndTheEnd(t *testing.T) {
	w := newWorld(t)
	m := &monitor{}
	w.eng = engine.New(engine.Options{Monitor: m})
	t.Cleanup(w.eng.Close)

	f := &fault.HTTP{Port: 8080, Delay: fault.Delay{Average: 50 * time.Millisecond, Rate: 1}, Match: fault.Match{Paths: []string{"/slow"}}}
	r, err := w.eng.Start(context.Background(), w.target(), spec(t, f))
	if err != nil {
		t.Fatal(err)
	}
	if st := r.Status(); st.Links != 1 {
		t.Errorf("active proxy fault holds %d links, want 1", st.Links)
	}
	for range 3 {
		do(t, w.http, "GET", w.url+"/slow", nil)
		do(t, w.http, "GET", w.url+"/fast", nil)
	}
	st := r.Stop(engine.ReasonRevoked)
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.delays) != 3 || len(m.overhead) != 3 {
		t.Errorf("observed %d delays and %d overheads, want 3 and 3", len(m.delays), len(m.overhead))
	}
	for _, d := range m.delays {
		if d < 0.045 || d > 0.5 {
			t.Errorf("delay observed as %.3fs, want about 0.05", d)
		}
	}
	if len(m.ended) != 1 || m.ended[0].EndReason != engine.ReasonRevoked || m.ended[0].Counters.Requests != 6 || m.ended[0].Links != 0 {
		t.Errorf("ended reports %+v, want one revoked with 6 requests and no links (final %+v)", m.ended, st)
	}
}
