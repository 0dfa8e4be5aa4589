// Package gateway serves faultline.v1.Gateway: it resolves target sets
// through a targets.Source, and runs each fault on every target through the
// target node's faultlined, reached by a Transport.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/faultline-dev/faultline/pkg/auth"
	"github.com/faultline-dev/faultline/pkg/fault"
	"github.com/faultline-dev/faultline/pkg/targets"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// DefaultHTTPPort is the port of an HTTP fault that names none and whose
// target declares none (xk6-disruptor's PodDisruptor default).
const DefaultHTTPPort = 80

// Server implements faultline.v1.Gateway.
type Server struct {
	pb.UnimplementedGatewayServer
	Source    targets.Source
	Transport Transport
	Logger    *slog.Logger
	// MaxStarting bounds how many targets' faults are being started at
	// once; 0 means 32.
	MaxStarting int
	// Metrics, if set, is told about every target's fault (package
	// metrics implements it).
	Metrics Metrics
	// Objects, in Kubernetes mode, are the cluster's Fault objects: every
	// fault is one, and Transport is not used.
	Objects FaultObjects
	// Lease is the lease of the gateway's Faults (0: DefaultLease).
	Lease time.Duration
	// FaultTargetLimit is the spec.maxTargets of the gateway's Faults (0:
	// each node's --fault-target-limit).
	FaultTargetLimit int
}

