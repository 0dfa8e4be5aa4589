package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/faultline-dev/faultline/pkg/gateway"
	"github.com/faultline-dev/faultline/pkg/targets"
	"github.com/faultline-dev/faultline/pkg/targets/containerd"
	"github.com/faultline-dev/faultline/pkg/targets/netnsdir"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// localParams configure the gateway. Local mode: targets from containerd
// and named network namespaces, faults through the local faultlined.
// Kubernetes mode (the default): pods through the API server, faults
// through port-forwards to each node's faultlined pod.
type localParams struct {
	local                bool
	containerdSocket     string
	containerdNamespaces []string
	kube                 kubeParams
}

func (p *localParams) bind(f *pflag.FlagSet) {
	f.BoolVar(&p.local, "local", false, "local mode: targets are this machine's containerd containers and named netns, not Kubernetes pods")
	f.StringVar(&p.containerdSocket, "containerd-socket", envOr("FAULTLINE_CONTAINERD", containerd.DefaultAddress), "containerd socket of local mode (env FAULTLINE_CONTAINERD)")
	f.StringArrayVar(&p.containerdNamespaces, "containerd-namespace", nil, "containerd namespace to look in; repeatable (default: all)")
	p.kube.bind(f)
}

// server builds the gateway of the chosen mode.
func (p *localParams) server(g *globals, logger *slog.Logger) (*gateway.Server, func(), error) {
	if !p.local {
		return p.kube.server(logger)
	}
	ctr := &containerd.Source{Address: p.containerdSocket, Namespaces: p.containerdNamespaces}
	tr := &gateway.LocalTransport{Socket: g.socket}
	s := &gateway.Server{
		Source:    targets.Multi{"containerd": ctr, "netns": &netnsdir.Source{}},
		Transport: tr,
		Logger:    logger,
	}
	return s, func() { ctr.Close(); tr.Close() }, nil
}

// serve starts the local gateway on addr and returns the listener and a
// stop function.
func (p *localParams) serve(g *globals, addr string, logger *slog.Logger) (net.Listener, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("gateway: listen on %s: %w", addr, err)
	}
	s, closeSource, err := p.server(g, logger)
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	gs := gateway.NewGRPCServer(s)
	go gs.Serve(ln)
	stop := func() {
		t := time.AfterFunc(5*time.Second, gs.Stop)
		gs.GracefulStop()
		t.Stop()
		closeSource()
	}
	return ln, stop, nil
}

func newCmdGateway(g *globals) *cobra.Command {
	var p localParams
	var listen string
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Serve the selector-level Gateway API that k6 scripts and the CLI call",
		Long: `Serve faultline.v1.Gateway (with gRPC server reflection) on a loopback TCP
address. In Kubernetes mode (the default) the targets are pods, found with the
kubeconfig's credentials (or in-cluster ones), and faults go to each node's
faultlined through an API-server port-forward: the caller needs
pods/portforward on faultline's pods, and list on the target pods. In local
mode the targets are this machine's containerd containers and named network
namespaces, and faults go through the local faultlined.

Examples:
  faultline gateway --kubeconfig ~/.kube/config
  faultline gateway --local --listen 127.0.0.1:7440`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
			ln, stop, err := p.serve(g, listen, logger)
			if err != nil {
				return err
			}
			logger.Info("gateway ready", "listen", ln.Addr().String())
			<-cmd.Context().Done()
			stop()
			return nil
		},
	}
	p.bind(cmd.Flags())
	cmd.Flags().StringVar(&listen, "listen", DefaultGatewayAddr, "address to serve on (keep it on loopback: there is no authentication)")
	return cmd
}

// DefaultGatewayAddr is where the gateway listens, and where clients look
// for it, unless told otherwise.
const DefaultGatewayAddr = "127.0.0.1:7440"

