package kubefault

import (
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/faultline-dev/faultline/pkg/fault"
)

// The FaultPlan resource's names.
const (
	PlanKind     = "FaultPlan"
	PlanResource = "faultplans"
)

// PlanGVR is the FaultPlan resource.
var PlanGVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: PlanResource}

// FaultPlan is several faults, in any namespaces, run as one unit: each
// step is a Fault's spec in a namespace, from an offset after the plan's
// creation. It is cluster-scoped, because its steps reach across
// namespaces: creating one is a platform team's right (a ClusterRole),
// while a team faults its own namespace with Faults. Deleting the plan
// ends every step at once; spec.lease ends them when its holder (faultline
// apply) stops renewing. The namespaces' opt-in, protected namespaces and
// target limits hold for every step.
type FaultPlan struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              PlanSpec   `json:"spec"`
	Status            PlanStatus `json:"status,omitempty"`
}

// PlanSpec is the plan's steps. It cannot change once created.
type PlanSpec struct {
	Steps []PlanStep `json:"steps"`
	// Lease, as a Fault's, for every step.
	Lease string `json:"lease,omitempty"`
}

// PlanStep is one fault of a plan.
type PlanStep struct {
	// Name names the step in the plan's status (and its faults' ids).
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Start is the step's offset from the plan's creation, a Go duration
	// (default 0s); its duration counts from there.
	Start string `json:"start,omitempty"`
	Spec  `json:",inline"`
}

// PlanStatus is each step's Fault status, per node.
type PlanStatus struct {
	Steps []StepStatus `json:"steps,omitempty"`
}

// StepStatus is one step on every node.
type StepStatus struct {
	Name  string       `json:"name"`
	Nodes []NodeStatus `json:"nodes,omitempty"`
}

// MaxPlanSteps bounds a plan.
const MaxPlanSteps = 20

// Offset is the step's start offset.
func (s *PlanStep) Offset() (time.Duration, error) {
	if s.Start == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s.Start)
	if err != nil || d < 0 || d > 24*time.Hour {
		return 0, fault.Invalid("start %q is not a duration from 0s to 24h", s.Start)
	}
	return d, nil
}

// Validate checks a plan as a whole and each step as a Fault.
func (p *FaultPlan) Validate() error {
	switch n := len(p.Spec.Steps); {
	case n == 0:
		return fault.Invalid("spec.steps: give at least one step")
	case n > MaxPlanSteps:
		return fault.Invalid("spec.steps: at most %d steps, got %d", MaxPlanSteps, n)
	}
	seen := map[string]bool{}
	for i := range p.Spec.Steps {
		s := &p.Spec.Steps[i]
		at := fmt.Sprintf("spec.steps[%d]", i)
		switch {
		case s.Name == "":
			return fault.Invalid("%s.name is missing", at)
		case seen[s.Name]:
			return fault.Invalid("%s.name %q is given twice", at, s.Name)
		case s.Namespace == "":
			return fault.Invalid("%s.namespace is missing", at)
		}
		seen[s.Name] = true
		if _, err := s.Offset(); err != nil {
			return fault.Within(at, err)
		}
		f, _ := p.StepFault(i)
		if _, _, err := f.Spec.Request(); err != nil {
			return fault.Within(at, err)
		}
	}
	return nil
}

// StepFault is a step as the Fault the nodes apply: in the step's
// namespace, named PLAN/STEP (a name no Fault object can have), created
// at the plan's creation plus the step's offset, with the plan's lease and
// annotations and the step's status.
func (p *FaultPlan) StepFault(i int) (*Fault, error) {
	s := p.Spec.Steps[i]
	off, err := s.Offset()
	if err != nil {
		return nil, err
	}
	f := &Fault{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: s.Namespace, Name: p.Name + "/" + s.Name, UID: types.UID(string(p.UID) + "/" + s.Name),
			CreationTimestamp: metav1.NewTime(p.CreationTimestamp.Add(off)), DeletionTimestamp: p.DeletionTimestamp,
			Annotations: p.Annotations,
		},
		Spec: s.Spec,
	}
	f.Spec.Lease = p.Spec.Lease
	for _, st := range p.Status.Steps {
		if st.Name == s.Name {
			f.Status.Nodes = st.Nodes
		}
	}
	return f, nil
}

// PlanOf names the plan and step of a step's Fault (StepFault), ok false
// for a Fault object.
func PlanOf(f *Fault) (plan, step string, ok bool) {
	return strings.Cut(f.Name, "/")
}