// Metrics watches the gateway's faults.
type Metrics interface {
	// Injecting is called once per inject call with its number of targets.
	Injecting(targets int)
	// Active is called when a target's fault is active, after took.
	Active(took time.Duration)
	// Ended is called when a target's fault that was active has ended.
	Ended()
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// SetFromProto converts a target set.
func SetFromProto(ts *pb.TargetSet) (targets.Set, error) {
	switch k := ts.GetKind().(type) {
	case *pb.TargetSet_Pods:
		sel := &targets.Selector{Namespace: k.Pods.GetNamespace(), Select: k.Pods.GetSelect().GetLabels(), Exclude: k.Pods.GetExclude().GetLabels()}
		if sel.Namespace == "" && len(sel.Select) == 0 && len(sel.Exclude) == 0 {
			return targets.Set{}, fault.Invalid("namespace, select and exclude attributes in pod selector cannot all be empty")
		}
		return targets.Set{Pods: sel}, nil
	case *pb.TargetSet_Service:
		switch {
		case k.Service.GetName() == "":
			return targets.Set{}, fault.Invalid("must specify a service name")
		case k.Service.GetNamespace() == "":
			return targets.Set{}, fault.Invalid("must specify a namespace")
		}
		return targets.Set{Service: &targets.Service{Name: k.Service.GetName(), Namespace: k.Service.GetNamespace()}}, nil
	}
	return targets.Set{}, fault.Invalid("targets: give a pod selector or a service")
}

// resolve resolves a set and fails with NotFound naming it, and the
// sources asked, when it is empty.
func (s *Server) resolve(ctx context.Context, ts *pb.TargetSet) (targets.Resolution, error) {
	set, err := SetFromProto(ts)
	if err != nil {
		return targets.Resolution{}, err
	}
	res, err := s.Source.Resolve(ctx, set)
	if err != nil {
		if status.Code(errgrpc.ToGRPC(err)) == codes.Unknown {
			err = fmt.Errorf("%w: %v", errdefs.ErrUnavailable, err) // a source that cannot answer
		}
		return res, fmt.Errorf("resolve %s: %w", set, err)
	}
	if len(res.Targets) == 0 {
		why := "no pods found matching selector"
		if set.Service != nil {
			why = "service does not have any backing pods"
		}
		if len(res.Skipped) > 0 {
			why += fmt.Sprintf(" (%d matching but skipped: %s)", len(res.Skipped), skippedString(res.Skipped))
		}
		if len(res.Sources) > 0 {
			why += "; looked in " + strings.Join(res.Sources, ", ")
		}
		return res, fmt.Errorf("%w: finding pods matching %s: %s", errdefs.ErrNotFound, set, why)
	}
	return res, nil
}

func skippedString(sk []targets.Skipped) string {
	var parts []string
	for _, s := range sk {
		parts = append(parts, s.Name+" "+s.Reason)
	}
	return strings.Join(parts, ", ")
}

// Targets lists the targets of a set.
func (s *Server) Targets(ctx context.Context, req *pb.TargetsRequest) (*pb.TargetsResponse, error) {
	res, err := s.resolve(ctx, req.GetTargets())
	if err != nil {
		return nil, err
	}
	resp := &pb.TargetsResponse{Skipped: skippedToProto(res.Skipped), Notes: res.Notes}
	for _, t := range res.Targets {
		resp.Targets = append(resp.Targets, targetToProto(t))
	}
	return resp, nil
}

func targetToProto(t targets.Target) *pb.TargetInfo {
	ti := &pb.TargetInfo{Name: t.Name, Namespace: t.Namespace, Node: t.Node, Labels: t.Labels, Ip: t.IP}
	switch {
	case t.UID != "":
		ti.Target = &pb.Target{Kind: &pb.Target_Pod{Pod: &pb.PodRef{Namespace: t.Namespace, Name: t.Name, Uid: t.UID}}}
	case t.PID > 0:
		ti.Target = &pb.Target{Kind: &pb.Target_Pid{Pid: int32(t.PID)}}
	default:
		ti.Target = &pb.Target{Kind: &pb.Target_NetnsPath{NetnsPath: t.NetnsPath}}
	}
	return ti
}

func skippedToProto(sk []targets.Skipped) []*pb.SkippedTarget {
	var out []*pb.SkippedTarget
	for _, s := range sk {
		out = append(out, &pb.SkippedTarget{Name: s.Name, Reason: s.Reason})
	}
	return out
}

// InjectHTTP runs an HTTP fault on every target.
func (s *Server) InjectHTTP(ctx context.Context, req *pb.InjectHTTPRequest) (*pb.GatewayInjectResponse, error) {
	return s.inject(ctx, req.GetTargets(), req.GetDuration(), true, func(t targets.Target) (*pb.InjectRequest, error) {
		f := proto.Clone(req.GetFault()).(*pb.HTTPFault)
		if f == nil {
			f = &pb.HTTPFault{}
		}
		port, err := t.ResolvePort(int(f.Port), req.GetPortName(), DefaultHTTPPort)
		f.Port = uint32(port)
		return &pb.InjectRequest{Fault: &pb.InjectRequest_Http{Http: f}}, err
	})
}

// InjectGrpc runs a gRPC fault on every target.
func (s *Server) InjectGrpc(ctx context.Context, req *pb.InjectGrpcRequest) (*pb.GatewayInjectResponse, error) {
	return s.inject(ctx, req.GetTargets(), req.GetDuration(), true, func(t targets.Target) (*pb.InjectRequest, error) {
		f := proto.Clone(req.GetFault()).(*pb.GrpcFault)
		if f == nil {
			f = &pb.GrpcFault{}
		}
		port, err := t.ResolvePort(int(f.Port), req.GetPortName(), 0)
		f.Port = uint32(port)
		return &pb.InjectRequest{Fault: &pb.InjectRequest_Grpc{Grpc: f}}, err
	})
}

// InjectTcp runs a TCP fault on every target.
func (s *Server) InjectTcp(ctx context.Context, req *pb.InjectTcpRequest) (*pb.GatewayInjectResponse, error) {
	return s.inject(ctx, req.GetTargets(), req.GetDuration(), false, func(t targets.Target) (*pb.InjectRequest, error) {
		f := proto.Clone(req.GetFault()).(*pb.TcpFault)
		if f == nil {
			f = &pb.TcpFault{}
		}
		port, err := t.ResolvePort(int(f.Port), req.GetPortName(), 0)
		f.Port = uint32(port)
		return &pb.InjectRequest{Fault: &pb.InjectRequest_Tcp{Tcp: f}}, err
	})
}

// InjectNetwork runs a network fault on every target.
func (s *Server) InjectNetwork(ctx context.Context, req *pb.InjectNetworkRequest) (*pb.GatewayInjectResponse, error) {
	return s.inject(ctx, req.GetTargets(), req.GetDuration(), false, func(targets.Target) (*pb.InjectRequest, error) {
		f := proto.Clone(req.GetFault()).(*pb.NetworkFault)
		if f == nil {
			f = &pb.NetworkFault{}
		}
		return &pb.InjectRequest{Fault: &pb.InjectRequest_Network{Network: f}}, nil
	})
}

// inject resolves the targets, checks the fault once, then starts it on
// every target in parallel, at most MaxStarting starting at a time, and
// waits for every target's end. The first target that fails cancels the
// others' calls, which ends their faults (or their setups), then revokes
// every target's fault, so that when the call returns each has ended or
// can no longer start.
func (s *Server) inject(ctx context.Context, ts *pb.TargetSet, d *durationpb.Duration, requests bool, build func(targets.Target) (*pb.InjectRequest, error)) (*pb.GatewayInjectResponse, error) {
	res, err := s.resolve(ctx, ts)
	if err != nil {
		return nil, err
	}
	found := res.Targets
	if s.Metrics != nil {
		s.Metrics.Injecting(len(found))
	}
	reqs := make([]*pb.InjectRequest, len(found))
	infos := make([]*pb.TargetInfo, len(found))
	batch := fault.NewID("gw")
	for i, t := range found {
		infos[i] = targetToProto(t)
		r, err := build(t)
		if err != nil {
			return nil, err // bad input changes nothing: no node was asked yet
		}
		r.Duration = d
		r.Id = fmt.Sprintf("%s-%d", batch, i)
		r.Target = infos[i].Target
		reqs[i] = r
	}
	// Bad input changes nothing: check the fault before any node is asked.
	if _, err := fault.FromProto(reqs[0]); err != nil {
		return nil, err
	}
	if s.Objects != nil {
		set, _ := SetFromProto(ts) // resolve checked it
		return s.injectObjects(ctx, set, res, infos, reqs, requests)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	maxStarting := s.MaxStarting
	if maxStarting <= 0 {
		maxStarting = 32
	}
	starting := make(chan struct{}, maxStarting)
	results := make([]*pb.FaultStatus, len(found))
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	for i, t := range found {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := s.runTarget(ctx, t, reqs[i], starting)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil && ctx.Err() == nil { // after a cancel, errors are its echoes
					firstErr = targetError(t, err)
				}
				cancel()
				return
			}
			results[i] = st
		}()
	}
	wg.Wait()
	if firstErr != nil || ctx.Err() != nil {
		s.revokeAll(found, reqs)
		if firstErr != nil {
			return nil, firstErr
		}
		return nil, context.Cause(ctx)
	}
	resp := &pb.GatewayInjectResponse{Total: &pb.Counters{}, Skipped: skippedToProto(res.Skipped), Notes: res.Notes}
	for i := range found {
		resp.Targets = append(resp.Targets, &pb.TargetResult{Target: infos[i], Fault: results[i]})
		addCounters(resp.Total, results[i].GetCounters())
	}
	resp.NoRequests = requests && resp.Total.GetRequests() == 0
	s.log().Info("fault ended", "targets", len(found), "requests", resp.Total.GetRequests(), "no_requests", resp.NoRequests)
	return resp, nil
}

