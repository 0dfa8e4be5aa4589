package fault

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// Timeline runs a fault as phases: each phase's rule for its duration, in
// order, from when the fault is active (Begin); after the last, requests
// pass untouched. The rules of the phases are faults of the same kind as
// the one that holds the timeline, with its port and matching.
type Timeline struct {
	Phases []Phase
	start  atomic.Int64 // unix nanoseconds; 0 until Begin
}

// Phase is one step of a Timeline.
type Phase struct {
	Duration time.Duration
	Rule     Rule
}

// MaxPhases bounds a timeline.
const MaxPhases = 100

// Timed is a fault whose effect depends on the time since it became
// active; the engine calls Begin when it does.
type Timed interface {
	Begin(at time.Time)
}

// Begin starts the timeline's clock; the first call counts.
func (t *Timeline) Begin(at time.Time) {
	if t != nil {
		t.start.CompareAndSwap(0, at.UnixNano())
	}
}

// Length is the phases' durations summed.
func (t *Timeline) Length() time.Duration {
	var sum time.Duration
	for _, p := range t.Phases {
		sum += p.Duration
	}
	return sum
}

// rule returns the rule of the phase running now (the first one until
// Begin), and nil after the last.
func (t *Timeline) rule(now time.Time) Rule {
	var elapsed time.Duration
	if s := t.start.Load(); s != 0 {
		elapsed = now.Sub(time.Unix(0, s))
	}
	for _, p := range t.Phases {
		if elapsed < p.Duration {
			return p.Rule
		}
		elapsed -= p.Duration
	}
	return nil
}

// decide is Rule.Decide through the timeline.
func (t *Timeline) decide(r Request) Decision {
	if rule := t.rule(time.Now()); rule != nil {
		return rule.Decide(r)
	}
	return Decision{}
}

func (t *Timeline) validate(phase func(i int) error) error {
	if len(t.Phases) > MaxPhases {
		return Invalid("phases: at most %d, got %d", MaxPhases, len(t.Phases))
	}
	for i, p := range t.Phases {
		if p.Duration <= 0 {
			return Invalid("phases[%d].duration must be positive, got %s", i, p.Duration)
		}
		if err := phase(i); err != nil {
			return Within(fmt.Sprintf("phases[%d]", i), err)
		}
	}
	return nil
}

// timelineLength is the length of a fault's timeline, 0 without one:
// validateSpec checks that it fits in the fault's duration.
func timelineLength(f Fault) time.Duration {
	switch f := f.(type) {
	case *HTTP:
		if f.Timeline != nil {
			return f.Timeline.Length()
		}
	case *GRPC:
		if f.Timeline != nil {
			return f.Timeline.Length()
		}
	}
	return 0
}

func (f *HTTP) Begin(at time.Time) { f.Timeline.Begin(at) }
func (f *GRPC) Begin(at time.Time) { f.Timeline.Begin(at) }

// httpPhases converts an HTTP fault's phases: each an *HTTP with the
// fault's port and matching and the phase's delay and error.
func httpPhases(f *HTTP, in []*pb.HTTPPhase) (*Timeline, error) {
	if len(in) == 0 {
		return nil, nil
	}
	t := &Timeline{}
	for i, p := range in {
		ph := &HTTP{Port: f.Port, DelayResponse: f.DelayResponse, Exclude: f.Exclude, Match: f.Match, KeepConnections: f.KeepConnections,
			ErrorRate: p.GetErrorRate(), ErrorStatus: status(p.GetErrorCode())}
		d, err := duration(fmt.Sprintf("phases[%d].duration", i), p.GetDuration())
		if err != nil {
			return nil, err
		}
		if ph.Delay, err = delay(p.GetAverageDelay(), p.GetDelayVariation(), p.DelayRate); err != nil {
			return nil, Within(fmt.Sprintf("phases[%d]", i), err)
		}
		if p.GetErrorBody() != "" {
			ph.ErrorBody = []byte(p.GetErrorBody())
		}
		for _, k := range slices.Sorted(maps.Keys(p.GetErrorHeaders())) {
			ph.ErrorHeaders = append(ph.ErrorHeaders, HeaderField{canonical(k), p.GetErrorHeaders()[k]})
		}
		t.Phases = append(t.Phases, Phase{Duration: d, Rule: ph})
	}
	return t, nil
}

// grpcPhases is httpPhases for gRPC faults.
func grpcPhases(f *GRPC, in []*pb.GrpcPhase) (*Timeline, error) {
	if len(in) == 0 {
		return nil, nil
	}
	t := &Timeline{}
	for i, p := range in {
		ph := &GRPC{Port: f.Port, Exclude: f.Exclude, Methods: f.Methods, Metadata: f.Metadata, ResetConnections: f.ResetConnections,
			ErrorRate: p.GetErrorRate(), Status: status(p.GetStatusCode()), Message: p.GetStatusMessage()}
		d, err := duration(fmt.Sprintf("phases[%d].duration", i), p.GetDuration())
		if err != nil {
			return nil, err
		}
		if ph.Delay, err = delay(p.GetAverageDelay(), p.GetDelayVariation(), p.DelayRate); err != nil {
			return nil, Within(fmt.Sprintf("phases[%d]", i), err)
		}
		t.Phases = append(t.Phases, Phase{Duration: d, Rule: ph})
	}
	return t, nil
}

// Within puts a field's path in front of an Invalid error's message
// ("phases[1]: errorCode must be ...").
func Within(at string, err error) error {
	return Invalid("%s: %s", at, strings.TrimPrefix(err.Error(), errdefs.ErrInvalidArgument.Error()+": "))
}
