// Package netnsdir is a target source for bare processes: the named
// network namespaces of `ip netns` (files in /run/netns). Each is a target
// in namespace "default" named after the file, with the label
// faultline.netns=NAME, plus the labels of an optional file
// /run/faultline/netns-labels/NAME (one key=value a line).
package netnsdir

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/faultline-dev/faultline/pkg/targets"
)

// Source lists named network namespaces.
type Source struct {
	Dir       string // default /run/netns
	LabelsDir string // default /run/faultline/netns-labels
	Node      string // default "local"
}

// Resolve returns the namespaces the set matches. Services are not a
// concept here: a service set matches the label faultline.service.
func (s *Source) Resolve(_ context.Context, set targets.Set) ([]targets.Target, []targets.Skipped, error) {
	dir := s.Dir
	if dir == "" {
		dir = "/run/netns"
	}
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var out []targets.Target
	for _, e := range ents {
		name := e.Name()
		labels := s.labels(name)
		labels["faultline.netns"] = name
		ns := labels["faultline.namespace"]
		if ns == "" {
			ns = targets.DefaultNamespace
		}
		if ns != set.Namespace() {
			continue
		}
		if set.Pods != nil && !set.Pods.Matches(labels) {
			continue
		}
		if set.Service != nil && labels["faultline.service"] != set.Service.Name {
			continue
		}
		node := s.Node
		if node == "" {
			node = "local"
		}
		out = append(out, targets.Target{Name: name, Namespace: ns, Node: node, Labels: labels, NetnsPath: filepath.Join(dir, name)})
	}
	targets.SortTargets(out)
	return out, nil, nil
}

func (s *Source) labels(name string) map[string]string {
	labels := map[string]string{}
	dir := s.LabelsDir
	if dir == "" {
		dir = "/run/faultline/netns-labels"
	}
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return labels
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok && k != "" {
			labels[k] = v
		}
	}
	return labels
}

// Terminate is not possible: a named namespace has no process of its own.
func (s *Source) Terminate(context.Context, targets.Target, time.Duration) error {
	return fmt.Errorf("%w: named network namespaces cannot be terminated", errdefs.ErrFailedPrecondition)
}
