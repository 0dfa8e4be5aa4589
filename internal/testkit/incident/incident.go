// Package incident computes what the dependency-timeout incident should
// do: the chance one call times out under a uniform delay, and the chance
// a request of several calls fails, with or without retries. The demo and
// the k6 example's test compare what they observe against it.
package incident

import (
	"math"
	"time"
)

// CallFailure is the chance one call with the given timeout fails when the
// delay is uniform in [avg-variation, avg+variation] and the direct call
// takes base.
func CallFailure(avg, variation, timeout, base time.Duration) float64 {
	lo, hi := avg-variation, avg+variation
	if hi == lo {
		if hi > timeout-base {
			return 1
		}
		return 0
	}
	return math.Max(0, math.Min(1, float64(hi-(timeout-base))/float64(hi-lo)))
}

// RequestFailure is the chance a request of calls calls fails when any
// failed call fails it and each call is retried up to retries times.
func RequestFailure(p float64, calls, retries int) float64 {
	call := math.Pow(p, float64(retries+1))
	return 1 - math.Pow(1-call, float64(calls))
}

// Sigma is the binomial standard deviation of a rate p over n trials.
func Sigma(p float64, n int) float64 {
	return math.Sqrt(p * (1 - p) / math.Max(1, float64(n)))
}
