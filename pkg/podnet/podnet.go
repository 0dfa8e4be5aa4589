// Package podnet is faultlined's Kubernetes side: it turns a pod named in a
// request into the network namespace of the pod's sandbox on this node,
// through the container runtime, and refuses pods a fault must not touch.
//
// The sandbox (the pause container) holds the pod's network namespace for
// the pod's whole life, so a crash-looping application container does not
// matter: the fault stays on the namespace, not on a container.
package podnet

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"

	"github.com/faultline-dev/faultline/pkg/engine"
)

// Pods looks pods of this node up.
type Pods interface {
	// Pod returns the pod, or false when this node has no such pod.
	Pod(namespace, name string) (*corev1.Pod, bool)
}

// Sandboxes finds a pod's sandbox in the container runtime.
type Sandboxes interface {
	// SandboxPID returns the PID of the running sandbox of the pod with
	// this UID; its /proc/PID/ns/net is the pod's network namespace.
	SandboxPID(ctx context.Context, uid string) (int, error)
}

// Resolver vets pod targets and resolves them to their sandbox's PID. It
// implements nodeapi.TargetResolver.
type Resolver struct {
	Node      string // this node's name, for messages
	Pods      Pods
	Sandboxes Sandboxes
	// Protected namespaces are refused unless AllowProtected is set:
	// kube-system and faultline's own namespace.
	Protected      []string
	AllowProtected bool
}

// ResolveTarget returns t with the PID of its pod's sandbox.
func (r *Resolver) ResolveTarget(ctx context.Context, t engine.Target) (engine.Target, error) {
	p := t.Pod
	if p.Name == "" {
		return t, fmt.Errorf("%w: faultlined runs in Kubernetes mode: target a pod by namespace and name, not %s", errdefs.ErrFailedPrecondition, t)
	}
	if !r.AllowProtected {
		for _, ns := range r.Protected {
			if p.Namespace == ns {
				return t, fmt.Errorf("%w: pod %s/%s: pods in namespace %q are not faulted unless faultlined runs with --allow-protected-namespaces", errdefs.ErrFailedPrecondition, p.Namespace, p.Name, ns)
			}
		}
	}
	pod, ok := r.Pods.Pod(p.Namespace, p.Name)
	switch {
	case !ok:
		return t, fmt.Errorf("%w: pod %s/%s is not on node %s", errdefs.ErrNotFound, p.Namespace, p.Name, r.Node)
	case p.UID != "" && string(pod.UID) != p.UID:
		return t, fmt.Errorf("%w: pod %s/%s was re-created (uid %s, asked for %s)", errdefs.ErrNotFound, p.Namespace, p.Name, pod.UID, p.UID)
	case pod.Spec.HostNetwork:
		return t, fmt.Errorf("%w: pod %s/%s uses the host network: a fault would hit node %s itself", errdefs.ErrFailedPrecondition, p.Namespace, p.Name, r.Node)
	case pod.DeletionTimestamp != nil:
		return t, fmt.Errorf("%w: pod %s/%s is terminating", errdefs.ErrFailedPrecondition, p.Namespace, p.Name)
	}
	pid, err := r.Sandboxes.SandboxPID(ctx, string(pod.UID))
	if err != nil {
		return t, fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	t.Pod.UID = string(pod.UID)
	t.PID = pid
	return t, nil
}

// StaticPods is a Pods double: a fixed set of pods.
type StaticPods []*corev1.Pod

// Pod finds the pod by namespace and name.
func (s StaticPods) Pod(namespace, name string) (*corev1.Pod, bool) {
	for _, p := range s {
		if p.Namespace == namespace && p.Name == name {
			return p, true
		}
	}
	return nil, false
}

// StaticSandboxes is a Sandboxes double: pod UID to PID.
type StaticSandboxes map[string]int

// SandboxPID looks the UID up.
func (s StaticSandboxes) SandboxPID(_ context.Context, uid string) (int, error) {
	pid, ok := s[uid]
	if !ok {
		return 0, fmt.Errorf("%w: no running sandbox for pod uid %s", errdefs.ErrNotFound, uid)
	}
	return pid, nil
}
