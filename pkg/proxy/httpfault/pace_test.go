package httpfault

import (
	"os"
	"testing"
	"time"
)

func TestPacerNeverShort(t *testing.T) {
	var pc pacer
	for _, d := range []time.Duration{0, time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond} {
		for range 5 {
			start := time.Now()
			rang := make(chan time.Duration, 1)
			pc.after(d, func() { rang <- time.Since(start) })
			if got := <-rang; got < d {
				t.Fatalf("a delay of %s rang after %s", d, got)
			}
		}
	}
}

func TestAlarmStop(t *testing.T) {
	before := openFDs(t)
	for range 20 {
		a := newAlarm(time.Hour, func() { t.Error("a stopped alarm rang") })
		if !a.Stop() {
			t.Fatal("Stop of an armed alarm reported false")
		}
		if a.Stop() {
			t.Fatal("a second Stop reported true")
		}
	}
	rang := make(chan struct{})
	a := newAlarm(time.Millisecond, func() { close(rang) })
	<-rang
	if a.Stop() {
		t.Fatal("Stop after the alarm rang reported true")
	}
	// Every timerfd is closed once its alarm has rung or been stopped.
	deadline := time.Now().Add(5 * time.Second)
	for openFDs(t) > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open, %d before the alarms", openFDs(t), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
