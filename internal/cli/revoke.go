package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

func newCmdRevoke(g *globals) *cobra.Command {
	var all bool
	var lp localParams
	cmd := &cobra.Command{
		Use:   "revoke ID | --all",
		Short: "End an active fault (or every fault) and print its counters",
		Long: `End the fault ID on this machine's faultlined and print its counters; or,
with --all, end every fault: in Kubernetes mode every FaultPlan and every
Fault object of every namespace is deleted (as kubectl delete faultplans
--all; kubectl delete faults --all -A do), and each node ends their faults;
with --local, every fault of this machine's faultlined.

Examples:
  faultline revoke f-1a2b3c4d
  faultline revoke --all --kubeconfig ~/.kube/config
  faultline revoke --all --local`,
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case all && len(args) > 0:
				return usagef("give a fault id or --all, not both")
			case !all && len(args) != 1:
				return usagef("revoke takes exactly one fault id (see faultline list), or --all")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if all {
				return g.revokeAll(cmd, &lp)
			}
			client, closeConn, err := g.dial()
			if err != nil {
				return err
			}
			defer closeConn()
			resp, err := client.Revoke(cmd.Context(), &pb.RevokeRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return g.printStatus(resp.GetFault())
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "end every fault: delete every FaultPlan and Fault object (Kubernetes), or revoke every fault of this machine (--local)")
	lp.bind(cmd.Flags())
	return cmd
}

// revokeAll is revoke --all, through the gateway (in this process unless
// FAULTLINE_ADDR names one).
func (g *globals) revokeAll(cmd *cobra.Command, lp *localParams) error {
	client, closeClient, err := g.gatewayClient(lp)
	if err != nil {
		return err
	}
	defer closeClient()
	resp, err := client.RevokeAll(cmd.Context(), &pb.RevokeAllRequest{})
	if err != nil {
		return err
	}
	for _, u := range resp.GetUnreachable() {
		fmt.Fprintln(g.stderr, "warning: not asked: "+u)
	}
	if g.output == "json" {
		return g.printJSON(resp)
	}
	for _, f := range resp.GetFaultsDeleted() {
		fmt.Fprintln(g.stdout, "deleted "+f)
	}
	return g.printResults(resp.GetRevoked(), "no node fault was running")
}
