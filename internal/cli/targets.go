package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

func newCmdTargets(g *globals) *cobra.Command {
	var sel selectorParams
	var lp localParams
	cmd := &cobra.Command{
		Use:   "targets",
		Short: "List the targets a selector or service matches",
		Long: `List the targets a selector or a service matches, with their labels.

Examples:
  faultline targets --local --selector app=catalog
  faultline targets --local --namespace shop --service catalog`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !sel.given() {
				return usagef("give --selector, --namespace or --service")
			}
			set, err := sel.targetSet()
			if err != nil {
				return err
			}
			client, closeClient, err := g.gatewayClient(&lp)
			if err != nil {
				return err
			}
			defer closeClient()
			resp, err := client.Targets(cmd.Context(), &pb.TargetsRequest{Targets: set})
			if err != nil {
				return err
			}
			g.notes(resp.GetNotes())
			if g.output == "json" {
				return g.printJSON(resp)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tNAMESPACE\tNODE\tIP\tTARGET\tLABELS")
			for _, t := range resp.GetTargets() {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", t.GetName(), t.GetNamespace(), t.GetNode(), t.GetIp(), targetString(t.GetTarget()), labelsString(t.GetLabels()))
			}
			for _, s := range resp.GetSkipped() {
				fmt.Fprintf(w, "%s\t(skipped: %s)\n", s.GetName(), s.GetReason())
			}
			return w.Flush()
		},
	}
	sel.bind(cmd.Flags())
	lp.bind(cmd.Flags())
	return cmd
}

func newCmdTerminate(g *globals) *cobra.Command {
	var sel selectorParams
	var lp localParams
	var count string
	var timeout string
	cmd := &cobra.Command{
		Use:   "terminate",
		Short: "Terminate some of the targets, chosen at random",
		Long: `Terminate --count targets (a number, or a percentage such as 50%) chosen at
random among those the selector or service matches: SIGTERM, then up to
--timeout for each to stop. Prints the names of the terminated targets.

Example:
  faultline terminate --local --selector app=catalog --count 50%`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !sel.given() {
				return usagef("give --selector, --namespace or --service")
			}
			set, err := sel.targetSet()
			if err != nil {
				return err
			}
			req := &pb.TerminatePodsRequest{Targets: set, Count: count}
			if timeout != "" {
				d, err := parseDuration("--timeout", timeout)
				if err != nil {
					return err
				}
				req.Timeout = d
			}
			client, closeClient, err := g.gatewayClient(&lp)
			if err != nil {
				return err
			}
			defer closeClient()
			resp, err := client.TerminatePods(cmd.Context(), req)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return g.printJSON(resp)
			}
			for _, name := range resp.GetTerminated() {
				fmt.Fprintln(g.stdout, name)
			}
			return nil
		},
	}
	sel.bind(cmd.Flags())
	lp.bind(cmd.Flags())
	cmd.Flags().StringVar(&count, "count", "1", "how many targets: a number or a percentage such as 50%")
	cmd.Flags().StringVar(&timeout, "timeout", "10s", "how long to wait for each target to stop")
	return cmd
}
