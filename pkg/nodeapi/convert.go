package nodeapi

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/fault"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// targetFromProto converts a request's target; the engine and the
// TargetResolver judge what it names.
func targetFromProto(t *pb.Target) (engine.Target, error) {
	switch k := t.GetKind().(type) {
	case *pb.Target_NetnsPath:
		if k.NetnsPath == "" {
			return engine.Target{}, fault.Invalid("target: the netns path is empty")
		}
		return engine.Target{NetnsPath: k.NetnsPath}, nil
	case *pb.Target_Pid:
		if k.Pid <= 0 {
			return engine.Target{}, fault.Invalid("target: pid must be positive, got %d", k.Pid)
		}
		return engine.Target{PID: int(k.Pid)}, nil
	case *pb.Target_Pod:
		if k.Pod.GetNamespace() == "" || k.Pod.GetName() == "" {
			return engine.Target{}, fault.Invalid("target: a pod needs a namespace and a name")
		}
		return engine.Target{Pod: engine.PodRef{Namespace: k.Pod.GetNamespace(), Name: k.Pod.GetName(), UID: k.Pod.GetUid()}}, nil
	}
	return engine.Target{}, fault.Invalid("target: give a netns path, a pid or a pod")
}

var states = map[engine.State]pb.FaultState{
	engine.StateStarting: pb.FaultState_FAULT_STATE_STARTING,
	engine.StateActive:   pb.FaultState_FAULT_STATE_ACTIVE,
	engine.StateDraining: pb.FaultState_FAULT_STATE_DRAINING,
	engine.StateEnded:    pb.FaultState_FAULT_STATE_ENDED,
}

// StatusToProto converts an engine status.
func StatusToProto(st engine.Status) *pb.FaultStatus {
	c := st.Counters
	out := &pb.FaultStatus{
		Id:      st.ID,
		Kind:    string(st.Kind),
		Target:  TargetToProto(st.Target),
		Port:    uint32(st.Claim.Port),
		Started: timestamppb.New(st.Started),
		Expires: timestamppb.New(st.Expires),
		Counters: &pb.Counters{
			Requests: c.Requests, Unmatched: c.Unmatched, Delayed: c.Delayed, Errored: c.Errored,
			UpstreamErrors: c.UpstreamErrors, ConnectionsReset: c.ConnectionsReset, PacketsSeen: c.PacketsSeen,
			PacketsDropped: c.PacketsDropped, ConnectionsRefused: c.ConnectionsRefused,
			TcpConnections: c.TCP.Connections, TcpConnectionsToxic: c.TCP.Toxic, TcpConnectionsCut: c.TCP.Cut,
			BytesUpstream: c.TCP.BytesUp, BytesDownstream: c.TCP.BytesDown,
			BytesDelayed: c.TCP.BytesDelayed, BytesDropped: c.TCP.BytesDropped, TlsHandshakes: c.TCP.TLSHandshakes, TlsHandshakesFaulted: c.TCP.TLSFaulted,
		},
		EndReason: string(st.EndReason),
		Protocol:  string(st.Claim.Protocol),
		State:     states[st.State],
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
