// Package targets turns what users name (a pod selector, a service) into
// the network namespaces faults go to. A Source resolves target sets; the
// containerd and netnsdir packages are the local sources, kube the
// Kubernetes one.
package targets

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// DefaultNamespace is the namespace of a selector that names none.
const DefaultNamespace = "default"

// Target is one resolved target.
type Target struct {
	Name      string
	Namespace string
	Node      string
	Labels    map[string]string
	// Where the node finds the target: a netns path, or a PID.
	NetnsPath string
	PID       int
	IP        string
	// Port is the target port a fault uses when it names none (0: the
	// caller's default).
	Port int
	// ID is the source's own name for the target (e.g. containerd
	// namespace/container ID), for Terminate.
	ID string
	// Source names the source that produced the target, for Terminate.
	Source string
	// UID is a Kubernetes pod's UID: the node then finds the target by
	// pod, not by netns path or PID.
	UID string
	// Ports names the target's ports, for faults that name a port by name
	// or name none.
	Ports Ports
}

// Ports are a target's named ports and, for a target behind a service,
// the service's ports.
type Ports struct {
	Named map[string]int // container port name → number
	// Service is set when the target was found through a service.
	Service *ServicePorts
}

// ServicePorts are a service's ports.
type ServicePorts struct {
	Name  string // the service's name, for messages
	Ports []ServicePort
}

// ServicePort maps a service port to the target's port: TargetPort, or the
// container port named TargetPortName, or Port when both are empty.
type ServicePort struct {
	Name           string
	Port           int
	TargetPort     int
	TargetPortName string
}

// ResolvePort picks the port a fault goes to, as xk6-disruptor did: port
// (a number) or name (a port name) select a service port for a target
// behind a service, mapped to its target port and then to the container
// port; for a pod they name a container port, and a number need not be
// declared. With neither, a service's only port is used (an error if it has
// several), else the target's own default, else def.
func (t Target) ResolvePort(port int, name string, def int) (int, error) {
	if port < 0 || port > 65535 {
		return 0, invalid("port must be in 1-65535, got %d", port)
	}
	if svc := t.Ports.Service; svc != nil {
		var sp *ServicePort
		for i := range svc.Ports {
			p := &svc.Ports[i]
			if (port != 0 && p.Port == port) || (port == 0 && name != "" && p.Name == name) {
				sp = p
			}
		}
		switch {
		case sp != nil:
		case port != 0:
			return 0, invalid("service %q does not expose port %d", svc.Name, port)
		case name != "":
			return 0, invalid("service %q has no port named %q", svc.Name, name)
		case len(svc.Ports) == 1:
			sp = &svc.Ports[0]
		default:
			return 0, invalid("no port selected and service exposes more than one service")
		}
		switch {
		case sp.TargetPortName != "":
			return t.namedPort(sp.TargetPortName)
		case sp.TargetPort != 0:
			return sp.TargetPort, nil
		}
		return sp.Port, nil
	}
	switch {
	case port != 0:
		return port, nil
	case name != "":
		return t.namedPort(name)
	case t.Port != 0:
		return t.Port, nil
	}
	return def, nil
}

func (t Target) namedPort(name string) (int, error) {
	if n, ok := t.Ports.Named[name]; ok {
		return n, nil
	}
	return 0, invalid("pod %q does not export port %q", t.Name, name)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errdefs.ErrInvalidArgument}, args...)...)
}

// Ref is namespace/name.
func (t Target) Ref() string { return t.Namespace + "/" + t.Name }

// Skipped is a target that matched but cannot take a fault.
type Skipped struct {
	Name   string
	Reason string
}

// Selector is a pod selector: every Select label, none of Exclude.
type Selector struct {
	Namespace string
	Select    map[string]string
	Exclude   map[string]string
}

// Service names a service: the targets behind it.
type Service struct {
	Name      string
	Namespace string
}

// Set is what to resolve: exactly one of Pods and Service.
type Set struct {
	Pods    *Selector
	Service *Service
}

// Namespace returns the set's namespace, defaulted.
func (s Set) Namespace() string {
	ns := ""
	if s.Pods != nil {
		ns = s.Pods.Namespace
	} else if s.Service != nil {
		ns = s.Service.Namespace
	}
	if ns == "" {
		return DefaultNamespace
	}
	return ns
}

// String describes the set in error messages, as xk6-disruptor does.
func (s Set) String() string {
	if s.Service != nil {
		return fmt.Sprintf("service %q in namespace %q", s.Service.Name, s.Namespace())
	}
	return fmt.Sprintf("pods including(%s), excluding(%s) in namespace %q", labelString(s.Pods.Select), labelString(s.Pods.Exclude), s.Namespace())
}

func labelString(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ", ")
}

// Matches reports whether labels satisfy the selector (namespace aside).
func (s *Selector) Matches(labels map[string]string) bool {
	for k, v := range s.Select {
		if labels[k] != v {
			return false
		}
	}
	for k, v := range s.Exclude {
		if got, ok := labels[k]; ok && got == v {
			return false
		}
	}
	return true
}

// Source resolves target sets and terminates targets.
type Source interface {
	// Resolve returns the usable targets of the set, sorted by name, and
	// the matching ones it skipped. No match is not an error here.
	Resolve(ctx context.Context, set Set) ([]Target, []Skipped, error)
	// Terminate stops a target gracefully, waiting up to timeout.
	Terminate(ctx context.Context, t Target, timeout time.Duration) error
}

// Multi combines sources: targets of all of them, terminated by the one
// that produced each.
type Multi map[string]Source

// Resolve resolves the set in every source.
func (m Multi) Resolve(ctx context.Context, set Set) ([]Target, []Skipped, error) {
	var all []Target
	var skipped []Skipped
	for _, name := range slices.Sorted(maps.Keys(m)) {
		ts, sk, err := m[name].Resolve(ctx, set)
		if err != nil {
			return nil, nil, fmt.Errorf("%s targets: %w", name, err)
		}
		for i := range ts {
			ts[i].Source = name
		}
		all = append(all, ts...)
		skipped = append(skipped, sk...)
	}
	SortTargets(all)
	return all, skipped, nil
}

// Terminate asks the source that produced t.
func (m Multi) Terminate(ctx context.Context, t Target, timeout time.Duration) error {
	s, ok := m[t.Source]
	if !ok {
		return fmt.Errorf("target %s: unknown source %q", t.Ref(), t.Source)
	}
	return s.Terminate(ctx, t, timeout)
}

// SortTargets orders targets by namespace and name.
func SortTargets(ts []Target) {
	sort.Slice(ts, func(i, j int) bool { return ts[i].Ref() < ts[j].Ref() })
}
