package fault

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// TCP applies Toxiproxy-style toxics to the connections of one port,
// through a relay in the target's namespace: Upstream toxics act on what
// clients send, Downstream ones on what the application answers; each
// kind at most once per direction, and those of one direction combine.
type TCP struct {
	Port       uint16
	Upstream   []Toxic
	Downstream []Toxic
	// TLS, when set, applies the fault only to the TLS connections whose
	// ClientHello matches, and faults their handshake.
	TLS *TLS
}

func (f *TCP) Kind() Kind   { return KindTCP }
func (f *TCP) Claim() Claim { return Claim{Proxy: true, Port: f.Port} }

// ToxicKind names a toxic, as Toxiproxy does.
type ToxicKind string

// The toxics.
const (
	ToxicLatency   ToxicKind = "latency"
	ToxicBandwidth ToxicKind = "bandwidth"
	ToxicTimeout   ToxicKind = "timeout"
	ToxicResetPeer ToxicKind = "reset_peer"
	ToxicSlowClose ToxicKind = "slow_close"
	ToxicLimitData ToxicKind = "limit_data"
	ToxicSlicer    ToxicKind = "slicer"
)

// Toxic is one effect on one direction. Only the fields of its Kind are
// set.
type Toxic struct {
	Kind ToxicKind
	// Toxicity is the share of connections it applies to, drawn once per
	// connection.
	Toxicity float64

	Latency, Jitter time.Duration // latency
	Rate            int64         // bandwidth: bytes per second
	// Timeout: timeout (0 holds the connection) and reset_peer.
	Timeout time.Duration
	// Delay: slow_close, and slicer between writes.
	Delay time.Duration
	Bytes int64 // limit_data
	// AverageSize and SizeVariation: slicer, in bytes.
	AverageSize, SizeVariation int
}

// Applies draws whether the toxic applies to a new connection.
func (t Toxic) Applies() bool { return draw(t.Toxicity) }

// Validate checks every field and names the API field of the first problem.
func (f *TCP) Validate() error {
	if f.Port == 0 {
		return Invalid("port must be in 1-65535, got 0")
	}
	if len(f.Upstream)+len(f.Downstream) == 0 && (f.TLS == nil || f.TLS.Action == TLSMatchOnly) {
		return Invalid("a tcp fault needs at least one toxic, upstream or downstream, or a tls action (handshakeDelay, reset, alert, certificate)")
	}
	if f.TLS != nil {
		if err := f.TLS.validate(); err != nil {
			return err
		}
	}
	for _, d := range []struct {
		dir  string
		list []Toxic
	}{{"upstream", f.Upstream}, {"downstream", f.Downstream}} {
		dir, list := d.dir, d.list
		seen := map[ToxicKind]bool{}
		for i, t := range list {
			if err := t.validate(fmt.Sprintf("%s[%d]", dir, i)); err != nil {
				return err
			}
			if seen[t.Kind] {
				return Invalid("%s[%d]: %s appears twice in %s; give each toxic once per direction", dir, i, t.Kind, dir)
			}
			seen[t.Kind] = true
		}
	}
	return nil
}