func newCmdRun(g *globals) *cobra.Command {
	var p localParams
	cmd := &cobra.Command{
		Use:   "run [--local] -- COMMAND [ARG...]",
		Short: "Run a command with a gateway for it, e.g. k6",
		Long: `Start a gateway on a free loopback port, run COMMAND with FAULTLINE_ADDR set
to it, forward SIGINT, SIGTERM and SIGHUP to COMMAND, and exit with its
status once it ends, stopping the gateway.

Example:
  faultline run --local -- k6 run examples/k6/timeout-incident.js`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("run needs a command after --, e.g. faultline run --local -- k6 run script.js")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			ln, stop, err := p.serve(g, "127.0.0.1:0", logger)
			if err != nil {
				return err
			}
			defer stop()
			return runChild(args, ln.Addr().String())
		},
	}
	p.bind(cmd.Flags())
	return cmd
}

// exitError carries a child's exit status out of Main.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func runChild(args []string, addr string) error {
	child := exec.Command(args[0], args[1:]...)
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, os.Stdout, os.Stderr
	child.Env = append(os.Environ(), "FAULTLINE_ADDR="+addr)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := child.Start(); err != nil {
		return fmt.Errorf("run %s: %w", args[0], err)
	}
	waited := make(chan error, 1)
	go func() { waited <- child.Wait() }()
	for {
		select {
		case sig := <-sigs:
			_ = child.Process.Signal(sig)
		case err := <-waited:
			if err == nil {
				return nil
			}
			if ee, ok := err.(*exec.ExitError); ok {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return exitError{128 + int(ws.Signal())}
				}
				return exitError{ee.ExitCode()}
			}
			return err
		}
	}
}

// gatewayClient returns the gateway to use: FAULTLINE_ADDR's when set,
// else a local gateway in this process.
func (g *globals) gatewayClient(p *localParams) (pb.GatewayClient, func(), error) {
	if err := g.validateOutput(); err != nil {
		return nil, nil, err
	}
	if addr := os.Getenv("FAULTLINE_ADDR"); addr != "" && !p.local {
		conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, fmt.Errorf("connect to the gateway at %s: %w", addr, err)
		}
		return pb.NewGatewayClient(conn), func() { conn.Close() }, nil
	}
	s, closeSource, err := p.server(g, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, nil, err
	}
	return inProcess{s}, closeSource, nil
}

// inProcess calls a gateway in this process, with the errors a remote
// gateway would return.
type inProcess struct{ s *gateway.Server }

func (c inProcess) Targets(ctx context.Context, r *pb.TargetsRequest, _ ...grpc.CallOption) (*pb.TargetsResponse, error) {
	resp, err := c.s.Targets(ctx, r)
	return resp, errgrpc.ToGRPC(err)
}

func (c inProcess) InjectHTTP(ctx context.Context, r *pb.InjectHTTPRequest, _ ...grpc.CallOption) (*pb.GatewayInjectResponse, error) {
	resp, err := c.s.InjectHTTP(ctx, r)
	return resp, errgrpc.ToGRPC(err)
}

func (c inProcess) InjectGrpc(ctx context.Context, r *pb.InjectGrpcRequest, _ ...grpc.CallOption) (*pb.GatewayInjectResponse, error) {
	resp, err := c.s.InjectGrpc(ctx, r)
	return resp, errgrpc.ToGRPC(err)
}

func (c inProcess) InjectNetwork(ctx context.Context, r *pb.InjectNetworkRequest, _ ...grpc.CallOption) (*pb.GatewayInjectResponse, error) {
	resp, err := c.s.InjectNetwork(ctx, r)
	return resp, errgrpc.ToGRPC(err)
}

func (c inProcess) TerminatePods(ctx context.Context, r *pb.TerminatePodsRequest, _ ...grpc.CallOption) (*pb.TerminatePodsResponse, error) {
	resp, err := c.s.TerminatePods(ctx, r)
	return resp, errgrpc.ToGRPC(err)
}
