package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

func newCmdList(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List active faults with their live counters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, closeConn, err := g.dial()
			if err != nil {
				return err
			}
			defer closeConn()
			resp, err := client.List(cmd.Context(), &pb.ListRequest{})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return g.printJSON(resp)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tKIND\tTARGET\tPORT\tREMAINING\tREQUESTS\tDELAYED\tERRORED\tDROPPED\tREFUSED")
			for _, f := range resp.GetFaults() {
				c := f.GetCounters()
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", f.GetId(), f.GetKind(), targetString(f.GetTarget()), portString(f),
					time.Until(f.GetExpires().AsTime()).Round(time.Second), c.GetRequests(), c.GetDelayed(), c.GetErrored(), c.GetPacketsDropped(), c.GetConnectionsRefused())
			}
			return w.Flush()
		},
	}
}

func portString(f *pb.FaultStatus) string {
	port := "all ports"
	if f.GetPort() != 0 {
		port = fmt.Sprintf("port %d", f.GetPort())
	}
	if f.GetKind() == "network" && f.GetProtocol() != "" {
		port += "/" + f.GetProtocol()
	}
	return port
}

func targetString(t *pb.Target) string {
	if p := t.GetPod(); p != nil {
		return "pod " + p.GetNamespace() + "/" + p.GetName()
	}
	if t.GetPid() != 0 {
		return fmt.Sprintf("pid %d", t.GetPid())
	}
	return t.GetNetnsPath()
}

func (g *globals) printStatus(f *pb.FaultStatus) error {
	if g.output == "json" {
		return g.printJSON(f)
	}
	c := f.GetCounters()
	fmt.Fprintf(g.stdout, "%s fault %s on %s %s ended (%s)\n", f.GetKind(), f.GetId(), targetString(f.GetTarget()), portString(f), f.GetEndReason())
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	switch f.GetKind() {
	case "tcp":
		fmt.Fprintln(w, "CONNECTIONS\tTOXIC\tCUT\tBYTES_UPSTREAM\tBYTES_DOWNSTREAM\tBYTES_DELAYED\tBYTES_DROPPED\tTLS_HANDSHAKES\tTLS_FAULTED\tCONNECTIONS_RESET")
		fmt.Fprintf(w, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", c.GetTcpConnections(), c.GetTcpConnectionsToxic(), c.GetTcpConnectionsCut(), c.GetBytesUpstream(), c.GetBytesDownstream(),
			c.GetBytesDelayed(), c.GetBytesDropped(), c.GetTlsHandshakes(), c.GetTlsHandshakesFaulted(), c.GetConnectionsReset())
	case "network":
		fmt.Fprintln(w, "PACKETS_SEEN\tPACKETS_DROPPED\tCONNECTIONS_REFUSED")
		fmt.Fprintf(w, "%d\t%d\t%d\n", c.GetPacketsSeen(), c.GetPacketsDropped(), c.GetConnectionsRefused())
	default:
		fmt.Fprintln(w, "REQUESTS\tUNMATCHED\tDELAYED\tERRORED\tUPSTREAM_ERRORS\tCONNECTIONS_RESET")
		fmt.Fprintf(w, "%d\t%d\t%d\t%d\t%d\t%d\n", c.GetRequests(), c.GetUnmatched(), c.GetDelayed(), c.GetErrored(), c.GetUpstreamErrors(), c.GetConnectionsReset())
	}
	return w.Flush()
}

// printJSON prints m as indented JSON with stable spacing (protojson's own
// output varies its whitespace on purpose).
func (g *globals) printJSON(m proto.Message) error {
	raw, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err = g.stdout.Write(buf.Bytes())
	return err
}
