package nodeapi

import (
	"fmt"
	"math"
	"net/http"
	"net/textproto"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/proxy/httpfault"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errdefs.ErrInvalidArgument}, args...)...)
}

func duration(field string, d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, invalid("%s: %v", field, err)
	}
	return d.AsDuration(), nil
}

// SpecFromProto turns an InjectRequest into an engine spec, rejecting what
// the engine's types cannot hold; the engine validates the rest.
func SpecFromProto(req *pb.InjectRequest) (engine.Spec, error) {
	spec := engine.Spec{ID: req.GetId()}
	var err error
	if spec.Duration, err = duration("duration", req.GetDuration()); err != nil {
		return spec, err
	}
	switch t := req.GetTarget().GetKind().(type) {
	case *pb.Target_NetnsPath:
		spec.Target.NetnsPath = t.NetnsPath
	case *pb.Target_Pid:
		if t.Pid <= 0 {
			return spec, invalid("target: pid must be positive, got %d", t.Pid)
		}
		spec.Target.PID = int(t.Pid)
	case *pb.Target_Pod:
		if t.Pod.GetNamespace() == "" || t.Pod.GetName() == "" {
			return spec, invalid("target: a pod needs a namespace and a name")
		}
		spec.Target.Pod = engine.PodRef{Namespace: t.Pod.GetNamespace(), Name: t.Pod.GetName(), UID: t.Pod.GetUid()}
	}
	switch f := req.GetFault().(type) {
	case *pb.InjectRequest_Http:
		spec.HTTP, err = httpFromProto(f.Http)
	case *pb.InjectRequest_Grpc:
		spec.GRPC, err = grpcFromProto(f.Grpc)
	case *pb.InjectRequest_Network:
		spec.Network, err = networkFromProto(f.Network)
	}
	return spec, err
}

func port(p uint32, allowZero bool) (uint16, error) {
	if (p == 0 && !allowZero) || p > math.MaxUint16 {
		return 0, invalid("port must be in 1-65535, got %d", p)
	}
	return uint16(p), nil
}

// delays converts the delay fields HTTP and gRPC faults share; an unset
// delayRate means 1.
func delays(avgPB, varPB *durationpb.Duration, ratePB *float64) (avg, variation time.Duration, rate float64, err error) {
	if avg, err = duration("averageDelay", avgPB); err != nil {
		return
	}
	if variation, err = duration("delayVariation", varPB); err != nil {
		return
	}
	rate = 1
	if ratePB != nil {
		rate = *ratePB
	}
	return
}

func grpcFromProto(p *pb.GrpcFault) (*engine.GRPCFault, error) {
	pt, err := port(p.GetPort(), false)
	if err != nil {
		return nil, err
	}
	g := &engine.GRPCFault{Port: pt, ResetConnections: p.GetResetConnections()}
	f := &g.Fault
	if f.AverageDelay, f.DelayVariation, f.DelayRate, err = delays(p.GetAverageDelay(), p.GetDelayVariation(), p.DelayRate); err != nil {
		return nil, err
	}
	f.ErrorRate = p.GetErrorRate()
	if p.GetStatusCode() > math.MaxInt16 {
		return nil, invalid("statusCode must be a gRPC status code in 1-16 when errorRate > 0, got %d", p.GetStatusCode())
	}
	f.StatusCode = int(p.GetStatusCode())
	f.StatusMessage = p.GetStatusMessage()
	f.Exclude = splitList(p.GetExclude())
	f.Methods = p.GetMethods()
	for _, hm := range p.GetMetadata() {
		f.Metadata = append(f.Metadata, httpfault.HeaderMatch{Name: hm.GetName(), Value: hm.GetValue()})
	}
	return g, nil
}

