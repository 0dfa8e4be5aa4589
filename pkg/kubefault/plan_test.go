package kubefault

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func testPlan() *FaultPlan {
	return &FaultPlan{ObjectMeta: metav1.ObjectMeta{Name: "incident", UID: "p-uid", CreationTimestamp: metav1.NewTime(time.Unix(1000, 0))},
		Spec: PlanSpec{Lease: "5s", Steps: []PlanStep{
			{Name: "catalog-slow", Namespace: "shop", Spec: Spec{Service: "catalog", Duration: "40s", HTTP: map[string]any{"port": 8080, "averageDelay": "900ms"}}},
			{Name: "payments-flaky", Namespace: "payments", Start: "10s", Spec: Spec{Service: "payments", Duration: "20s", HTTP: map[string]any{"port": 8080, "errorRate": 0.25, "errorCode": 503}}},
		}},
		Status: PlanStatus{Steps: []StepStatus{{Name: "payments-flaky", Nodes: []NodeStatus{{Node: "n1", Phase: PhaseActive}}}}},
	}
}

// TestStepFault: a step is the Fault of its namespace, created at its
// offset, with the plan's lease and the step's status.
func TestStepFault(t *testing.T) {
	p := testPlan()
	f, err := p.StepFault(1)
	if err != nil {
		t.Fatal(err)
	}
	if f.Namespace != "payments" || f.Name != "incident/payments-flaky" || f.UID != "p-uid/payments-flaky" || f.Spec.Lease != "5s" ||
		!f.CreationTimestamp.Equal(&metav1.Time{Time: time.Unix(1010, 0)}) || len(f.Status.Nodes) != 1 {
		t.Errorf("step fault %+v", f)
	}
	if plan, step, ok := PlanOf(f); !ok || plan != "incident" || step != "payments-flaky" {
		t.Errorf("PlanOf: %q %q %v", plan, step, ok)
	}
	if FaultRef(f).Kind != PlanKind || FaultRef(f).UID != "p-uid" {
		t.Errorf("FaultRef %+v", FaultRef(f))
	}
}

func TestPlanValidate(t *testing.T) {
	if err := testPlan().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		edit func(*FaultPlan)
		want string
	}{
		{func(p *FaultPlan) { p.Spec.Steps = nil }, "spec.steps: give at least one step"},
		{func(p *FaultPlan) { p.Spec.Steps[1].Name = "catalog-slow" }, `spec.steps[1].name "catalog-slow" is given twice`},
		{func(p *FaultPlan) { p.Spec.Steps[0].Namespace = "" }, "spec.steps[0].namespace is missing"},
		{func(p *FaultPlan) { p.Spec.Steps[1].Start = "-5s" }, `spec.steps[1]: start "-5s" is not a duration from 0s to 24h`},
		{func(p *FaultPlan) { p.Spec.Steps[1].HTTP["errorRate"] = 3 }, "spec.steps[1]: spec.http: errorRate must be in the range [0, 1], got 3"},
	} {
		p := testPlan()
		tc.edit(p)
		if err := p.Validate(); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v, want %q", err, tc.want)
		}
	}
}
