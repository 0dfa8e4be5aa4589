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

	// LeaseAnnotation is renewed by a Fault's holder (the gateway) while
	// it lives: each change renews the lease (spec.lease), whatever the
	// value (the gateway writes the time). The nodes time the lease from
	// when they see each change, so clocks need not agree.
	LeaseAnnotation = "faultline.dev/lease-renewed"
	// RefreshAnnotation asks the nodes for their live counters: each node
	// with the Fault active writes its status entry with the counters of
	// now and Refreshed set to the annotation's value.
	RefreshAnnotation = "faultline.dev/status-requested"
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
	// Count takes only some of the matching pods: a number ("3") or a
	// share ("50%", at least one pod), chosen by the Fault's UID so that
	// every node picks the same ones.
	Count string `json:"count,omitempty"`
	// Lease, a Go duration from 1s to 1h, ends the fault on every target
	// when LeaseAnnotation has not changed for that long: the holder of a
	// leased Fault renews it while it wants the fault, and when the holder
	// dies its faults end.
	Lease string `json:"lease,omitempty"`

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

// End reasons of a Fault on a node beyond the engine's (expired,
// target-deleted).
const (
	// EndLeaseExpired: the holder of a leased Fault stopped renewing it.
	EndLeaseExpired = "lease-expired"
	// EndDaemonRestarted: the node's faultlined restarted mid-fault; its
	// faults ended when it stopped and were not started again.
	EndDaemonRestarted = "daemon-restarted"
)

// NodeStatus is the Fault on one node.
type NodeStatus struct {
	Node    string `json:"node"`
	Phase   string `json:"phase"`
	Message string `json:"message,omitempty"`
	// EndReason: expired, lease-expired, daemon-restarted,
	// target-deleted; a deleted Fault has no status left to say so.
	EndReason string `json:"endReason,omitempty"`
	// Refreshed is the RefreshAnnotation value the counters answer.
	Refreshed string         `json:"refreshed,omitempty"`
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
