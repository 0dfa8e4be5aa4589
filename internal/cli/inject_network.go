package cli

import (
	"github.com/spf13/cobra"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

type networkParams struct {
	targetParams
	port      int
	protocol  string
	dropRate  float64
	resetRate float64
}

func newCmdInjectNetwork(g *globals) *cobra.Command {
	var p networkParams
	cmd := &cobra.Command{
		Use:   "network",
		Short: "Drop inbound packets and refuse connections in a network namespace",
		Long: `Drop a fraction of the inbound packets to a port and protocol (tcx eBPF, on
every interface of the namespace but loopback), and refuse a fraction of new
TCP connections at once with a RST. Blocks until the fault ends and prints
its counters. Ctrl-C revokes the fault.

Examples:
  faultline inject network --netns /run/netns/db --duration 30s                       # drop everything inbound
  faultline inject network --netns /run/netns/dns --port 53 --protocol udp --drop-rate 0.5 --duration 1m
  faultline inject network --pid 4242 --port 8080 --protocol tcp --drop-rate 0 --reset-rate 0.2 --duration 30s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := p.request()
			if err != nil {
				return err
			}
			return p.run(cmd.Context(), g, req)
		},
	}
	f := cmd.Flags()
	p.targetParams.bind(f)
	f.IntVar(&p.port, "port", 0, "destination port; 0 means all ports")
	f.StringVar(&p.protocol, "protocol", "all", "tcp, udp or all")
	f.Float64Var(&p.dropRate, "drop-rate", 1, "fraction of matching inbound packets dropped (dropRate)")
	f.Float64Var(&p.resetRate, "reset-rate", 0, "fraction of new TCP connections refused with a RST (resetRate)")
	return cmd
}

func (p *networkParams) request() (*pb.InjectRequest, error) {
	req, err := p.targetParams.request(p.port, true)
	if err != nil {
		return nil, err
	}
	req.Fault = &pb.InjectRequest_Network{Network: &pb.NetworkFault{
		Port: uint32(p.port), Protocol: p.protocol, DropRate: &p.dropRate, ResetRate: p.resetRate,
	}}
	return req, nil
}
