package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
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

	"github.com/faultline-dev/faultline/pkg/auth"
	"github.com/faultline-dev/faultline/pkg/gateway"
	"github.com/faultline-dev/faultline/pkg/logging"
	"github.com/faultline-dev/faultline/pkg/metrics"
	"github.com/faultline-dev/faultline/pkg/targets"
	"github.com/faultline-dev/faultline/pkg/targets/containerd"
	"github.com/faultline-dev/faultline/pkg/targets/netnsdir"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// localParams configure the gateway. Local mode: targets from containerd
// and named network namespaces, faults through the local faultlined.
// Kubernetes mode (the default): pods through the API server, each fault
// a Fault object that the nodes' faultlined act on.
type localParams struct {
	local                bool
	containerdSocket     string
	containerdNamespaces []string
	kube                 kubeParams
	metricsListen        string
}

func (p *localParams) bind(f *pflag.FlagSet) {
	f.BoolVar(&p.local, "local", false, "local mode: targets are this machine's containerd containers and named netns, not Kubernetes pods")
	f.StringVar(&p.containerdSocket, "containerd-socket", envOr("FAULTLINE_CONTAINERD", containerd.DefaultAddress), "containerd socket of local mode (env FAULTLINE_CONTAINERD)")
	f.StringArrayVar(&p.containerdNamespaces, "containerd-namespace", nil, "containerd namespace to look in; repeatable (default: all)")
	p.kube.bind(f)
}

// bindMetrics adds --metrics-listen, for the commands that serve a gateway.
func (p *localParams) bindMetrics(f *pflag.FlagSet) {
	f.StringVar(&p.metricsListen, "metrics-listen", "", "serve the gateway's Prometheus metrics at http://ADDR/metrics (default: none)")
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

// serve starts the gateway on addr, checking check's token, and returns
// the listener and a stop function.
func (p *localParams) serve(g *globals, addr string, check *auth.Checker, logger *slog.Logger) (net.Listener, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("gateway: listen on %s: %w", addr, err)
	}
	s, closeSource, err := p.server(g, logger)
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	var opts []grpc.ServerOption
	var msrv *http.Server
	if p.metricsListen != "" {
		m := metrics.NewGateway()
		s.Metrics, opts = m, m.ServerOptions()
		if msrv, err = metrics.Serve(p.metricsListen, metrics.NewGatewayRegistry(m), logger); err != nil {
			ln.Close()
			closeSource()
			return nil, nil, err
		}
	}
	gs := gateway.NewGRPCServer(s, check, opts...)
	go gs.Serve(ln)
	stop := func() {
		t := time.AfterFunc(5*time.Second, gs.Stop)
		gs.GracefulStop()
		t.Stop()
		closeSource()
		if msrv != nil {
			msrv.Close()
		}
	}
	return ln, stop, nil
}

// tokenHint completes the Unauthenticated message of a gateway whose
// token is in file.
func tokenHint(file string) string {
	return fmt.Sprintf("the token is in %s, readable only by the user who started the gateway; clients read it there, or from $%s or the file $%s names (faultline run sets %s for its command)",
		file, auth.EnvToken, auth.EnvTokenFile, auth.EnvToken)
}

func newCmdGateway(g *globals) *cobra.Command {
	var p localParams
	var listen, tokenFile string
	level, logFormat := slog.LevelInfo, "text"
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Serve the selector-level Gateway API that k6 scripts and the CLI call",
		Long: `Serve faultline.v1.Gateway (with gRPC server reflection) on a loopback TCP
address. In Kubernetes mode (the default) the targets are pods, found with the
kubeconfig's credentials (or in-cluster ones), and each fault is a Fault
object in the targets' namespace, leased by the gateway (when it dies, the
lease lapses and the faults end), which every node's faultlined applies to
its pods: the caller needs the fault-injector Role there
(deploy/examples/fault-injector-role.yaml). In local
mode the targets are this machine's containerd containers and named network
namespaces, and faults go through the local faultlined.

Every call but the standard health check needs the gateway's bearer token
("authorization: Bearer TOKEN"). It is read from --token-file, or from
~/.config/faultline/gateway-token (created, mode 0600, when missing); the
CLI and the k6 library find it there too, or in $FAULTLINE_TOKEN or the file
$FAULTLINE_TOKEN_FILE names. The log gives the file's path, never the token.

Examples:
  faultline gateway --kubeconfig ~/.kube/config
  faultline gateway --local --listen 127.0.0.1:7440`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := logging.New(os.Stderr, logFormat, level)
			if err != nil {
				return usagef("--log-format: %v", err)
			}
			token, file, created, err := gatewayToken(tokenFile)
			if err != nil {
				return err
			}
			ln, stop, err := p.serve(g, listen, auth.NewChecker(token, tokenHint(file)), logger)
			if err != nil {
				return err
			}
			logger.Info("gateway ready", "listen", ln.Addr().String(), "token_file", file, "token_created", created)
			<-cmd.Context().Done()
			stop()
			return nil
		},
	}
	p.bind(cmd.Flags())
	p.bindMetrics(cmd.Flags())
	cmd.Flags().StringVar(&listen, "listen", DefaultGatewayAddr, "address to serve on (keep it on loopback: the token travels in cleartext)")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "file holding the bearer token callers must send (default ~/.config/faultline/gateway-token, created when missing)")
	cmd.Flags().TextVar(&level, "log-level", level, "gateway log level: debug, info, warn or error")
	cmd.Flags().StringVar(&logFormat, "log-format", logFormat, "text or json")
	return cmd
}

