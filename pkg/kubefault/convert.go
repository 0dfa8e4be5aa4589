package kubefault

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/faultline-dev/faultline/pkg/fault"
	"github.com/faultline-dev/faultline/pkg/targets"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// kinds are the spec's fault fields and the messages they hold.
var kinds = []struct {
	field string
	msg   func() proto.Message
	set   func(*pb.InjectRequest, proto.Message)
	get   func(*Spec) map[string]any
}{
	{"http", func() proto.Message { return &pb.HTTPFault{} }, func(r *pb.InjectRequest, m proto.Message) { r.Fault = &pb.InjectRequest_Http{Http: m.(*pb.HTTPFault)} }, func(s *Spec) map[string]any { return s.HTTP }},
	{"grpc", func() proto.Message { return &pb.GrpcFault{} }, func(r *pb.InjectRequest, m proto.Message) { r.Fault = &pb.InjectRequest_Grpc{Grpc: m.(*pb.GrpcFault)} }, func(s *Spec) map[string]any { return s.GRPC }},
	{"tcp", func() proto.Message { return &pb.TcpFault{} }, func(r *pb.InjectRequest, m proto.Message) { r.Fault = &pb.InjectRequest_Tcp{Tcp: m.(*pb.TcpFault)} }, func(s *Spec) map[string]any { return s.TCP }},
	{"network", func() proto.Message { return &pb.NetworkFault{} }, func(r *pb.InjectRequest, m proto.Message) {
		r.Fault = &pb.InjectRequest_Network{Network: m.(*pb.NetworkFault)}
	}, func(s *Spec) map[string]any { return s.Network }},
}

// Request converts the spec into the node API's request, without a target
// and with the spec's whole duration, and validates it with the fault
// model: the errors are fault.Invalid ones naming the spec's field.
func (s *Spec) Request() (*pb.InjectRequest, fault.Spec, error) {
	req := &pb.InjectRequest{}
	d, err := time.ParseDuration(s.Duration)
	if err != nil {
		return nil, fault.Spec{}, fault.Invalid("spec.duration %q is not a duration such as 30s or 5m", s.Duration)
	}
	req.Duration = durationpb.New(d)
	given, field := 0, ""
	for _, k := range kinds {
		v := k.get(s)
		if v == nil {
			continue
		}
		given, field = given+1, k.field
		m := k.msg()
		if err := fromJSON(v, m, "spec."+k.field); err != nil {
			return nil, fault.Spec{}, err
		}
		k.set(req, m)
	}
	switch {
	case given == 0:
		return nil, fault.Spec{}, fault.Invalid("spec: give one fault: http, grpc, tcp or network")
	case given > 1:
		return nil, fault.Spec{}, fault.Invalid("spec: give one fault of http, grpc, tcp and network, not %d", given)
	case (s.Selector == nil) == (s.Service == ""):
		return nil, fault.Spec{}, fault.Invalid("spec: give selector or service (the target pods in the Fault's namespace), one of the two")
	case s.MaxTargets < 0:
		return nil, fault.Spec{}, fault.Invalid("spec.maxTargets must not be negative, got %d", s.MaxTargets)
	}
	if _, err := s.LeaseDuration(); err != nil {
		return nil, fault.Spec{}, err
	}
	if s.Count != "" {
		if _, err := targets.SampleSize(s.Count, math.MaxInt32); err != nil {
			return nil, fault.Spec{}, fault.Within("spec.count", err)
		}
	}
	spec, err := fault.FromProto(req)
	if err != nil {
		return nil, fault.Spec{}, fault.Within("spec."+field, err)
	}
	return req, spec, nil
}

// Kind is the spec's fault field: http, grpc, tcp or network ("" for
// none).
func (s *Spec) Kind() string {
	for _, k := range kinds {
		if k.get(s) != nil {
			return k.field
		}
	}
	return ""
}

// Fault is the spec's fault field's value (nil for none).
func (s *Spec) Fault() map[string]any {
	for _, k := range kinds {
		if v := k.get(s); v != nil {
			return v
		}
	}
	return nil
}

// Lease bounds: a lease shorter than a second would lapse between
// renewals on a busy API server.
const (
	MinLease = time.Second
	MaxLease = time.Hour
)

// LeaseDuration is spec.lease, 0 when the Fault has none.
func (s *Spec) LeaseDuration() (time.Duration, error) {
	if s.Lease == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s.Lease)
	switch {
	case err != nil:
		return 0, fault.Invalid("spec.lease %q is not a duration such as 10s", s.Lease)
	case d < MinLease || d > MaxLease:
		return 0, fault.Invalid("spec.lease must be from 1s to 1h, got %s", d)
	}
	return d, nil
}