func networkFromProto(p *pb.NetworkFault) (*engine.NetworkFault, error) {
	pt, err := port(p.GetPort(), true)
	if err != nil {
		return nil, err
	}
	n := &engine.NetworkFault{Port: pt, Protocol: strings.ToLower(p.GetProtocol()), DropRate: 1, ResetRate: p.GetResetRate()}
	if n.Protocol == "all" {
		n.Protocol = ""
	}
	if p.DropRate != nil {
		n.DropRate = p.GetDropRate()
	}
	return n, nil
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

func httpFromProto(p *pb.HTTPFault) (*engine.HTTPFault, error) {
	pt, err := port(p.GetPort(), false)
	if err != nil {
		return nil, err
	}
	h := &engine.HTTPFault{Port: pt, KeepConnections: p.GetKeepConnections()}
	f := &h.Fault
	if f.AverageDelay, f.DelayVariation, f.DelayRate, err = delays(p.GetAverageDelay(), p.GetDelayVariation(), p.DelayRate); err != nil {
		return nil, err
	}
	switch p.GetDelayMode() {
	case pb.DelayMode_DELAY_MODE_UNSPECIFIED, pb.DelayMode_DELAY_MODE_REQUEST:
		f.DelayMode = httpfault.DelayRequest
	case pb.DelayMode_DELAY_MODE_RESPONSE:
		f.DelayMode = httpfault.DelayResponse
	default:
		return nil, invalid("delayMode %d is not one of request, response", p.GetDelayMode())
	}
	f.ErrorRate = p.GetErrorRate()
	if p.GetErrorCode() > math.MaxInt16 {
		return nil, invalid("errorCode must be an HTTP status in 100-599 when errorRate > 0, got %d", p.GetErrorCode())
	}
	f.ErrorCode = int(p.GetErrorCode())
	if p.GetErrorBody() != "" {
		f.ErrorBody = []byte(p.GetErrorBody())
	}
	if len(p.GetErrorHeaders()) > 0 {
		f.ErrorHeaders = http.Header{}
		for k, v := range p.GetErrorHeaders() {
			f.ErrorHeaders[textproto.CanonicalMIMEHeaderKey(k)] = []string{v}
		}
	}
	f.Exclude = splitList(p.GetExclude())
	if m := p.GetMatch(); m != nil {
		f.Match.Paths = m.GetPaths()
		f.Match.Methods = m.GetMethods()
		for _, hm := range m.GetHeaders() {
			f.Match.Headers = append(f.Match.Headers, httpfault.HeaderMatch{Name: hm.GetName(), Value: hm.GetValue()})
		}
	}
	return h, nil
}

// StatusToProto converts an engine status.
func StatusToProto(st engine.Status) *pb.FaultStatus {
	out := &pb.FaultStatus{
		Id:      st.ID,
		Kind:    st.Kind,
		Target:  TargetToProto(st.Target),
		Port:    uint32(st.Port),
		Started: timestamppb.New(st.Started),
		Expires: timestamppb.New(st.Expires),
		Counters: &pb.Counters{
			Requests:           st.Counters.Requests,
			Unmatched:          st.Counters.Unmatched,
			Delayed:            st.Counters.Delayed,
			Errored:            st.Counters.Errored,
			UpstreamErrors:     st.Counters.UpstreamErrors,
			ConnectionsReset:   st.Counters.ConnectionsReset,
			PacketsSeen:        st.Counters.PacketsSeen,
			PacketsDropped:     st.Counters.PacketsDropped,
			ConnectionsRefused: st.Counters.ConnectionsRefused,
		},
		EndReason: string(st.EndReason),
		Protocol:  st.Protocol,
		Ready:     st.Ready,
	}
	if st.EndReason == engine.ReasonTargetDeleted {
		out.Counters.TargetsDeleted = 1
	}
	return out
}

// TargetToProto converts an engine target.
func TargetToProto(t engine.Target) *pb.Target {
	if t.Pod.Name != "" {
		return &pb.Target{Kind: &pb.Target_Pod{Pod: &pb.PodRef{Namespace: t.Pod.Namespace, Name: t.Pod.Name, Uid: t.Pod.UID}}}
	}
	if t.PID > 0 {
		return &pb.Target{Kind: &pb.Target_Pid{Pid: int32(t.PID)}}
	}
	return &pb.Target{Kind: &pb.Target_NetnsPath{NetnsPath: t.NetnsPath}}
}
