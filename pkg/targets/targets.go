// Package targets turns what users name (a pod selector, a service) into
// the network namespaces faults go to. A Source resolves target sets; the
// containerd and netnsdir packages are the local sources, kube the
// Kubernetes one.
package targets

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/faultline-dev/faultline/pkg/fault"
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
		return 0, fault.Invalid("port must be in 1-65535, got %d", port)
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
			return 0, fault.Invalid("service %q does not expose port %d", svc.Name, port)
		case name != "":
			return 0, fault.Invalid("service %q has no port named %q", svc.Name, name)
		case len(svc.Ports) == 1:
			sp = &svc.Ports[0]
		default:
			return 0, fault.Invalid("no port selected and service exposes more than one service")
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
	return 0, fault.Invalid("pod %q does not export port %q", t.Name, name)
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

// Resolution is what resolving a set found.
type Resolution struct {
	// Targets are the usable targets, sorted by namespace and name.
	Targets []Target
	// Skipped matched but cannot take a fault.
	Skipped []Skipped
	// Sources describe the sources asked, for messages; Notes say which
	// of them had nothing to look at on this machine (ErrAbsent).
	Sources []string
	Notes   []string
}

// ErrAbsent is wrapped by a source whose endpoint does not exist on this
// machine (no containerd socket, no /run/netns): it contributes nothing,
// and that is not an error while another source answers.
var ErrAbsent = errors.New("not on this machine")

// Source resolves target sets and terminates targets.
type Source interface {
	// Resolve returns the usable targets of the set, sorted by name, and
	// the matching ones it skipped. No match is not an error here.
	Resolve(ctx context.Context, set Set) (Resolution, error)
	// Terminate stops a target gracefully, waiting up to timeout.
	Terminate(ctx context.Context, t Target, timeout time.Duration) error
}

// Multi combines the local sources, by name: the targets of all of them,
// terminated by the one that produced each. A source that is absent from
// this machine contributes nothing; one that is there but fails, fails
// the call, named.
type Multi map[string]Source

// Resolve resolves the set in every source.
func (m Multi) Resolve(ctx context.Context, set Set) (Resolution, error) {
	var all Resolution
	for _, name := range slices.Sorted(maps.Keys(m)) {
		src := m[name]
		desc := name
		if d, ok := src.(fmt.Stringer); ok {
			desc = d.String()
		}
		r, err := src.Resolve(ctx, set)
		switch {
		case errors.Is(err, ErrAbsent):
			all.Sources = append(all.Sources, desc+" ("+err.Error()+")")
			all.Notes = append(all.Notes, desc+": "+err.Error())
			continue
		case err != nil:
			return Resolution{}, fmt.Errorf("%s: %w", desc, err)
		}
		all.Sources = append(all.Sources, desc)
		for i := range r.Targets {
			r.Targets[i].Source = name
		}
		all.Targets = append(all.Targets, r.Targets...)
		all.Skipped = append(all.Skipped, r.Skipped...)
	}
	SortTargets(all.Targets)
	return all, nil
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

// The labels every local source reads the same way, whatever else it
// falls back to (README "Targets: selectors and sources").
const (
	LabelNamespace = "faultline.namespace" // the target's namespace
	LabelName      = "faultline.name"      // its name
	LabelService   = "faultline.service"   // the service it is behind
	LabelPort      = "faultline.port"      // the port a fault uses when it names none
)

// Identity is what a local target is called, and its own default port.
type Identity struct {
	Namespace, Name, Service string
	Port                     int // 0: none
}

// LabelIdentity reads an identity from labels: each faultline.* label
// wins over the source's own fallback. A faultline.port that is not a port
// is an error, for the caller to skip the target with.
func LabelIdentity(labels map[string]string, fallback Identity) (Identity, error) {
	id := fallback
	if v := labels[LabelNamespace]; v != "" {
		id.Namespace = v
	}
	if id.Namespace == "" {
		id.Namespace = DefaultNamespace
	}
	if v := labels[LabelName]; v != "" {
		id.Name = v
	}
	if v := labels[LabelService]; v != "" {
		id.Service = v
	}
	if v, ok := labels[LabelPort]; ok {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			return id, fmt.Errorf("label %s=%q is not a port in 1-65535", LabelPort, v)
		}
		id.Port = p
	}
	return id, nil
}

// Matches reports whether a local target with this identity and labels
// belongs to the set: same namespace, and the selector's labels or the
// service's name.
func (s Set) Matches(id Identity, labels map[string]string) bool {
	if id.Namespace != s.Namespace() {
		return false
	}
	if s.Service != nil {
		return id.Service == s.Service.Name
	}
	return s.Pods == nil || s.Pods.Matches(labels)
}

// SampleSize parses a count: a whole number, or a percentage "N%" giving
// max(1, round(total*N/100)).
func SampleSize(count string, total int) (int, error) {
	if pct, ok := strings.CutSuffix(count, "%"); ok {
		v, err := strconv.ParseFloat(pct, 64)
		if err != nil || v < 0 || v > 100 {
			return 0, fault.Invalid("count is not a valid percentage: %s", count)
		}
		return max(1, int(math.Round(float64(total)*v/100))), nil
	}
	n, err := strconv.Atoi(count)
	switch {
	case err != nil:
		return 0, fault.Invalid("count must be a whole number or a percentage such as 50%%, got %q", count)
	case n < 1:
		return 0, fault.Invalid("count must be at least 1, got %d", n)
	case n > total:
		return 0, fmt.Errorf("%w: cannot sample %d pods out of a total of %d", errdefs.ErrFailedPrecondition, n, total)
	}
	return n, nil
}
