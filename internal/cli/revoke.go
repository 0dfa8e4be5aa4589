package cli

import (
	"github.com/spf13/cobra"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

func newCmdRevoke(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "End an active fault and print its counters",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("revoke takes exactly one fault id (see faultline list)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
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
}
