package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

func newCmdStatus(g *globals) *cobra.Command {
	var sel selectorParams
	var lp localParams
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every fault running now, on every node, with live counters and time left",
		Long: `Show the faults running now with their targets, live counters and time
left: every fault on every node that runs faultlined (Kubernetes mode), or on
this machine (--local); with --selector, --namespace or --service, only the
faults on those targets. A node that cannot be asked is named on stderr.

Examples:
  faultline status
  faultline status --local -o json
  faultline status --namespace shop --service catalog`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &pb.StatusRequest{}
			if sel.given() {
				set, err := sel.targetSet()
				if err != nil {
					return err
				}
				req.Targets = set
			}
			client, closeClient, err := g.gatewayClient(&lp)
			if err != nil {
				return err
			}
			defer closeClient()
			resp, err := client.Status(cmd.Context(), req)
			if err != nil {
				return err
			}
			g.notes(resp.GetNotes())
			for _, u := range resp.GetUnreachable() {
				fmt.Fprintln(g.stderr, "warning: not asked: "+u)
			}
			if g.output == "json" {
				return g.printJSON(resp)
			}
			return g.printResults(resp.GetFaults(), "no faults running")
		},
	}
	sel.bind(cmd.Flags())
	lp.bind(cmd.Flags())
	return cmd
}

// targetName is namespace/name when known, else how the node reaches it.
func targetName(t *pb.TargetInfo) string {
	if t.GetName() != "" {
		return t.GetNamespace() + "/" + t.GetName()
	}
	return targetString(t.GetTarget())
}

func stateString(s pb.FaultState) string {
	switch s {
	case pb.FaultState_FAULT_STATE_STARTING:
		return "starting"
	case pb.FaultState_FAULT_STATE_ACTIVE:
		return "active"
	case pb.FaultState_FAULT_STATE_DRAINING:
		return "draining"
	case pb.FaultState_FAULT_STATE_ENDED:
		return "ended"
	}
	return "unknown"
}

// timeLeft is the time until the fault expires, to the second.
func timeLeft(f *pb.FaultStatus) string {
	if f.GetExpires() == nil || f.GetState() != pb.FaultState_FAULT_STATE_ACTIVE {
		return "-"
	}
	return max(0, time.Until(f.GetExpires().AsTime())).Round(time.Second).String()
}

// printResults prints target faults as a table, or empty when there are
// none (status, revoke --all).
func (g *globals) printResults(results []*pb.TargetResult, empty string) error {
	if len(results) == 0 {
		fmt.Fprintln(g.stdout, empty)
		return nil
	}
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tTARGET\tID\tKIND\tPORT\tSTATE\tLEFT\tREQUESTS\tDELAYED\tERRORED\tUPSTREAM_ERRORS\tDROPPED\tREFUSED")
	for _, r := range results {
		f, c := r.GetFault(), r.GetFault().GetCounters()
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", r.GetTarget().GetNode(), targetName(r.GetTarget()), f.GetId(), f.GetKind(), portString(f),
			stateString(f.GetState()), timeLeft(f), c.GetRequests(), c.GetDelayed(), c.GetErrored(), c.GetUpstreamErrors(), c.GetPacketsDropped(), c.GetConnectionsRefused())
	}
	return w.Flush()
}