// fromJSON fills m from a spec field: the message's JSON, with Go duration
// strings where the message has a google.protobuf.Duration.
func fromJSON(v map[string]any, m proto.Message, at string) error {
	conv, err := goDurations(m.ProtoReflect().Descriptor(), v, at)
	if err != nil {
		return err
	}
	b, err := json.Marshal(conv)
	if err != nil {
		return fault.Invalid("%s: %v", at, err)
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		return fault.Invalid("%s: %v", at, err)
	}
	return nil
}

const durationName = "google.protobuf.Duration"

// goDurations copies a JSON object of message md, turning Go durations
// into protobuf JSON's seconds.
func goDurations(md protoreflect.MessageDescriptor, v map[string]any, at string) (map[string]any, error) {
	out := make(map[string]any, len(v))
	for k, x := range v {
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(k))
		}
		if fd == nil {
			return nil, fault.Invalid("%s: unknown field %q", at, k)
		}
		path := at + "." + k
		var err error
		switch {
		case fd.IsList() && fd.Message() != nil:
			list, ok := x.([]any)
			if !ok {
				return nil, fault.Invalid("%s must be a list", path)
			}
			conv := make([]any, len(list))
			for i, e := range list {
				if conv[i], err = messageValue(fd.Message(), e, fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return nil, err
				}
			}
			out[k] = conv
		case fd.IsMap() || fd.Message() == nil:
			out[k] = x
		default:
			if out[k], err = messageValue(fd.Message(), x, path); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func messageValue(md protoreflect.MessageDescriptor, x any, at string) (any, error) {
	if md.FullName() == durationName {
		s, ok := x.(string)
		if !ok {
			return nil, fault.Invalid("%s must be a duration such as 300ms, got %v", at, x)
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fault.Invalid("%s %q is not a duration such as 300ms", at, s)
		}
		return durationJSON(d), nil
	}
	obj, ok := x.(map[string]any)
	if !ok {
		return nil, fault.Invalid("%s must be an object", at)
	}
	return goDurations(md, obj, at)
}

func durationJSON(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

// SetFault sets the spec's fault field from a node API request's fault:
// the inverse of Request, durations as Go durations.
func (s *Spec) SetFault(req *pb.InjectRequest) error {
	m := req.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("fault"))
	if fd == nil {
		return fault.Invalid("give one fault: http, grpc, tcp or network")
	}
	msg := m.Get(fd).Message()
	b, err := protojson.Marshal(msg.Interface())
	if err != nil {
		return err
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	v = specJSON(msg.Descriptor(), v)
	s.HTTP, s.GRPC, s.TCP, s.Network = nil, nil, nil, nil
	switch string(fd.Name()) {
	case "http":
		s.HTTP = v
	case "grpc":
		s.GRPC = v
	case "tcp":
		s.TCP = v
	case "network":
		s.Network = v
	default:
		return fault.Invalid("a %s fault cannot be a Fault object", fd.Name())
	}
	return nil
}

// specJSON turns a message's protobuf JSON into the spec's: Go durations,
// and 64-bit integers as numbers (protobuf JSON writes them as strings).
func specJSON(md protoreflect.MessageDescriptor, v map[string]any) map[string]any {
	for k, x := range v {
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			continue
		}
		conv := func(x any) any {
			switch {
			case fd.Message() != nil && fd.Message().FullName() == durationName:
				if s, ok := x.(string); ok {
					if d, err := time.ParseDuration(s); err == nil {
						return d.String()
					}
				}
			case fd.Message() != nil && !fd.IsMap():
				if obj, ok := x.(map[string]any); ok {
					return specJSON(fd.Message(), obj)
				}
			case fd.Kind() == protoreflect.Int64Kind || fd.Kind() == protoreflect.Uint64Kind || fd.Kind() == protoreflect.Sint64Kind ||
				fd.Kind() == protoreflect.Fixed64Kind || fd.Kind() == protoreflect.Sfixed64Kind:
				if s, ok := x.(string); ok {
					if n, err := strconv.ParseInt(s, 10, 64); err == nil {
						return n
					}
				}
			}
			return x
		}
		if list, ok := x.([]any); ok && fd.IsList() {
			for i := range list {
				list[i] = conv(list[i])
			}
			continue
		}
		v[k] = conv(x)
	}
	return v
}
