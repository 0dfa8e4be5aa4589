// Package cli is the faultline command: one file per subcommand. Errors
// are printed once, as one line, by Main; bad input exits 2, failures 1.
package cli

import (
	"time"

	"context"
	"errors"
	"fmt"
	"google.golang.org/protobuf/types/known/durationpb"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// usageError marks bad input: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// interrupted is returned after Ctrl-C revoked a fault: exit status 130.
var errInterrupted = errors.New("interrupted")

type globals struct {
	socket string
	output string
	stdout io.Writer
	stderr io.Writer
}

// notes prints a gateway's notes (sources absent from this machine) on
// stderr, so that tables and JSON on stdout stay as they are.
func (g *globals) notes(notes []string) {
	for _, n := range notes {
		fmt.Fprintln(g.stderr, "note: "+n)
	}
}

// Main runs the command line and returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "faultline",
		Short:         "Inject HTTP faults into network namespaces through faultlined",
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.PersistentFlags().StringVar(&g.socket, "socket", envOr("FAULTLINE_SOCKET", "/run/faultline/faultlined.sock"), "faultlined's unix socket (env FAULTLINE_SOCKET)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newCmdInject(g), newCmdApply(g), newCmdList(g), newCmdRevoke(g), newCmdGateway(g), newCmdRun(g), newCmdTargets(g), newCmdTerminate(g), newCmdStatus(g))
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	if errors.Is(err, errInterrupted) {
		return 130
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintln(stderr, "faultline: "+oneLine(message(err)))
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || status.Code(err) == codes.InvalidArgument {
		return 2
	}
	return 1
}

func (g *globals) validateOutput() error {
	if g.output != "table" && g.output != "json" {
		return usagef("--output must be table or json, got %q", g.output)
	}
	return nil
}

// dial checks the global flags and connects to faultlined; the connection
// is lazy, so a missing socket is reported here in words rather than by the
// first call.
func (g *globals) dial() (pb.NodeClient, func(), error) {
	if err := g.validateOutput(); err != nil {
		return nil, nil, err
	}
	if _, err := os.Stat(g.socket); err != nil {
		return nil, nil, fmt.Errorf("cannot reach faultlined at %s: %w (is faultlined running? see --socket)", g.socket, errors.Unwrap(err))
	}
	conn, err := grpc.NewClient("unix://"+g.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to faultlined at %s: %w", g.socket, err)
	}
	return pb.NewNodeClient(conn), func() { conn.Close() }, nil
}

func message(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func parseDuration(flag, s string) (*durationpb.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return nil, usagef("%s: %v", flag, err)
	}
	return durationpb.New(d), nil
}
