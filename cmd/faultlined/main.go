// Command faultlined is faultline's node daemon: it serves the faultline.v1
// Node API and runs faults in the network namespaces of this node.
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

	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/nodeapi"
)

func main() {
	socket := flag.String("socket", "/run/faultline/faultlined.sock", "unix socket to serve the API on (mode 0600)")
	listen := flag.String("listen", "", "also serve the API on this TCP address, e.g. 127.0.0.1:7439 (no authentication: keep it on loopback)")
	level := flag.String("log-level", "info", "debug, info, warn or error")
	flag.Parse()

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(os.Stderr, "faultlined: --log-level: %v\n", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, logger, *socket, *listen); err != nil {
		logger.Error("faultlined failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, logger *slog.Logger, socket, listen string) error {
	ln, err := listenUnix(socket)
	if err != nil {
		return err
	}
	eng := engine.New(engine.Options{Logger: logger})
	srv := nodeapi.NewGRPCServer(&nodeapi.Server{Engine: eng, Logger: logger})
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	if listen != "" {
		tln, err := net.Listen("tcp", listen)
		if err != nil {
			srv.Stop()
			return fmt.Errorf("listen on %s: %w", listen, err)
		}
		go func() { errc <- srv.Serve(tln) }()
	}
	logger.Info("faultlined ready", "socket", socket, "listen", listen)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	logger.Info("faultlined stopping")
	eng.Close() // ends every fault, which also ends the blocked Inject calls
	t := time.AfterFunc(5*time.Second, srv.Stop)
	srv.GracefulStop()
	t.Stop()
	os.Remove(socket)
	return err
}

// listenUnix listens on path with mode 0600, replacing a stale socket left
// by a crashed daemon but never one that still answers.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
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
