package cli

import (
	"math"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

type grpcParams struct {
	targetParams
	port int
	timingParams
	statusCode       int
	statusMessage    string
	exclude          string
	methods          []string
	metadata         []string
	resetConnections bool
}

func newCmdInjectGRPC(g *globals) *cobra.Command {
	var p grpcParams
	cmd := &cobra.Command{
		Use:   "grpc",
		Short: "Delay or fail gRPC calls to a port of a network namespace",
		Long: `Delay or fail gRPC calls (cleartext HTTP/2) to a port, for --duration; blocks
until the fault ends and prints its counters. Ctrl-C revokes the fault.
Established connections are kept (their streams go on, direct); new
connections get the fault. --reset-connections resets them at the start.

Examples:
  faultline inject grpc --netns /run/netns/orders --port 9000 --error-rate 1 --status-code 14 --status-message 'try again' --duration 30s
  faultline inject grpc --pid 4242 --port 9000 --delay 100ms --delay-variation 20ms --exclude grpc.health.v1.Health --duration 1m
  faultline inject grpc --netns /run/netns/orders --port 9000 --method '/shop.Orders/Create*' --metadata tenant=blue --error-rate 0.3 --status-code 8 --duration 30s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := p.request()
			if err != nil {
				return err
			}
			return p.run(cmd.Context(), g, req)
		},
	}
	f := cmd.Flags()
	p.targetParams.bind(f)
	f.IntVar(&p.port, "port", 0, "target port (required)")
	p.timingParams.bind(f, "calls", "failed with --status-code")
	f.IntVar(&p.statusCode, "status-code", 0, "gRPC status code of failed calls, 1-16 (statusCode)")
	f.StringVar(&p.statusMessage, "status-message", "", "status message of failed calls (statusMessage)")
	f.StringVar(&p.exclude, "exclude", "", "comma-separated fully-qualified services never faulted (exclude)")
	f.StringArrayVar(&p.methods, "method", nil, "fault only this full method, /pkg.Service/Method, * wildcards; repeatable")
	f.StringArrayVar(&p.metadata, "metadata", nil, "fault only calls with this metadata, 'key' or 'key=value'; repeatable")
	f.BoolVar(&p.resetConnections, "reset-connections", false, "reset connections established before the fault")
	return cmd
}

func (p *grpcParams) request() (*pb.InjectRequest, error) {
	req, err := p.targetParams.request(p.port, p.sel.given())
	if err != nil {
		return nil, err
	}
	if p.statusCode < 0 || p.statusCode > math.MaxUint32 {
		return nil, usagef("--status-code must be in 1-16, got %d", p.statusCode)
	}
	gf := &pb.GrpcFault{
		Port:             uint32(p.port),
		AverageDelay:     durationpb.New(p.delay),
		DelayVariation:   durationpb.New(p.variation),
		DelayRate:        &p.delayRate,
		ErrorRate:        p.errorRate,
		StatusCode:       uint32(p.statusCode),
		StatusMessage:    p.statusMessage,
		Exclude:          p.exclude,
		Methods:          p.methods,
		ResetConnections: p.resetConnections,
	}
	if gf.FailFirst, err = p.failFirstProto(); err != nil {
		return nil, err
	}
	if gf.Phases, err = grpcPhases(p.phases); err != nil {
		return nil, err
	}
	for _, kv := range p.metadata {
		name, value, _ := strings.Cut(kv, "=")
		gf.Metadata = append(gf.Metadata, &pb.HeaderMatch{Name: name, Value: value})
	}
	req.Fault = &pb.InjectRequest_Grpc{Grpc: gf}
	return req, nil
}