// runTarget runs one target's fault through its node: it holds a slot of
// starting until the node says the fault is active, and returns the final
// status once the node says it has ended.
func (s *Server) runTarget(ctx context.Context, t targets.Target, req *pb.InjectRequest, starting chan struct{}) (*pb.FaultStatus, error) {
	select {
	case starting <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	node, release, err := s.Transport.Node(ctx, t.Node)
	if err != nil {
		<-starting
		return nil, err
	}
	defer release()
	asked := time.Now()
	stream, err := node.Inject(ctx, req)
	if err == nil {
		_, err = stream.Recv() // active
	}
	<-starting
	if err != nil {
		return nil, err
	}
	if s.Metrics != nil {
		s.Metrics.Active(time.Since(asked))
		defer s.Metrics.Ended()
	}
	last, err := stream.Recv() // ended
	if err != nil {
		return nil, err
	}
	return last.GetFault(), nil
}

// targetError names the target in an error, keeping its gRPC code.
func targetError(t targets.Target, err error) error {
	msg := err.Error()
	code := codes.Unknown
	if st, ok := status.FromError(err); ok {
		msg, code = st.Message(), st.Code()
	} else if st, ok := status.FromError(errgrpc.ToGRPC(err)); ok {
		code = st.Code()
	}
	return status.Errorf(code, "target %s on node %s: %s", t.Ref(), t.Node, msg)
}

// revokeAll revokes the batch's fault on every target after their calls
// were cancelled: a revoke on the node comes after the cancel of its call,
// so once it returns the fault has ended, or finds its call cancelled and
// does not start.
func (s *Server) revokeAll(found []targets.Target, reqs []*pb.InjectRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i, t := range found {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node, release, err := s.Transport.Node(ctx, t.Node)
			if err != nil {
				s.log().Warn("cannot revoke", "target", t.Ref(), "err", err)
				return
			}
			defer release()
			_, err = node.Revoke(ctx, &pb.RevokeRequest{Id: reqs[i].GetId()})
			if err != nil && status.Code(err) != codes.NotFound {
				s.log().Warn("cannot revoke", "target", t.Ref(), "err", err)
			}
		}()
	}
	wg.Wait()
}

