package cli

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/faultline-dev/faultline/pkg/kubefault"
)

func newCmdApply(g *globals) *cobra.Command {
	var file string
	var kp kubeParams
	cmd := &cobra.Command{
		Use:   "apply -f PLAN.yaml",
		Short: "Run a FaultPlan: several faults across services and namespaces as one unit",
		Long: `Create the FaultPlan of PLAN.yaml ("-": standard input) with the kubeconfig's
credentials, print its timeline as the nodes report each step, and delete it
when every step has ended, or at once on Ctrl-C, which ends every step on
every node. The plan holds a lease (--lease) that this command renews: if
it dies, the steps end within the lease. The same YAML through kubectl apply
runs the same plan without a lease (kubectl delete ends it).

A FaultPlan is cluster-scoped, so creating one is a platform team's right;
each step must still target a namespace that has opted in.

Examples:
  faultline apply -f deploy/examples/plan.yaml --kubeconfig ~/.kube/config`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			plan, err := readPlan(file, cmd.InOrStdin())
			if err != nil {
				return err
			}
			if plan.Spec.Lease == "" {
				plan.Spec.Lease = kp.lease.String()
			}
			if err := plan.Validate(); err != nil {
				return err
			}
			cfg, err := kp.restConfig()
			if err != nil {
				return err
			}
			api, err := kubefault.NewAPI(cfg, "cli")
			if err != nil {
				return err
			}
			return g.runPlan(cmd, api, plan)
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "the FaultPlan's YAML file, - for standard input")
	_ = cmd.MarkFlagRequired("filename")
	kp.bind(cmd.Flags())
	return cmd
}

func readPlan(file string, stdin io.Reader) (*kubefault.FaultPlan, error) {
	var b []byte
	var err error
	if file == "-" {
		b, err = io.ReadAll(stdin)
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, usagef("read the plan: %v", err)
	}
	// The file's FaultPlan: other documents (its RBAC, say) are kubectl's.
	var plan kubefault.FaultPlan
	found := 0
	docs := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := docs.Read()
		if err == io.EOF {
			break
		} else if err != nil {
			return nil, usagef("%s: %v", file, err)
		}
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return nil, usagef("%s: %v", file, err)
		}
		if meta.Kind != kubefault.PlanKind {
			continue
		}
		if meta.APIVersion != kubefault.Group+"/"+kubefault.Version {
			return nil, usagef("%s: a FaultPlan is apiVersion %s/%s, not %q", file, kubefault.Group, kubefault.Version, meta.APIVersion)
		}
		if err := yaml.UnmarshalStrict(doc, &plan); err != nil {
			return nil, usagef("%s: %v", file, err)
		}
		found++
	}
	if found != 1 {
		return nil, usagef("%s: want one document of kind FaultPlan, found %d", file, found)
	}
	if plan.Name == "" {
		return nil, usagef("%s: metadata.name is missing", file)
	}
	return &plan, nil
}

// planEnd is when the plan's last step ends, from its creation.
func planEnd(p *kubefault.FaultPlan) time.Duration {
	var end time.Duration
	for i := range p.Spec.Steps {
		off, _ := p.Spec.Steps[i].Offset()
		d, _ := time.ParseDuration(p.Spec.Steps[i].Duration)
		end = max(end, off+d)
	}
	return end
}

// runPlan holds the plan until its steps have ended, printing each change
// of a step's phase on a node.
func (g *globals) runPlan(cmd *cobra.Command, api *kubefault.API, plan *kubefault.FaultPlan) error {
	ctx := cmd.Context()
	asked := time.Now() // the live lines' clock: the API server's times have whole seconds
	h, err := api.HoldPlan(ctx, plan)
	if err != nil {
		return err
	}
	defer h.Release()
	end := planEnd(plan)
	fmt.Fprintf(g.stdout, "FaultPlan %s: %d step(s) over %s; Ctrl-C ends them all\n", plan.Name, len(plan.Spec.Steps), end)
	seen := map[string]string{} // step/node → phase
	last := h.Object
	grace := time.NewTimer(end + 15*time.Second)
	defer grace.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			_ = h.Release()
			fmt.Fprintln(g.stdout, "interrupted: the FaultPlan was deleted, ending every step on every node")
			return errInterrupted
		case p, ok := <-h.Updates:
			if !ok {
				g.printTimeline(last)
				return fmt.Errorf("FaultPlan %s was deleted (faultline revoke --all, kubectl delete): every step ended", plan.Name)
			}
			last = p
		case <-tick.C:
		case <-grace.C:
			done = true
		}
		for _, st := range last.Status.Steps {
			for _, n := range st.Nodes {
				key := st.Name + "/" + n.Node
				if seen[key] != n.Phase {
					seen[key] = n.Phase
					fmt.Fprintf(g.stdout, "+%-7s %-20s %-14s %-8s %s\n", time.Since(asked).Round(100*time.Millisecond), st.Name, n.Node, n.Phase, stepNote(n))
				}
			}
		}
		if time.Since(asked) >= end && settled(last) {
			done = true
		}
	}
	g.printTimeline(last)
	for _, st := range last.Status.Steps {
		for _, n := range st.Nodes {
			if n.Phase == kubefault.PhaseFailed {
				return fmt.Errorf("step %s refused on node %s: %s", st.Name, n.Node, strings.TrimPrefix(n.Message, "refused: "))
			}
		}
	}
	return nil
}

// settled reports whether every node's entry of every step is final.
func settled(p *kubefault.FaultPlan) bool {
	for _, st := range p.Status.Steps {
		for _, n := range st.Nodes {
			if n.Phase == kubefault.PhasePending || n.Phase == kubefault.PhaseActive {
				return false
			}
		}
	}
	return true
}

func stepNote(n kubefault.NodeStatus) string {
	switch {
	case n.Phase == kubefault.PhaseActive:
		return fmt.Sprintf("%d target(s)", len(n.Targets))
	case n.EndReason != "":
		return n.EndReason
	}
	return strings.TrimPrefix(n.Message, "refused: ")
}

// printTimeline prints each step's nodes: when, how long, counters.
func (g *globals) printTimeline(p *kubefault.FaultPlan) {
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "STEP\tNODE\tPHASE\tSTARTED\tENDED\tTARGETS\tEND REASON\tCOUNTERS")
	offset := func(t *metav1.Time) string {
		if t == nil {
			return "-"
		}
		return "+" + t.Sub(p.CreationTimestamp.Time).Round(100*time.Millisecond).String()
	}
	steps := slices.Clone(p.Status.Steps)
	slices.SortFunc(steps, func(a, b kubefault.StepStatus) int { return cmp.Compare(a.Name, b.Name) })
	for _, st := range steps {
		for _, n := range st.Nodes {
			total := map[string]uint64{}
			for _, t := range n.Targets {
				for k, v := range t.Counters {
					total[k] += v
				}
			}
			var cs []string
			for _, k := range slices.Sorted(maps.Keys(total)) {
				cs = append(cs, fmt.Sprintf("%s=%d", k, total[k]))
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", st.Name, n.Node, n.Phase, offset(n.StartTime), offset(n.EndTime), len(n.Targets), cmp.Or(n.EndReason, "-"), cmp.Or(strings.Join(cs, " "), "-"))
		}
	}
	w.Flush()
}
