package podnet

import (
	"context"
	"fmt"
	"sync"
	"time"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// Containerd finds sandboxes through containerd's gRPC API (the containers
// and tasks services only: faultlined stays small), as the CRI plugin
// labels them. Common sockets: /run/containerd/containerd.sock
// (containerd, kubeadm, kind), /run/k3s/containerd/containerd.sock (k3s),
// /var/snap/microk8s/common/run/containerd.sock (MicroK8s).
type Containerd struct {
	Address   string // socket path, absolute
	Namespace string // containerd namespace of the CRI plugin; "k8s.io" when empty

	once sync.Once
	conn *grpc.ClientConn
	err  error

	mu        sync.Mutex
	sandboxes map[string][]string // pod UID → sandbox container IDs
	listed    time.Time           // when sandboxes was listed
}

func (c *Containerd) dial() (*grpc.ClientConn, error) {
	c.once.Do(func() {
		c.conn, c.err = grpc.NewClient("unix://"+c.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if c.err != nil {
			c.err = fmt.Errorf("connect to containerd at %s: %w", c.Address, c.err)
		}
	})
	return c.conn, c.err
}

// withNamespace sets containerd's namespace header on ctx.
func (c *Containerd) withNamespace(ctx context.Context) context.Context {
	ns := c.Namespace
	if ns == "" {
		ns = "k8s.io"
	}
	return metadata.AppendToOutgoingContext(ctx, "containerd-namespace", ns)
}

// Check reports whether containerd answers, for readiness.
func (c *Containerd) Check(ctx context.Context) error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("containerd at %s: %w", c.Address, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("containerd at %s: %s", c.Address, resp.GetStatus())
	}
	return nil
}

// SandboxPID returns the PID of the pod's running sandbox task. A pod can
// have an old, stopped sandbox beside the current one; only a running one
// counts. Sandbox IDs are cached by pod UID and refreshed with one List of
// every sandbox on a miss, so that a fault on 30 pods costs containerd one
// List, not 30; the task is asked for every time, so a cached ID never
// yields a stale PID.
func (c *Containerd) SandboxPID(ctx context.Context, uid string) (int, error) {
	conn, err := c.dial()
	if err != nil {
		return 0, err
	}
	ctx = c.withNamespace(ctx)
	c.mu.Lock()
	ids := c.sandboxes[uid]
	c.mu.Unlock()
	if pid, ok := c.runningTask(ctx, conn, ids); ok {
		return pid, nil
	}
	if ids, err = c.refresh(ctx, conn, uid); err != nil {
		return 0, err
	}
	if pid, ok := c.runningTask(ctx, conn, ids); ok {
		return pid, nil
	}
	return 0, fmt.Errorf("%w: no running sandbox for pod uid %s in containerd", errdefs.ErrNotFound, uid)
}

// refresh lists every sandbox and returns the pod's, unless a concurrent
// caller's list already found it.
func (c *Containerd) refresh(ctx context.Context, conn *grpc.ClientConn, uid string) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ids, ok := c.sandboxes[uid]; ok && time.Since(c.listed) < time.Second {
		return ids, nil // a concurrent caller just listed
	}
	list, err := containersapi.NewContainersClient(conn).List(ctx, &containersapi.ListContainersRequest{
		Filters: []string{`labels."io.cri-containerd.kind"==sandbox`},
	})
	if err != nil {
		return nil, fmt.Errorf("list sandboxes in containerd: %w", err)
	}
	c.sandboxes, c.listed = map[string][]string{}, time.Now()
	for _, ctr := range list.GetContainers() {
		u := ctr.GetLabels()["io.kubernetes.pod.uid"]
		c.sandboxes[u] = append(c.sandboxes[u], ctr.GetID())
	}
	return c.sandboxes[uid], nil
}

func (c *Containerd) runningTask(ctx context.Context, conn *grpc.ClientConn, ids []string) (int, bool) {
	tasks := tasksapi.NewTasksClient(conn)
	for _, id := range ids {
		t, err := tasks.Get(ctx, &tasksapi.GetRequest{ContainerID: id})
		if err == nil && t.GetProcess().GetStatus() == task.Status_RUNNING {
			return int(t.GetProcess().GetPid()), true
		}
	}
	return 0, false
}

// Close closes the connection.
func (c *Containerd) Close() error {
	if c.conn != nil {
		return c.conn.Close()
	}
	return nil
}
