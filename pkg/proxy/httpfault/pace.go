package httpfault

import (
	"runtime"
	"sync/atomic"
	"time"
)

// pacer times delays so that they keep their interval. A Go timer fires
// late on an idle machine, by a third of a millisecond on average (the
// runtime's poller sleeps in whole milliseconds), which would shift every
// delay's distribution up. The pacer aims early by the lateness it has
// measured on its own timers: each wake-up moves its aim by an eighth of
// how late (or early) it was. A timer that fires before the deadline waits
// out the rest by yielding, so that a delay is never shorter than asked;
// that rest is bounded by maxEarly and is a fraction of a millisecond.
type pacer struct {
	early atomic.Int64 // ns to aim early
}

// maxEarly bounds the aim, whatever a loaded machine does to timers.
const maxEarly = 2 * time.Millisecond

// aim returns the deadline of a delay d starting now, and how long to set
// a timer for.
func (pc *pacer) aim(d time.Duration) (deadline time.Time, wait time.Duration) {
	return time.Now().Add(d), max(d-time.Duration(pc.early.Load()), 0)
}

// woke records a timer that fired for deadline, and returns at the
// deadline, not before.
func (pc *pacer) woke(deadline time.Time) {
	late := time.Since(deadline)
	e := pc.early.Load() + int64(late)/8
	pc.early.Store(min(max(e, 0), int64(maxEarly)))
	for time.Now().Before(deadline) {
		runtime.Gosched()
	}
}
