package httpfault

import (
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// pacer times delays so that they keep their interval.
//
// A Go timer fires late on an idle machine, by up to a millisecond (the
// runtime's poller sleeps in whole milliseconds), and 0.1–0.4 ms on
// average in make bench, which would shift every delay's distribution
// up. So a delay rings on the kernel's high-resolution clock instead: a
// timerfd, which the runtime's poller waits on like a socket and which
// wakes it when it expires, however long the poller meant to sleep.
//
// What is left (waking up) the pacer takes out: it aims early by the
// lateness it has measured on its own alarms (each wake-up moves its aim
// by an eighth of how late, or early, it was), and an alarm that rings
// before the deadline waits out the rest by yielding, so that a delay is
// never shorter than asked; that rest is bounded by maxEarly.
type pacer struct {
	early atomic.Int64 // ns to aim early
}

// maxEarly bounds the aim, whatever a loaded machine does to timers.
const maxEarly = 2 * time.Millisecond

// after runs fn in a goroutine of its own once d has passed from now,
// unless the alarm it returns is stopped first.
func (pc *pacer) after(d time.Duration, fn func()) *alarm {
	deadline := time.Now().Add(d)
	return newAlarm(max(d-time.Duration(pc.early.Load()), 0), func() {
		pc.woke(deadline)
		fn()
	})
}

// woke records an alarm that rang for deadline, and returns at the
// deadline, not before.
func (pc *pacer) woke(deadline time.Time) {
	late := time.Since(deadline)
	e := pc.early.Load() + int64(late)/8
	pc.early.Store(min(max(e, 0), int64(maxEarly)))
	for time.Now().Before(deadline) {
		runtime.Gosched()
	}
}

// alarm is a one-shot timer on a timerfd, with time.Timer's Stop. Where
// no timerfd can be had (out of descriptors) it is a Go timer.
type alarm struct {
	f     *os.File
	timer *time.Timer
	state atomic.Int32 // alarmArmed, then alarmRang or alarmStopped
}

const (
	alarmArmed int32 = iota
	alarmRang
	alarmStopped
)

func newAlarm(d time.Duration, fn func()) *alarm {
	a := &alarm{}
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err == nil {
		// A zero value would disarm it: the shortest wait is 1 ns.
		spec := unix.ItimerSpec{Value: unix.NsecToTimespec(max(d, 1).Nanoseconds())}
		if err = unix.TimerfdSettime(fd, 0, &spec, nil); err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		a.timer = time.AfterFunc(d, func() {
			if a.state.CompareAndSwap(alarmArmed, alarmRang) {
				fn()
			}
		})
		return a
	}
	a.f = os.NewFile(uintptr(fd), "timerfd") // non-blocking: read waits in the runtime's poller
	go func() {
		var b [8]byte
		_, err := a.f.Read(b[:])
		a.f.Close()
		if err == nil && a.state.CompareAndSwap(alarmArmed, alarmRang) {
			fn()
		}
	}()
	return a
}

// Stop keeps the alarm from running its function, and reports whether it
// did so (false: it ran, or was stopped before).
func (a *alarm) Stop() bool {
	if !a.state.CompareAndSwap(alarmArmed, alarmStopped) {
		return false
	}
	if a.timer != nil {
		a.timer.Stop()
	} else {
		_ = a.f.SetReadDeadline(time.Unix(1, 0)) // ends the read: the descriptor closes
	}
	return true
}