func (t Toxic) validate(at string) error {
	if err := rate(at+".toxicity", t.Toxicity); err != nil {
		return err
	}
	nonNegative := func(name string, d time.Duration) error {
		if d < 0 {
			return Invalid("%s.%s.%s must not be negative, got %s", at, t.Kind, name, d)
		}
		return nil
	}
	switch t.Kind {
	case ToxicLatency:
		if err := nonNegative("latency", t.Latency); err != nil {
			return err
		}
		if t.Jitter < 0 || t.Jitter > t.Latency {
			return Invalid("%s.latency.jitter must be in [0, latency] (%s), got %s", at, t.Latency, t.Jitter)
		}
		if t.Latency == 0 {
			return Invalid("%s.latency.latency must be positive", at)
		}
	case ToxicBandwidth:
		if t.Rate <= 0 {
			return Invalid("%s.bandwidth.rate must be a positive number of bytes per second, got %d", at, t.Rate)
		}
	case ToxicTimeout:
		return nonNegative("timeout", t.Timeout)
	case ToxicResetPeer:
		return nonNegative("timeout", t.Timeout)
	case ToxicSlowClose:
		if t.Delay <= 0 {
			return Invalid("%s.slow_close.delay must be positive, got %s", at, t.Delay)
		}
	case ToxicLimitData:
		if t.Bytes <= 0 {
			return Invalid("%s.limit_data.bytes must be positive, got %d", at, t.Bytes)
		}
	case ToxicSlicer:
		if t.AverageSize <= 0 {
			return Invalid("%s.slicer.average_size must be positive, got %d", at, t.AverageSize)
		}
		if t.SizeVariation < 0 || t.SizeVariation >= t.AverageSize {
			return Invalid("%s.slicer.size_variation must be in [0, average_size), got %d", at, t.SizeVariation)
		}
		return nonNegative("delay", t.Delay)
	default:
		return Invalid("%s: give one toxic: latency, bandwidth, timeout, reset_peer, slow_close, limit_data or slicer", at)
	}
	return nil
}

func tcpFromProto(p *pb.TcpFault) (*TCP, error) {
	f := &TCP{}
	var err error
	if f.Port, err = port(p.GetPort()); err != nil {
		return nil, err
	}
	convert := func(dir string, in []*pb.Toxic) ([]Toxic, error) {
		out := make([]Toxic, 0, len(in))
		for i, pt := range in {
			t, err := toxicFromProto(fmt.Sprintf("%s[%d]", dir, i), pt)
			if err != nil {
				return nil, err
			}
			out = append(out, t)
		}
		return out, nil
	}
	if f.Upstream, err = convert("upstream", p.GetUpstream()); err != nil {
		return nil, err
	}
	if f.Downstream, err = convert("downstream", p.GetDownstream()); err != nil {
		return nil, err
	}
	if f.TLS, err = tlsFromProto(p.GetTls()); err != nil {
		return nil, err
	}
	return f, f.Validate()
}

func toxicFromProto(at string, p *pb.Toxic) (Toxic, error) {
	t := Toxic{Toxicity: 1}
	if p.Toxicity != nil {
		t.Toxicity = p.GetToxicity()
	}
	var err error
	d := func(name string, v *durationpb.Duration) time.Duration {
		out, derr := duration(at+"."+name, v)
		if err == nil {
			err = derr
		}
		return out
	}
	switch k := p.GetKind().(type) {
	case *pb.Toxic_Latency:
		t.Kind, t.Latency, t.Jitter = ToxicLatency, d("latency", k.Latency.GetLatency()), d("jitter", k.Latency.GetJitter())
	case *pb.Toxic_Bandwidth:
		t.Kind, t.Rate = ToxicBandwidth, clampInt64(k.Bandwidth.GetRate())
	case *pb.Toxic_Timeout:
		t.Kind, t.Timeout = ToxicTimeout, d("timeout", k.Timeout.GetTimeout())
	case *pb.Toxic_ResetPeer:
		t.Kind, t.Timeout = ToxicResetPeer, d("timeout", k.ResetPeer.GetTimeout())
	case *pb.Toxic_SlowClose:
		t.Kind, t.Delay = ToxicSlowClose, d("delay", k.SlowClose.GetDelay())
	case *pb.Toxic_LimitData:
		t.Kind, t.Bytes = ToxicLimitData, clampInt64(k.LimitData.GetBytes())
	case *pb.Toxic_Slicer:
		t.Kind, t.Delay = ToxicSlicer, d("delay", k.Slicer.GetDelay())
		t.AverageSize, t.SizeVariation = int(min(k.Slicer.GetAverageSize(), 1<<30)), int(min(k.Slicer.GetSizeVariation(), 1<<30))
	}
	return t, err
}

func clampInt64(v uint64) int64 { return int64(min(v, 1<<62)) }
