// Command faultlined is faultline's node daemon: it serves the faultline.v1
// Node API and runs faults in the network namespaces of this node.
//
// Local mode takes netns paths and PIDs. Kubernetes mode (--kubernetes,
// as deployed by deploy/) takes pods of its own node, finds their sandboxes
// through containerd, refuses pods a fault must not touch, and ends a
// pod's faults when the pod is deleted.
//
// "faultlined health" asks a running faultlined whether it is ready, for
// probes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/faultline-dev/faultline/pkg/auth"
	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/logging"
	"github.com/faultline-dev/faultline/pkg/metrics"
	"github.com/faultline-dev/faultline/pkg/metrics/nodemetrics"
	"github.com/faultline-dev/faultline/pkg/nodeapi"
	"github.com/faultline-dev/faultline/pkg/proxy/httpfault"
)

const defaultSocket = "/run/faultline/faultlined.sock"

type config struct {
	socket, listen string
	// tokenFile holds the bearer token callers of the TCP listener send.
	tokenFile      string
	allowHostNetns bool
	headerTimeout  time.Duration
	idleTimeout    time.Duration
	headMemory     int64
	// metricsListen is the address of /metrics; empty serves none.
	metricsListen string
	kube          kubeConfig
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "health" {
		os.Exit(health(os.Args[2:]))
	}
	var cfg config
	flag.StringVar(&cfg.socket, "socket", defaultSocket, "unix socket to serve the API on (mode 0600)")
	flag.StringVar(&cfg.listen, "listen", "", `also serve the API on this TCP address, e.g. 127.0.0.1:7439; callers send "authorization: Bearer TOKEN" with the token of --token-file`)
	flag.StringVar(&cfg.tokenFile, "token-file", "", "bearer token file of --listen (default: faultlined.token beside --socket, created mode 0600 when missing)")
	flag.BoolVar(&cfg.allowHostNetns, "allow-host-netns", false, "let faults target the host's own network namespace (that of PID 1) or faultlined's: they then hit the machine itself")
	flag.DurationVar(&cfg.headerTimeout, "http-header-timeout", httpfault.DefaultHeaderTimeout, "the proxy closes an HTTP/1 connection whose client takes longer to send a request head")
	flag.DurationVar(&cfg.idleTimeout, "http-idle-timeout", httpfault.DefaultIdleTimeout, "the proxy closes an HTTP/1 connection idle between requests for longer")
	flag.Int64Var(&cfg.headMemory, "http-head-memory", httpfault.DefaultHeadBudget, "bytes that HTTP/1 request heads larger than 4 KiB may hold while they are being read, over every fault; a head past it is answered 431 (a defense against clients stalling in large heads)")
	flag.StringVar(&cfg.metricsListen, "metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics, e.g. :9464 (default: none); read-only, no token: they name faults and their targets")
	level := flag.String("log-level", "info", "debug, info, warn or error")
	format := flag.String("log-format", "text", "text or json")
	cfg.kube.flags(flag.CommandLine)
	flag.Parse()

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(os.Stderr, "faultlined: --log-level: %v\n", err)
		os.Exit(2)
	}
	if cfg.headerTimeout <= 0 || cfg.idleTimeout <= 0 {
		fmt.Fprintln(os.Stderr, "faultlined: --http-header-timeout and --http-idle-timeout must be positive")
		os.Exit(2)
	}
	if cfg.headMemory < 64<<10 {
		fmt.Fprintf(os.Stderr, "faultlined: --http-head-memory must be at least 65536 (one 64 KiB head), got %d\n", cfg.headMemory)
		os.Exit(2)
	}
	logger, err := logging.New(os.Stderr, *format, lvl)
	if err != nil {
		fmt.Fprintf(os.Stderr, "faultlined: --log-format: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, logger, cfg); err != nil {
		logger.Error("faultlined failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, logger *slog.Logger, cfg config) error {
	ln, err := listenUnix(cfg.socket)
	if err != nil {
		return err
	}
	defer os.Remove(cfg.socket)
	mon := nodemetrics.NewNode()
	eng := engine.New(engine.Options{Logger: logger, AllowHostNetns: cfg.allowHostNetns,
		HeaderTimeout: cfg.headerTimeout, IdleTimeout: cfg.idleTimeout, HeadMemory: cfg.headMemory, Monitor: mon})
	mon.Watch(eng)
	api := &nodeapi.Server{Faults: nodeapi.Engine(eng), Logger: logger}
	srv := nodeapi.NewGRPCServer(api)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.kube.enabled {
		cfg.kube.stateDir = filepath.Dir(cfg.socket)
		api.SetServing(false) // until the pods of the node are listed
		if err := cfg.kube.start(ctx, logger, api, eng); err != nil {
			return err
		}
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	servers := []*grpc.Server{srv}
	if cfg.listen != "" {
		// The unix socket is guarded by its mode; TCP by a token.
		check, file, err := listenToken(cfg)
		if err != nil {
			srv.Stop()
			return err
		}
		tsrv := nodeapi.NewGRPCServer(api, check.ServerOptions()...)
		servers = append(servers, tsrv)
		logger.Info("tcp listener needs the bearer token", "token_file", file)
		tln, err := net.Listen("tcp", cfg.listen)
		if err != nil {
			srv.Stop()
			return fmt.Errorf("listen on %s: %w", cfg.listen, err)
		}
		go func() { errc <- tsrv.Serve(tln) }()
	}
	if cfg.metricsListen != "" {
		msrv, err := metrics.Serve(cfg.metricsListen, nodemetrics.NewNodeRegistry(mon), logger)
		if err != nil {
			srv.Stop()
			return err
		}
		defer msrv.Close()
	}
	logger.Info("faultlined ready", "socket", cfg.socket, "listen", cfg.listen, "kubernetes", cfg.kube.enabled, "metrics", cfg.metricsListen)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	logger.Info("faultlined stopping")
	eng.Close() // ends every fault, which also ends the blocked Inject calls
	for _, s := range servers {
		t := time.AfterFunc(5*time.Second, s.Stop)
		s.GracefulStop()
		t.Stop()
	}
	return err
}

// listenToken returns the checker of the TCP listener: --token-file's
// token, or that of faultlined.token beside the socket, created when
// missing.
func listenToken(cfg config) (*auth.Checker, string, error) {
	file := cfg.tokenFile
	var token string
	var err error
	if file != "" {
		token, err = auth.ReadFile(file, true)
	} else {
		file = filepath.Join(filepath.Dir(cfg.socket), "faultlined.token")
		token, _, err = auth.LoadOrCreate(file)
	}
	if err != nil {
		return nil, "", err
	}
	hint := fmt.Sprintf("the token is in %s on faultlined's machine, readable only by its user", file)
	return auth.NewChecker(token, hint), file, nil
}

// listenUnix listens on path with mode 0600, replacing a stale socket left
// by a crashed daemon but never one that still answers, nor a file that is
// not a socket.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("--socket %s: there is a file that is not a socket there; faultlined replaces only a stale socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another faultlined is serving %s", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		os.Remove(path)
	}
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return ln, os.Chmod(path, 0o600)
}

// health checks a running faultlined through its socket: exit 0 when it
// answers SERVING.
func health(args []string) int {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	socket := fs.String("socket", defaultSocket, "faultlined's unix socket")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+*socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "faultlined health:", err)
		return 1
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "faultlined health:", err)
		return 1
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		fmt.Fprintln(os.Stderr, "faultlined health:", resp.GetStatus())
		return 1
	}
	return 0
}
