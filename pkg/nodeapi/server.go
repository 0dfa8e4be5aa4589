// Package nodeapi serves faultlined's gRPC API (faultline.v1.Node) over an
// engine. Domain errors carry errdefs classes; they become gRPC codes here,
// once, in an interceptor.
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
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// Server implements faultline.v1.Node.
type Server struct {
	pb.UnimplementedNodeServer
	Engine *engine.Engine
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

// Inject starts the fault and waits for its end or for the caller to go.
func (s *Server) Inject(ctx context.Context, req *pb.InjectRequest) (*pb.InjectResponse, error) {
	spec, err := SpecFromProto(req)
	if err != nil {
		return nil, err
	}
	if err := spec.Validate(); err != nil {
		return nil, err // bad input first: it does not depend on the target
	}
	if spec.Target, err = s.targets().ResolveTarget(ctx, spec.Target); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err // the caller is gone: start nothing
	}
	f, err := s.Engine.Start(spec)
	if err != nil {
		return nil, err
	}
	select {
	case <-f.Done():
	case <-ctx.Done():
		f.Stop(engine.ReasonCancelled)
	}
	return &pb.InjectResponse{Fault: StatusToProto(f.Status())}, nil
}

// List returns the active faults.
func (s *Server) List(context.Context, *pb.ListRequest) (*pb.ListResponse, error) {
	resp := &pb.ListResponse{}
	for _, st := range s.Engine.List() {
		resp.Faults = append(resp.Faults, StatusToProto(st))
	}
	return resp, nil
}

// Revoke ends a fault.
func (s *Server) Revoke(_ context.Context, req *pb.RevokeRequest) (*pb.RevokeResponse, error) {
	st, err := s.Engine.Revoke(req.GetId(), req.GetForbidLater())
	if err != nil {
		return nil, err
	}
	return &pb.RevokeResponse{Fault: StatusToProto(st)}, nil
}

// NewGRPCServer returns a gRPC server with the Node service, the standard
// health service and the error-mapping interceptor, after opts' own
// (e.g. an auth.Checker's). Every server made for s shares its health.
func NewGRPCServer(s *Server, opts ...grpc.ServerOption) *grpc.Server {
	logger := s.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	g := grpc.NewServer(append(opts, grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		if err != nil {
			logger.Debug("request failed", "method", info.FullMethod, "err", err)
		}
		return resp, errgrpc.ToGRPC(err)
	}))...)
	pb.RegisterNodeServer(g, s)
	if s.health == nil {
		s.health = health.NewServer()
	}
	healthpb.RegisterHealthServer(g, s.health)
	return g
}
