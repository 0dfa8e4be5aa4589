package fault

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

func TestPhaseRefusals(t *testing.T) {
	s := func(n int) *pb.HTTPPhase { return &pb.HTTPPhase{Duration: ms(n * 1000)} }
	for _, tc := range []struct {
		req  *pb.InjectRequest
		want string
	}{
		{inject(&pb.HTTPFault{Port: 80, Phases: []*pb.HTTPPhase{s(10), s(20)}}, 25*time.Second), "phases last 30s in all, longer than the fault's duration 25s"},
		{inject(&pb.HTTPFault{Port: 80, Phases: []*pb.HTTPPhase{{}}}, time.Minute), "phases[0].duration must be positive, got 0s"},
		{inject(&pb.HTTPFault{Port: 80, Phases: []*pb.HTTPPhase{s(1), {Duration: ms(-5)}}}, time.Minute), "phases[1].duration must be positive"},
		{inject(&pb.HTTPFault{Port: 80, Phases: []*pb.HTTPPhase{s(1), {Duration: ms(1000), ErrorRate: 1}}}, time.Minute), "phases[1]: errorCode must be an HTTP status in 200-599 when errorRate > 0"},
		{inject(&pb.HTTPFault{Port: 80, Phases: []*pb.HTTPPhase{{Duration: ms(1000), AverageDelay: ms(10), DelayVariation: ms(20)}}}, time.Minute), "phases[0]: delayVariation (20ms) must not be greater than averageDelay (10ms)"},
		{inject(&pb.HTTPFault{Port: 80, ErrorRate: 1, ErrorCode: 500, Phases: []*pb.HTTPPhase{s(1)}}, time.Minute), "phases replace averageDelay"},
		{inject(&pb.HTTPFault{Port: 80, FailFirst: &pb.FailFirst{Attempts: 1}, Phases: []*pb.HTTPPhase{s(1)}}, time.Minute), "phases cannot be combined with failFirst"},
		{inject(&pb.GrpcFault{Port: 90, Phases: []*pb.GrpcPhase{{Duration: ms(1000), ErrorRate: 1, StatusCode: 99}}}, time.Minute), "phases[0]: statusCode must be a gRPC status code in 1-16, got 99"},
		{inject(&pb.GrpcFault{Port: 90, StatusCode: 14, Phases: []*pb.GrpcPhase{{Duration: ms(1000)}}}, time.Minute), "phases replace averageDelay"},
		{inject(&pb.GrpcFault{Port: 90, Phases: []*pb.GrpcPhase{{Duration: ms(61000)}}}, time.Minute), "phases last 1m1s in all, longer than the fault's duration 1m0s"},
	} {
		_, err := FromProto(tc.req)
		if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) || strings.Count(err.Error(), "invalid argument") != 1 {
			t.Errorf("%v: %v, want InvalidArgument %q", tc.req, err, tc.want)
		}
	}
}

// TestTimeline: 429 with Retry-After for 10 s, then a 300 ms delay for 20 s,
// then nothing; the phases keep the fault's matching.
func TestTimeline(t *testing.T) {
	spec, err := FromProto(inject(&pb.HTTPFault{Port: 80, Exclude: "/health", Phases: []*pb.HTTPPhase{
		{Duration: ms(10000), ErrorRate: 1, ErrorCode: 429, ErrorHeaders: map[string]string{"retry-after": "2"}},
		{Duration: ms(20000), AverageDelay: ms(300)},
	}}, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	f := spec.Fault.(*HTTP)
	get, health := req{method: "GET", path: "/api"}, req{method: "GET", path: "/health"}
	if d := f.Decide(get); d.Answer == nil || d.Answer.Status != 429 || d.Answer.Header[0] != (HeaderField{"Retry-After", "2"}) {
		t.Errorf("before Begin: %+v, want the first phase's 429", d)
	}
	start := time.Now()
	f.Begin(start)
	f.Begin(start.Add(-time.Hour)) // the first Begin counts
	for _, tc := range []struct {
		at        time.Duration
		status    int
		delay     time.Duration
		unmatched bool
	}{
		{0, 429, 0, false}, {9 * time.Second, 429, 0, false}, {10 * time.Second, 0, 300 * time.Millisecond, false},
		{29 * time.Second, 0, 300 * time.Millisecond, false}, {30 * time.Second, 0, 0, true}, {50 * time.Second, 0, 0, true},
	} {
		var got Decision
		if r := f.Timeline.rule(start.Add(tc.at)); r != nil {
			got = r.Decide(get)
		}
		status := 0
		if got.Answer != nil {
			status = got.Answer.Status
		}
		if status != tc.status || got.Delay != tc.delay || got.Matched == tc.unmatched {
			t.Errorf("at %s: status %d delay %s matched %v, want %d %s %v", tc.at, status, got.Delay, got.Matched, tc.status, tc.delay, !tc.unmatched)
		}
	}
	if d := f.Decide(health); d.Matched {
		t.Error("an excluded path must stay excluded in every phase")
	}
}
