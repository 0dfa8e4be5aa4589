// Package containerd is the local target source: containers in a
// containerd, each resolved through its running task's PID to its network
// namespace.
//
// Labels: a container's labels are its labels, and the faultline.* labels
// mean what they mean for named network namespaces (targets.LabelIdentity).
// Its namespace is faultline.namespace, else com.docker.compose.project
// (compose, nerdctl compose), else the containerd namespace it lives in.
// Its name is faultline.name, else nerdctl/name, else the container ID. A
// service {name, namespace} matches the containers whose faultline.service
// (else com.docker.compose.service) label is name. faultline.port is the
// port a fault uses when it names none.
//
// Without a socket file at Address, the source is absent
// (targets.ErrAbsent); a socket that refuses connections is an error at
// once, with no timeout.
package containerd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"

	"github.com/faultline-dev/faultline/pkg/targets"
)

// DefaultAddress is containerd's usual socket.
const DefaultAddress = "/run/containerd/containerd.sock"

// Source lists containers of one containerd.
type Source struct {
	Address    string   // containerd socket; DefaultAddress when empty
	Namespaces []string // containerd namespaces to look in; all when empty
	Node       string   // the node name targets get; "local" when empty

	mu     sync.Mutex
	client *containerd.Client
}

func (s *Source) address() string {
	if s.Address == "" {
		return DefaultAddress
	}
	return s.Address
}

// String describes the source in messages.
func (s *Source) String() string { return "containerd at " + s.address() }

func (s *Source) conn() (*containerd.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		return s.client, nil
	}
	addr := s.address()
	if _, err := os.Stat(addr); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: no socket file", targets.ErrAbsent)
	}
	// A stale socket refuses at once; containerd.New would retry until its
	// timeout instead.
	probe, err := net.DialTimeout("unix", addr, time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect to containerd: %w", err)
	}
	probe.Close()
	c, err := containerd.New(addr, containerd.WithTimeout(3*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", addr, err)
	}
	s.client = c
	return c, nil
}

// Close closes the connection to containerd.
func (s *Source) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		return nil
	}
	err := s.client.Close()
	s.client = nil
	return err
}

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// Resolve returns the running containers the set matches.
func (s *Source) Resolve(ctx context.Context, set targets.Set) (targets.Resolution, error) {
	var res targets.Resolution
	client, err := s.conn()
	if err != nil {
		return res, err
	}
	nss := s.Namespaces
	if len(nss) == 0 {
		if nss, err = client.NamespaceService().List(ctx); err != nil {
			return res, fmt.Errorf("list containerd namespaces: %w", err)
		}
	}
	node := first(s.Node, "local")
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		cs, err := client.Containers(nctx)
		if err != nil {
			return res, fmt.Errorf("list containers in %s: %w", ns, err)
		}
		for _, c := range cs {
			info, err := c.Info(nctx, containerd.WithoutRefreshedMetadata)
			if err != nil {
				continue // removed meanwhile
			}
			labels := info.Labels
			if labels == nil {
				labels = map[string]string{}
			}
			id, err := targets.LabelIdentity(labels, targets.Identity{
				Namespace: first(labels["com.docker.compose.project"], ns),
				Name:      first(labels["nerdctl/name"], c.ID()),
				Service:   labels["com.docker.compose.service"],
			})
			if !set.Matches(id, labels) {
				continue
			}
			if err != nil {
				res.Skipped = append(res.Skipped, targets.Skipped{Name: id.Name, Reason: err.Error()})
				continue
			}
			task, err := c.Task(nctx, nil)
			if err != nil {
				res.Skipped = append(res.Skipped, targets.Skipped{Name: id.Name, Reason: "not running"})
				continue
			}
			st, err := task.Status(nctx)
			if err != nil || st.Status != containerd.Running {
				res.Skipped = append(res.Skipped, targets.Skipped{Name: id.Name, Reason: fmt.Sprintf("task %s", st.Status)})
				continue
			}
			res.Targets = append(res.Targets, targets.Target{
				Name: id.Name, Namespace: id.Namespace, Node: node, Labels: labels,
				PID: int(task.Pid()), IP: addressOf(int(task.Pid())), Port: id.Port, ID: ns + "/" + c.ID(),
			})
		}
	}
	targets.SortTargets(res.Targets)
	return res, nil
}

// Terminate sends the container's task SIGTERM and waits up to timeout for
// it to exit; then it is killed, and the call fails.
func (s *Source) Terminate(ctx context.Context, t targets.Target, timeout time.Duration) error {
	client, err := s.conn()
	if err != nil {
		return err
	}
	ns, id, _ := strings.Cut(t.ID, "/")
	nctx := namespaces.WithNamespace(ctx, ns)
	c, err := client.LoadContainer(nctx, id)
	if err != nil {
		return fmt.Errorf("load container %s: %w", t.ID, err)
	}
	task, err := c.Task(nctx, nil)
	if err != nil {
		return fmt.Errorf("container %s has no task: %w", t.Ref(), err)
	}
	exited, err := task.Wait(nctx)
	if err != nil {
		return fmt.Errorf("wait for %s: %w", t.Ref(), err)
	}
	if err := task.Kill(nctx, syscall.SIGTERM); err != nil {
		return fmt.Errorf("terminate %s: %w", t.Ref(), err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-exited:
	case <-timer.C:
		_ = task.Kill(nctx, syscall.SIGKILL)
		<-exited
		_, _ = task.Delete(nctx)
		return fmt.Errorf("pod %q not terminated after %s: killed", t.Ref(), timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
	_, err = task.Delete(nctx)
	return err
}
