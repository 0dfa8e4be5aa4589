// Command k6 stands in for k6 in faultline's tests, where k6 itself is not
// available: `k6 run [--summary-export FILE] SCRIPT` runs SCRIPT in the k6
// model (internal/k6model) with the process environment as __ENV, as k6
// does, prints what iterations threw and how the thresholds went, and exits
// as k6 does: 0, or 99 when a threshold failed. With FL_K6_NETNS set to a
// network namespace path, the script's connections leave from that
// namespace, except those to loopback (a gateway of faultline run).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/faultline-dev/faultline/internal/testkit/k6model"
	"github.com/faultline-dev/faultline/pkg/netns"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "run" {
		fmt.Fprintln(os.Stderr, "usage: k6 run [--summary-export FILE] SCRIPT")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	export := fs.String("summary-export", "", "write the metrics' summary to this JSON file")
	_ = fs.Parse(os.Args[2:])
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: k6 run [--summary-export FILE] SCRIPT")
		os.Exit(2)
	}
	os.Exit(run(fs.Arg(0), *export))
}

func run(script, export string) int {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	m := k6model.New(env)
	if path := os.Getenv("FL_K6_NETNS"); path != "" {
		ns, err := netns.Open(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "k6:", err)
			return 1
		}
		defer ns.Close()
		inNS := ns.Dialer(nil)
		m.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if host, _, _ := net.SplitHostPort(addr); net.ParseIP(host).IsLoopback() {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}
			return inNS(ctx, network, addr)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := m.Run(ctx, script)
	if err != nil {
		fmt.Fprintln(os.Stderr, "k6:", err)
		return 1
	}
	for _, e := range res.Errors {
		fmt.Fprintln(os.Stderr, "ERRO iteration:", e)
	}
	failed := false
	names := make([]string, 0, len(res.Thresholds))
	for th := range res.Thresholds {
		names = append(names, th)
	}
	sort.Strings(names)
	for _, th := range names {
		mark := "✓"
		if !res.Thresholds[th] {
			mark, failed = "✗", true
		}
		fmt.Printf("%s %s\n", mark, th)
	}
	if export != "" {
		b, _ := json.MarshalIndent(map[string]any{"metrics": m.Metrics.Summary(), "thresholds": res.Thresholds, "errors": res.ErrorCount}, "", "  ")
		if err := os.WriteFile(export, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "k6:", err)
			return 1
		}
	}
	if failed {
		fmt.Fprintln(os.Stderr, "ERRO thresholds on metrics have been crossed")
		return 99
	}
	return 0
}
