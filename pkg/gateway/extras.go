package gateway

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

func registerExtras(g *grpc.Server) {
	healthpb.RegisterHealthServer(g, health.NewServer())
	reflection.Register(g)
}
