// Package nodeapi serves faultlined's gRPC API (faultline.v1.Node) over an
// engine. Domain errors carry errdefs classes; they become gRPC codes here,
// once, in interceptors.
package nodeapi

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/fault"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// Faults is what the API needs of the engine: Engine(e) for a real one, or
// a test double.
type Faults interface {
	// Start starts a fault and returns once it is active; ctx bounds the
	// setup.
	Start(ctx context.Context, t engine.Target, spec fault.Spec) (Fault, error)
	List() []engine.Status
	Revoke(id string) (engine.Status, error)
}

// Fault is a started fault.
type Fault interface {
	Status() engine.Status
	Done() <-chan struct{}
	Stop(engine.Reason) engine.Status
}

// Engine adapts an engine.Engine to Faults.
func Engine(e *engine.Engine) Faults { return realEngine{e} }

type realEngine struct{ *engine.Engine }

func (r realEngine) Start(ctx context.Context, t engine.Target, spec fault.Spec) (Fault, error) {
	f, err := r.Engine.Start(ctx, t, spec)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// Server implements faultline.v1.Node.
type Server struct {
	pb.UnimplementedNodeServer
	Faults Faults
	Logger *slog.Logger
	// Targets resolves and vets targets before a fault starts; nil accepts
	// netns paths and PIDs as given and refuses pods (local mode).
	Targets TargetResolver

	health *health.Server
}

// SetServing sets what the standard health service answers; a new server
// answers SERVING.
func (s *Server) SetServing(serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
}

// TargetResolver turns a requested target into one the engine can open,
// refusing targets this node must not fault.
type TargetResolver interface {
	ResolveTarget(ctx context.Context, t engine.Target) (engine.Target, error)
}

// LocalTargets is local mode's TargetResolver: paths and PIDs as given.
type LocalTargets struct{}

// ResolveTarget refuses pods: there is no Kubernetes here.
func (LocalTargets) ResolveTarget(_ context.Context, t engine.Target) (engine.Target, error) {
	if t.Pod.Name != "" {
		return t, fmt.Errorf("%w: target %s: this faultlined does not run in Kubernetes mode (--kubernetes); give a netns path or a pid", errdefs.ErrFailedPrecondition, t)
	}
	return t, nil
}

func (s *Server) targets() TargetResolver {
	if s.Targets == nil {
		return LocalTargets{}
	}
	return s.Targets
}

// Inject starts the fault, says when it is active, and, when it has
// ended, with what. The call's end (the caller cancelling or going away)
// ends the fault, or its setup.
func (s *Server) Inject(req *pb.InjectRequest, stream pb.Node_InjectServer) error {
	ctx := stream.Context()
	spec, err := fault.FromProto(req)
	if err != nil {
		return err // bad input first: it does not depend on the target
	}
	target, err := targetFromProto(req.GetTarget())
	if err != nil {
		return err
	}
	if target, err = s.targets().ResolveTarget(ctx, target); err != nil {
		return err
	}
	f, err := s.Faults.Start(ctx, target, spec)
	if err != nil {
		return err
	}
	if err := stream.Send(&pb.InjectResponse{Fault: StatusToProto(f.Status())}); err != nil {
		f.Stop(engine.ReasonCancelled)
		return err
	}
	st := engine.Status{}
	select {
	case <-f.Done():
		st = f.Status()
	case <-ctx.Done():
		st = f.Stop(engine.ReasonCancelled)
	}
	return stream.Send(&pb.InjectResponse{Fault: StatusToProto(st)})
}

// List returns the faults that have not ended.
func (s *Server) List(context.Context, *pb.ListRequest) (*pb.ListResponse, error) {
	resp := &pb.ListResponse{}
	for _, st := range s.Faults.List() {
		resp.Faults = append(resp.Faults, StatusToProto(st))
	}
	return resp, nil
}

// Revoke ends a fault.
func (s *Server) Revoke(_ context.Context, req *pb.RevokeRequest) (*pb.RevokeResponse, error) {
	st, err := s.Faults.Revoke(req.GetId())
	if err != nil {
		return nil, err
	}
	return &pb.RevokeResponse{Fault: StatusToProto(st)}, nil
}

// NewGRPCServer returns a gRPC server with the Node service, the standard
// health service and the error-mapping interceptors, after opts' own
// (e.g. an auth.Checker's). Every server made for s shares its health.
func NewGRPCServer(s *Server, opts ...grpc.ServerOption) *grpc.Server {
	logger := s.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logged := func(method string, err error) error {
		if err != nil {
			logger.Debug("request failed", "method", method, "err", err)
		}
		return errgrpc.ToGRPC(err)
	}
	g := grpc.NewServer(append(opts,
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			resp, err := h(ctx, req)
			return resp, logged(info.FullMethod, err)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return logged(info.FullMethod, h(srv, ss))
		}))...)
	pb.RegisterNodeServer(g, s)
	if s.health == nil {
		s.health = health.NewServer()
	}
	healthpb.RegisterHealthServer(g, s.health)
	return g
}
