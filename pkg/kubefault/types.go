// Package kubefault is faults as Kubernetes objects: the namespaced Fault
// resource (faultline.dev/v1alpha1), its CRD schema derived from the one
// fault model's protobuf, the conversion of a Fault to the node API's
// requests, and the API server client (Cluster, API); nodecontroller is
// what each faultlined runs to apply the Faults that match pods of its
// node. This package imports nothing of the engine, so the CLI and the
// gateway can use it on any platform.
//
// Authorization is Kubernetes RBAC on Faults in the target namespace: a
// Fault only ever targets pods of its own namespace, so whoever may create
// Faults in a namespace may fault that namespace and no other.
package kubefault

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The resource's names.
const (
	Group    = "faultline.dev"
	Version  = "v1alpha1"
	Kind     = "Fault"
	Resource = "faults"

	// OptInLabel on a namespace lets Faults act in it; the value must be
	// OptInValue.
	OptInLabel = "faultline.dev/faults"
	OptInValue = "enabled"
)

// GVR is the Fault resource.
var GVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: Resource}

// Fault is a fault on pods of its own namespace.
type Fault struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              Spec   `json:"spec"`
	Status            Status `json:"status,omitempty"`
}

// Spec is what to fault, where and for how long. It cannot change once
// created.
type Spec struct {
	// Selector picks the target pods in the Fault's namespace; Service
	// picks the pods behind a Service there. One of the two.
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
	Service  string                `json:"service,omitempty"`
	// Duration is a Go duration ("30s", "5m"), 1s to 24h, counted from the
	// Fault's creation.
	Duration string `json:"duration"`
	// PortName names a container port (or, with Service, a service port)
	// instead of the fault's port number.
	PortName string `json:"portName,omitempty"`
	// MaxTargets refuses the Fault when more pods match; 0 takes the
	// daemon's limit (--fault-target-limit).
	MaxTargets int `json:"maxTargets,omitempty"`
	// DryRun resolves the targets into status and touches none of them.
	DryRun bool `json:"dryRun,omitempty"`

	// One fault, as the node API's messages in JSON, durations as Go
	// durations: exactly one of these.
	HTTP    map[string]any `json:"http,omitempty"`
	GRPC    map[string]any `json:"grpc,omitempty"`
	TCP     map[string]any `json:"tcp,omitempty"`
	Network map[string]any `json:"network,omitempty"`
}

// Status is what the nodes report, one entry per node, each written by
// that node's faultlined alone (server-side apply with its own field
// manager, so many nodes never overwrite each other).
type Status struct {
	Nodes []NodeStatus `json:"nodes,omitempty"`
}

// Phases of a Fault on one node.
const (
	PhasePending = "Pending" // targets being set up
	PhaseActive  = "Active"
	PhaseEnded   = "Ended"
	PhaseFailed  = "Failed" // refused: Message says why, naming the field
	PhaseDryRun  = "DryRun" // targets resolved, none touched
)

// NodeStatus is the Fault on one node.
type NodeStatus struct {
	Node    string `json:"node"`
	Phase   string `json:"phase"`
	Message string `json:"message,omitempty"`
	// EndReason: expired, deleted, target-deleted, shutdown.
	EndReason string         `json:"endReason,omitempty"`
	StartTime *metav1.Time   `json:"startTime,omitempty"`
	EndTime   *metav1.Time   `json:"endTime,omitempty"`
	Targets   []TargetStatus `json:"targets,omitempty"`
}

// TargetStatus is one pod's fault.
type TargetStatus struct {
	Pod   string `json:"pod"`
	State string `json:"state"` // starting, active, ended, failed, dry-run
	// ID is the node's fault id (faultline list, metrics).
	ID        string            `json:"id,omitempty"`
	EndReason string            `json:"endReason,omitempty"`
	Message   string            `json:"message,omitempty"`
	Counters  map[string]uint64 `json:"counters,omitempty"`
}
