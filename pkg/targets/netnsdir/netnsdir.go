// Package netnsdir is a target source for bare processes: the named
// network namespaces of `ip netns` (files in /run/netns). Each is a target
// whose labels are faultline.netns=NAME plus those of an optional file
// /run/faultline/netns-labels/NAME (one key=value a line). The labels mean
// what they mean for containerd containers (targets.LabelIdentity): its
// namespace is faultline.namespace (default "default"), its name
// faultline.name (default the file name), its service faultline.service,
// and faultline.port is the port a fault uses when it names none.
package netnsdir

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/faultline-dev/faultline/pkg/targets"
)

// Defaults of Source's fields.
const (
	DefaultDir       = "/run/netns"
	DefaultLabelsDir = "/run/faultline/netns-labels"
)

// Source lists named network namespaces.
type Source struct {
	Dir       string // DefaultDir when empty
	LabelsDir string // DefaultLabelsDir when empty
	Node      string // "local" when empty
}

func (s *Source) dir() string {
	if s.Dir == "" {
		return DefaultDir
	}
	return s.Dir
}

// String describes the source in messages.
func (s *Source) String() string { return "named netns in " + s.dir() }

// Resolve returns the namespaces the set matches; without the directory
// (no namespace was ever named here) it fails with targets.ErrAbsent.
func (s *Source) Resolve(_ context.Context, set targets.Set) (targets.Resolution, error) {
	var res targets.Resolution
	dir := s.dir()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("%w: no such directory", targets.ErrAbsent)
	}
	if err != nil {
		return res, fmt.Errorf("list %s: %w", dir, err)
	}
	node := s.Node
	if node == "" {
		node = "local"
	}
	for _, e := range ents {
		file := e.Name()
		labels, err := s.labels(file)
		if err != nil {
			return res, err
		}
		labels["faultline.netns"] = file
		id, err := targets.LabelIdentity(labels, targets.Identity{Name: file})
		if !set.Matches(id, labels) {
			continue
		}
		if err != nil {
			res.Skipped = append(res.Skipped, targets.Skipped{Name: id.Name, Reason: err.Error()})
			continue
		}
		res.Targets = append(res.Targets, targets.Target{
			Name: id.Name, Namespace: id.Namespace, Node: node, Labels: labels,
			NetnsPath: filepath.Join(dir, file), Port: id.Port, ID: file,
		})
	}
	targets.SortTargets(res.Targets)
	return res, nil
}

// labels reads the namespace's label file; none means no labels.
func (s *Source) labels(name string) (map[string]string, error) {
	labels := map[string]string{}
	dir := s.LabelsDir
	if dir == "" {
		dir = DefaultLabelsDir
	}
	f, err := os.Open(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return labels, nil
	}
	if err != nil {
		return nil, fmt.Errorf("labels of netns %s: %w", name, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && k != "" {
			labels[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return labels, sc.Err()
}

// Terminate is not possible: a named namespace has no process of its own.
func (s *Source) Terminate(context.Context, targets.Target, time.Duration) error {
	return fmt.Errorf("%w: named network namespaces cannot be terminated", errdefs.ErrFailedPrecondition)
}
