// Package kube is the Kubernetes target source: pods chosen by label
// selector or behind a Service, through the API server.
package kube

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/faultline-dev/faultline/pkg/fault"
	"github.com/faultline-dev/faultline/pkg/targets"
)

// Source resolves target sets to running, ready pods.
type Source struct {
	Client kubernetes.Interface
}

// Resolve lists the set's pods. Pods that are pending, terminating or not
// ready are skipped, with the reason.
func (s *Source) Resolve(ctx context.Context, set targets.Set) (targets.Resolution, error) {
	ns := set.Namespace()
	var sel labels.Selector
	var svcPorts *targets.ServicePorts
	if set.Service != nil {
		svc, err := s.Client.CoreV1().Services(ns).Get(ctx, set.Service.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return targets.Resolution{}, fmt.Errorf("%w: service %q not found in namespace %q", errdefs.ErrNotFound, set.Service.Name, ns)
		} else if err != nil {
			return targets.Resolution{}, apiError(err, "get service "+ns+"/"+set.Service.Name)
		}
		if len(svc.Spec.Selector) == 0 {
			return targets.Resolution{}, fmt.Errorf("%w: service %q has no pod selector", errdefs.ErrFailedPrecondition, svc.Name)
		}
		sel = labels.SelectorFromSet(svc.Spec.Selector)
		svcPorts = servicePorts(svc)
	} else {
		var err error
		if sel, err = podSelector(set.Pods); err != nil {
			return targets.Resolution{}, err
		}
	}
	list, err := s.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return targets.Resolution{}, apiError(err, fmt.Sprintf("list pods in %s (%s)", ns, sel))
	}
	var out []targets.Target
	var skipped []targets.Skipped
	for i := range list.Items {
		p := &list.Items[i]
		if why := unusable(p); why != "" {
			skipped = append(skipped, targets.Skipped{Name: p.Name, Reason: why})
			continue
		}
		out = append(out, targets.Target{
			Name: p.Name, Namespace: p.Namespace, Node: p.Spec.NodeName, Labels: p.Labels,
			IP: p.Status.PodIP, UID: string(p.UID), ID: string(p.UID),
			Ports: targets.Ports{Named: namedPorts(p), Service: svcPorts},
		})
	}
	targets.SortTargets(out)
	sort.Slice(skipped, func(i, j int) bool { return skipped[i].Name < skipped[j].Name })
	return targets.Resolution{Targets: out, Skipped: skipped}, nil
}

// podSelector is xk6-disruptor's selector: every select label, and
// key!=value for every exclude label (pods without the key match).
func podSelector(p *targets.Selector) (labels.Selector, error) {
	sel, err := labels.ValidatedSelectorFromSet(p.Select)
	if err != nil {
		return nil, fault.Invalid("select: %v", err)
	}
	for k, v := range p.Exclude {
		r, err := labels.NewRequirement(k, selection.NotEquals, []string{v})
		if err != nil {
			return nil, fault.Invalid("exclude %s=%s: %v", k, v, err)
		}
		sel = sel.Add(*r)
	}
	return sel, nil
}

// unusable says why a pod cannot take a fault, or "".
func unusable(p *corev1.Pod) string {
	switch {
	case p.DeletionTimestamp != nil:
		return "terminating"
	case p.Spec.NodeName == "":
		return "pending: not scheduled"
	case p.Status.Phase != corev1.PodRunning:
		return "pending: phase " + string(p.Status.Phase)
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return ""
		}
	}
	return "not ready"
}

func namedPorts(p *corev1.Pod) map[string]int {
	named := map[string]int{}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name != "" {
				named[cp.Name] = int(cp.ContainerPort)
			}
		}
	}
	return named
}

func servicePorts(svc *corev1.Service) *targets.ServicePorts {
	sp := &targets.ServicePorts{Name: svc.Name}
	for _, p := range svc.Spec.Ports {
		port := targets.ServicePort{Name: p.Name, Port: int(p.Port)}
		if p.TargetPort.Type == intstr.String {
			port.TargetPortName = p.TargetPort.StrVal
		} else {
			port.TargetPort = p.TargetPort.IntValue()
		}
		sp.Ports = append(sp.Ports, port)
	}
	return sp
}

// Terminate deletes the pod gracefully and waits until it is gone.
func (s *Source) Terminate(ctx context.Context, t targets.Target, timeout time.Duration) error {
	pods := s.Client.CoreV1().Pods(t.Namespace)
	var pre metav1.Preconditions
	if t.UID != "" {
		uid := types.UID(t.UID)
		pre.UID = &uid
	}
	err := pods.Delete(ctx, t.Name, metav1.DeleteOptions{Preconditions: &pre})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // already gone (or replaced)
	} else if err != nil {
		return apiError(err, "delete pod "+t.Ref())
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		p, err := pods.Get(ctx, t.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err), err == nil && string(p.UID) != t.UID:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("%w: pod %s still terminating after %s", context.DeadlineExceeded, t.Ref(), timeout)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// apiError gives an API server error the errdefs class the gateway maps to
// a gRPC code: a user without the RBAC permission gets PermissionDenied.
func apiError(err error, what string) error {
	switch {
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		return fmt.Errorf("%w: %s: %v", errdefs.ErrPermissionDenied, what, err)
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%w: %s: %v", errdefs.ErrNotFound, what, err)
	}
	return fmt.Errorf("%w: %s: %v", errdefs.ErrUnavailable, what, err)
}
