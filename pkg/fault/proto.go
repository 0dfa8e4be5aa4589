package fault

import (
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// FromProto converts an InjectRequest's id, duration and fault (all but
// its target) and validates them: the one check of a fault in each
// process. Errors are Invalid, naming the field.
func FromProto(req *pb.InjectRequest) (Spec, error) {
	spec := Spec{ID: req.GetId()}
	var err error
	if spec.Duration, err = duration("duration", req.GetDuration()); err != nil {
		return Spec{}, err
	}
	switch f := req.GetFault().(type) {
	case *pb.InjectRequest_Http:
		spec.Fault, err = httpFromProto(f.Http)
	case *pb.InjectRequest_Grpc:
		spec.Fault, err = grpcFromProto(f.Grpc)
	case *pb.InjectRequest_Network:
		spec.Fault, err = networkFromProto(f.Network)
	case *pb.InjectRequest_Tcp:
		spec.Fault, err = tcpFromProto(f.Tcp)
	}
	if err != nil {
		return Spec{}, err
	}
	return spec, validateSpec(spec)
}

func duration(field string, d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, Invalid("%s: %v", field, err)
	}
	return d.AsDuration(), nil
}

func port(p uint32) (uint16, error) {
	if p > math.MaxUint16 {
		return 0, Invalid("port must be in 1-65535, got %d", p)
	}
	return uint16(p), nil
}

// delay converts the delay fields HTTP and gRPC faults share; an unset
// delayRate means 1.
func delay(avg, variation *durationpb.Duration, r *float64) (Delay, error) {
	d := Delay{Rate: 1}
	var err error
	if d.Average, err = duration("averageDelay", avg); err != nil {
		return d, err
	}
	if d.Variation, err = duration("delayVariation", variation); err != nil {
		return d, err
	}
	if r != nil {
		d.Rate = *r
	}
	return d, nil
}

// status narrows a status code, keeping out-of-range values out of range.
func status(v uint32) int {
	if v > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(v)
}

func httpFromProto(p *pb.HTTPFault) (*HTTP, error) {
	f := &HTTP{ErrorRate: p.GetErrorRate(), ErrorStatus: status(p.GetErrorCode()), KeepConnections: p.GetKeepConnections()}
	var err error
	if f.Port, err = port(p.GetPort()); err != nil {
		return nil, err
	}
	if f.Delay, err = delay(p.GetAverageDelay(), p.GetDelayVariation(), p.DelayRate); err != nil {
		return nil, err
	}
	switch p.GetDelayMode() {
	case pb.DelayMode_DELAY_MODE_UNSPECIFIED, pb.DelayMode_DELAY_MODE_REQUEST:
	case pb.DelayMode_DELAY_MODE_RESPONSE:
		f.DelayResponse = true
	default:
		return nil, Invalid("delayMode %d is not one of request, response", p.GetDelayMode())
	}
	if p.GetErrorBody() != "" {
		f.ErrorBody = []byte(p.GetErrorBody())
	}
	for _, k := range slices.Sorted(maps.Keys(p.GetErrorHeaders())) {
		f.ErrorHeaders = append(f.ErrorHeaders, HeaderField{canonical(k), p.GetErrorHeaders()[k]})
	}
	f.Exclude = splitList(p.GetExclude())
	f.FailFirst = failFirst(p.GetFailFirst())
	f.Rewrite = rewrite(p.GetRewrite())
	if m := p.GetMatch(); m != nil {
		f.Match = Match{Paths: m.GetPaths(), Methods: m.GetMethods(), Headers: headerMatches(m.GetHeaders())}
	}
	if f.Timeline, err = httpPhases(f, p.GetPhases()); err != nil {
		return nil, err
	}
	return f, f.Validate()
}

func grpcFromProto(p *pb.GrpcFault) (*GRPC, error) {
	f := &GRPC{ErrorRate: p.GetErrorRate(), Status: status(p.GetStatusCode()), Message: p.GetStatusMessage(),
		Exclude: splitList(p.GetExclude()), Methods: p.GetMethods(), Metadata: headerMatches(p.GetMetadata()),
		ResetConnections: p.GetResetConnections(), FailFirst: failFirst(p.GetFailFirst())}
	var err error
	if f.Port, err = port(p.GetPort()); err != nil {
		return nil, err
	}
	if f.Delay, err = delay(p.GetAverageDelay(), p.GetDelayVariation(), p.DelayRate); err != nil {
		return nil, err
	}
	if f.Timeline, err = grpcPhases(f, p.GetPhases()); err != nil {
		return nil, err
	}
	return f, f.Validate()
}

func networkFromProto(p *pb.NetworkFault) (*Network, error) {
	f := &Network{Protocol: Protocol(strings.ToLower(p.GetProtocol())), DropRate: 1, ResetRate: p.GetResetRate()}
	if f.Protocol == "all" {
		f.Protocol = ProtocolAll
	}
	if p.DropRate != nil {
		f.DropRate = p.GetDropRate()
	}
	var err error
	if f.Port, err = port(p.GetPort()); err != nil {
		return nil, err
	}
	return f, f.Validate()
}

func rewrite(p *pb.ResponseRewrite) *Rewrite {
	if p == nil {
		return nil
	}
	r := &Rewrite{Status: status(p.GetStatus()), ReplaceBody: p.Body != nil, Body: []byte(p.GetBody())}
	for _, k := range slices.Sorted(maps.Keys(p.GetSetHeaders())) {
		r.SetHeaders = append(r.SetHeaders, HeaderField{canonical(k), p.GetSetHeaders()[k]})
	}
	for _, n := range p.GetRemoveHeaders() {
		r.RemoveHeaders = append(r.RemoveHeaders, canonical(n))
	}
	return r
}

func failFirst(p *pb.FailFirst) *FailFirst {
	if p == nil {
		return nil
	}
	return &FailFirst{Attempts: int(min(p.GetAttempts(), MaxFailFirst+1)), KeyHeader: p.GetKeyHeader()}
}

func headerMatches(in []*pb.HeaderMatch) []HeaderMatch {
	var out []HeaderMatch
	for _, h := range in {
		out = append(out, HeaderMatch{Name: h.GetName(), Value: h.GetValue()})
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