func addCounters(total, c *pb.Counters) {
	total.Requests += c.GetRequests()
	total.Unmatched += c.GetUnmatched()
	total.Delayed += c.GetDelayed()
	total.Errored += c.GetErrored()
	total.UpstreamErrors += c.GetUpstreamErrors()
	total.ConnectionsReset += c.GetConnectionsReset()
	total.PacketsSeen += c.GetPacketsSeen()
	total.PacketsDropped += c.GetPacketsDropped()
	total.ConnectionsRefused += c.GetConnectionsRefused()
	total.TargetsDeleted += c.GetTargetsDeleted()
	total.TcpConnections += c.GetTcpConnections()
	total.TcpConnectionsToxic += c.GetTcpConnectionsToxic()
	total.TcpConnectionsCut += c.GetTcpConnectionsCut()
	total.BytesUpstream += c.GetBytesUpstream()
	total.BytesDownstream += c.GetBytesDownstream()
	total.BytesDelayed += c.GetBytesDelayed()
	total.BytesDropped += c.GetBytesDropped()
	total.TlsHandshakes += c.GetTlsHandshakes()
	total.TlsHandshakesFaulted += c.GetTlsHandshakesFaulted()
}

// TerminatePods stops count targets chosen at random.
func (s *Server) TerminatePods(ctx context.Context, req *pb.TerminatePodsRequest) (*pb.TerminatePodsResponse, error) {
	if req.GetCount() == "" {
		return nil, fault.Invalid("count is not a valid percentage: ")
	}
	res, err := s.resolve(ctx, req.GetTargets())
	if err != nil {
		return nil, err
	}
	found := res.Targets
	n, err := targets.SampleSize(req.GetCount(), len(found))
	if err != nil {
		return nil, err
	}
	timeout := 10 * time.Second
	if req.GetTimeout() != nil {
		timeout = req.GetTimeout().AsDuration()
		if timeout <= 0 {
			return nil, fault.Invalid("timeout must be positive, got %s", timeout)
		}
	}
	chosen := make([]targets.Target, 0, n)
	for _, i := range mrand.Perm(len(found))[:n] {
		chosen = append(chosen, found[i])
	}
	targets.SortTargets(chosen)
	errs := make([]error, len(chosen))
	var wg sync.WaitGroup
	for i, t := range chosen {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Source.Terminate(ctx, t, timeout); err != nil {
				errs[i] = targetError(t, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	resp := &pb.TerminatePodsResponse{}
	for _, t := range chosen {
		resp.Terminated = append(resp.Terminated, t.Name)
	}
	return resp, nil
}

// NewGRPCServer returns a gRPC server with the Gateway service, server
// reflection (so clients need no .proto file), health, error mapping, and
// check's token on every call but health's. check is required.
func NewGRPCServer(s *Server, check *auth.Checker, opts ...grpc.ServerOption) *grpc.Server {
	if check == nil {
		panic("gateway: NewGRPCServer needs an auth.Checker")
	}
	logger := s.log()
	opts = append(append(opts, check.ServerOptions()...), grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		if err != nil {
			logger.Debug("request failed", "method", info.FullMethod, "err", err)
		}
		return resp, errgrpc.ToGRPC(err)
	}))
	g := grpc.NewServer(opts...)
	pb.RegisterGatewayServer(g, s)
	registerExtras(g)
	return g
}