// gatewayToken reads the token from file (which must exist), or from the
// user's default token file, creating that one when it is missing.
func gatewayToken(file string) (token, path string, created bool, err error) {
	if file != "" {
		token, err = auth.ReadFile(file, true)
		return token, file, false, err
	}
	if path, err = auth.DefaultFile(); err != nil {
		return "", "", false, err
	}
	token, created, err = auth.LoadOrCreate(path)
	return token, path, created, err
}

// DefaultGatewayAddr is where the gateway listens, and where clients look
// for it, unless told otherwise.
const DefaultGatewayAddr = "127.0.0.1:7440"

func newCmdRun(g *globals) *cobra.Command {
	var p localParams
	level, logFormat := slog.LevelWarn, "text"
	cmd := &cobra.Command{
		Use:   "run [--local] -- COMMAND [ARG...]",
		Short: "Run a command with a gateway for it, e.g. k6",
		Long: `Start a gateway on a free loopback port, run COMMAND with FAULTLINE_ADDR set
to it and FAULTLINE_TOKEN to a token made for this run (the gateway takes
no other), forward SIGINT, SIGTERM and SIGHUP to COMMAND, and exit with its
status once it ends, stopping the gateway. If run itself is killed, COMMAND
gets SIGKILL.

Without --local, the gateway is in Kubernetes mode: targets are pods of the
cluster of the kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config).
With --local, they are this machine's containerd containers and named
network namespaces, faulted through the local faultlined (--socket).

Examples:
  faultline run --local -- k6 run examples/k6/timeout-incident.js
  faultline run --kubeconfig ~/.kube/config -- k6 run script.js`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("run needs a command after --, e.g. faultline run --local -- k6 run script.js")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			logger, err := logging.New(os.Stderr, logFormat, level)
			if err != nil {
				return usagef("--log-format: %v", err)
			}
			token, err := auth.NewToken()
			if err != nil {
				return err
			}
			hint := fmt.Sprintf("this gateway belongs to a faultline run, whose command got the token in $%s", auth.EnvToken)
			ln, stop, err := p.serve(g, "127.0.0.1:0", auth.NewChecker(token, hint), logger)
			if err != nil {
				return err
			}
			defer stop()
			return runChild(args, ln.Addr().String(), token)
		},
	}
	p.bind(cmd.Flags())
	p.bindMetrics(cmd.Flags())
	cmd.Flags().TextVar(&level, "log-level", level, "log level of the run's gateway (on stderr, beside COMMAND's output): debug, info, warn or error")
	cmd.Flags().StringVar(&logFormat, "log-format", logFormat, "text or json")
	return cmd
}

// exitError carries a child's exit status out of Main.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func runChild(args []string, addr, token string) error {
	child := exec.Command(args[0], args[1:]...)
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, os.Stdout, os.Stderr
	child.Env = append(os.Environ(), "FAULTLINE_ADDR="+addr, auth.EnvToken+"="+token)
	// If run dies, so does its command: the command's faults end with it.
	defer dieWithParent(child)()
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
		token, err := auth.ClientToken()
		if err != nil {
			return nil, nil, fmt.Errorf("the gateway's token: %w", err)
		}
		opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		if token != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(auth.Bearer(token)))
		}
		conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
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

func (c inProcess) Status(ctx context.Context, r *pb.StatusRequest, _ ...grpc.CallOption) (*pb.StatusResponse, error) {
	resp, err := c.s.Status(ctx, r)
	return resp, errgrpc.ToGRPC(err)
}

func (c inProcess) InjectTcp(ctx context.Context, r *pb.InjectTcpRequest, _ ...grpc.CallOption) (*pb.GatewayInjectResponse, error) {
	resp, err := c.s.InjectTcp(ctx, r)
	return resp, errgrpc.ToGRPC(err)
}

func (c inProcess) RevokeAll(ctx context.Context, r *pb.RevokeAllRequest, _ ...grpc.CallOption) (*pb.RevokeAllResponse, error) {
	resp, err := c.s.RevokeAll(ctx, r)
	return resp, errgrpc.ToGRPC(err)
}
