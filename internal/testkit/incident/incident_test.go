package incident

import (
	"math"
	"testing"
	"time"
)

func TestTheDemoIncident(t *testing.T) {
	p := CallFailure(900*time.Millisecond, 150*time.Millisecond, time.Second, 0)
	for _, tc := range []struct {
		name      string
		got, want float64
	}{
		{"one call", p, 50.0 / 300},
		{"four calls, no retries", RequestFailure(p, 4, 0), 1 - math.Pow(5.0/6, 4)},
		{"four calls, 3 retries", RequestFailure(p, 4, 3), 1 - math.Pow(1-math.Pow(1.0/6, 4), 4)},
		{"no variation, under the timeout", CallFailure(900*time.Millisecond, 0, time.Second, 0), 0},
		{"no variation, over the timeout", CallFailure(1100*time.Millisecond, 0, time.Second, 0), 1},
	} {
		if math.Abs(tc.got-tc.want) > 1e-9 {
			t.Errorf("%s: %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}
