package podnet

import (
	"context"
	"fmt"
	"sync"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/errdefs"
)

// Containerd finds sandboxes through containerd's API, as the CRI plugin
// labels them. Common sockets: /run/containerd/containerd.sock
// (containerd, kubeadm, kind), /run/k3s/containerd/containerd.sock (k3s),
// /var/snap/microk8s/common/run/containerd.sock (MicroK8s).
type Containerd struct {
	Address   string // socket path, absolute
	Namespace string // containerd namespace of the CRI plugin; "k8s.io" when empty

	once   sync.Once
	client *containerd.Client
	err    error
}

func (c *Containerd) conn() (*containerd.Client, error) {
	c.once.Do(func() {
		ns := c.Namespace
		if ns == "" {
			ns = "k8s.io"
		}
		c.client, c.err = containerd.New(c.Address, containerd.WithDefaultNamespace(ns), containerd.WithTimeout(5*time.Second))
		if c.err != nil {
			c.err = fmt.Errorf("connect to containerd at %s: %w", c.Address, c.err)
		}
	})
	return c.client, c.err
}

// Check reports whether containerd answers, for readiness.
func (c *Containerd) Check(ctx context.Context) error {
	client, err := c.conn()
	if err != nil {
		return err
	}
	if _, err := client.Version(ctx); err != nil {
		return fmt.Errorf("containerd at %s: %w", c.Address, err)
	}
	return nil
}

// SandboxPID returns the PID of the pod's running sandbox task. A pod can
// have an old, stopped sandbox beside the current one; only a running one
// counts.
func (c *Containerd) SandboxPID(ctx context.Context, uid string) (int, error) {
	client, err := c.conn()
	if err != nil {
		return 0, err
	}
	cs, err := client.Containers(ctx, fmt.Sprintf(`labels."io.kubernetes.pod.uid"==%q,labels."io.cri-containerd.kind"==sandbox`, uid))
	if err != nil {
		return 0, fmt.Errorf("list sandboxes: %w", err)
	}
	for _, ctr := range cs {
		task, err := ctr.Task(ctx, nil)
		if err != nil {
			continue
		}
		st, err := task.Status(ctx)
		if err != nil || st.Status != containerd.Running {
			continue
		}
		return int(task.Pid()), nil
	}
	return 0, fmt.Errorf("%w: no running sandbox for pod uid %s in containerd", errdefs.ErrNotFound, uid)
}

// Close closes the connection.
func (c *Containerd) Close() error {
	if c.client != nil {
		return c.client.Close()
	}
	return nil
}
