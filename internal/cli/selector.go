package cli

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// selectorParams name targets the way users think of them.
type selectorParams struct {
	namespace string
	selector  string
	service   string
}

func (p *selectorParams) bind(f *pflag.FlagSet) {
	f.StringVarP(&p.namespace, "namespace", "n", "", `namespace of the targets (default "default")`)
	f.StringVarP(&p.selector, "selector", "l", "", "label selector, e.g. app=catalog,tier!=db")
	f.StringVar(&p.service, "service", "", "target the pods behind this service")
}

func (p *selectorParams) given() bool {
	return p.namespace != "" || p.selector != "" || p.service != ""
}

// targetSet builds the target set; label terms are key=value (select) and
// key!=value (exclude).
func (p *selectorParams) targetSet() (*pb.TargetSet, error) {
	if p.service != "" {
		if p.selector != "" {
			return nil, usagef("give --selector or --service, not both")
		}
		ns := p.namespace
		if ns == "" {
			ns = "default"
		}
		return &pb.TargetSet{Kind: &pb.TargetSet_Service{Service: &pb.ServiceRef{Name: p.service, Namespace: ns}}}, nil
	}
	sel := &pb.PodSelector{Namespace: p.namespace, Select: &pb.LabelSet{Labels: map[string]string{}}, Exclude: &pb.LabelSet{Labels: map[string]string{}}}
	for _, term := range strings.Split(p.selector, ",") {
		term = strings.TrimSpace(term)
		if term == "" {
			continue
		}
		if k, v, ok := strings.Cut(term, "!="); ok && k != "" {
			sel.Exclude.Labels[strings.TrimSpace(k)] = strings.TrimSpace(v)
		} else if k, v, ok := strings.Cut(term, "="); ok && k != "" {
			sel.Select.Labels[strings.TrimSpace(k)] = strings.TrimSpace(v)
		} else {
			return nil, usagef("--selector term %q must be key=value or key!=value", term)
		}
	}
	return &pb.TargetSet{Kind: &pb.TargetSet_Pods{Pods: sel}}, nil
}

// injectVia runs the fault of req on the targets of sel through a gateway.
func (g *globals) injectVia(ctx context.Context, lp *localParams, sel *selectorParams, req *pb.InjectRequest) error {
	set, err := sel.targetSet()
	if err != nil {
		return err
	}
	client, closeClient, err := g.gatewayClient(lp)
	if err != nil {
		return err
	}
	defer closeClient()
	var resp *pb.GatewayInjectResponse
	switch f := req.GetFault().(type) {
	case *pb.InjectRequest_Http:
		resp, err = client.InjectHTTP(ctx, &pb.InjectHTTPRequest{Targets: set, Duration: req.GetDuration(), Fault: f.Http})
	case *pb.InjectRequest_Grpc:
		resp, err = client.InjectGrpc(ctx, &pb.InjectGrpcRequest{Targets: set, Duration: req.GetDuration(), Fault: f.Grpc})
	case *pb.InjectRequest_Network:
		resp, err = client.InjectNetwork(ctx, &pb.InjectNetworkRequest{Targets: set, Duration: req.GetDuration(), Fault: f.Network})
	case *pb.InjectRequest_Tcp:
		resp, err = client.InjectTcp(ctx, &pb.InjectTcpRequest{Targets: set, Duration: req.GetDuration(), Fault: f.Tcp})
	}
	if err != nil {
		if ctx.Err() != nil && status.Code(err) == codes.Canceled {
			fmt.Fprintln(g.stdout, "interrupted: the fault was revoked on every target")
			return errInterrupted
		}
		return err
	}
	g.notes(resp.GetNotes())
	if g.output == "json" {
		return g.printJSON(resp)
	}
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TARGET\tNODE\tREQUESTS\tUNMATCHED\tDELAYED\tERRORED\tDROPPED\tREFUSED")
	row := func(name, node string, c *pb.Counters) {
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", name, node, c.GetRequests(), c.GetUnmatched(), c.GetDelayed(), c.GetErrored(), c.GetPacketsDropped(), c.GetConnectionsRefused())
	}
	for _, t := range resp.GetTargets() {
		row(t.GetTarget().GetNamespace()+"/"+t.GetTarget().GetName(), t.GetTarget().GetNode(), t.GetFault().GetCounters())
	}
	row("TOTAL", "", resp.GetTotal())
	if err := w.Flush(); err != nil {
		return err
	}
	if resp.GetNoRequests() {
		fmt.Fprintln(g.stdout, "warning: the fault did not receive any request")
	}
	return nil
}

func labelsString(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
