package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// PortForward reaches a node's faultlined through an API-server port-forward
// to the faultlined pod on that node. faultlined listens on loopback inside
// its own pod, so the right to inject is exactly the RBAC right to
// pods/portforward on faultline's pods. One tunnel per node serves every
// target of a fault on that node; tunnels to different nodes open at the
// same time; a tunnel closes shortly after the last user releases it.
type PortForward struct {
	Config    *rest.Config
	Client    kubernetes.Interface
	Namespace string // faultline's namespace
	Selector  string // label selector of the faultlined pods
	Port      int    // faultlined's loopback port in its pod
	// Linger keeps an unused tunnel open for a moment, so that calls in a
	// row (a fault, then its revocation) share it.
	Linger time.Duration
	Logger *slog.Logger

	mu      sync.Mutex
	tunnels map[string]*tunnel
}

// DefaultFaultlinedPort is the loopback port faultlined serves on in its pod.
const DefaultFaultlinedPort = 7439

type tunnel struct {
	node   string
	users  int
	ready  chan struct{} // closed once open (or failed: err)
	err    error
	conn   *grpc.ClientConn
	stop   context.CancelFunc
	broken chan struct{} // closed when the port-forward ends
	idle   *time.Timer
}

// openTimeout bounds opening a tunnel; callers may stop waiting sooner.
const openTimeout = 30 * time.Second

// Node returns a client for the node's faultlined, opening the node's
// tunnel unless it is open or being opened.
func (p *PortForward) Node(ctx context.Context, node string) (pb.NodeClient, func(), error) {
	p.mu.Lock()
	if p.tunnels == nil {
		p.tunnels = map[string]*tunnel{}
	}
	t := p.tunnels[node]
	if t != nil && t.broken != nil {
		select {
		case <-t.broken:
			t = nil
		default:
		}
	}
	if t == nil {
		t = &tunnel{node: node, ready: make(chan struct{}), broken: make(chan struct{})}
		p.tunnels[node] = t
		go p.open(t)
	}
	t.users++
	if t.idle != nil {
		t.idle.Stop()
		t.idle = nil
	}
	p.mu.Unlock()
	var once sync.Once
	release := func() { once.Do(func() { p.release(t) }) }
	select {
	case <-t.ready:
	case <-ctx.Done():
		release()
		return nil, nil, ctx.Err()
	}
	if t.err != nil {
		release()
		return nil, nil, t.err
	}
	return pb.NewNodeClient(t.conn), release, nil
}

func (p *PortForward) release(t *tunnel) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t.users--
	if t.users > 0 {
		return
	}
	linger := p.Linger
	if linger == 0 {
		linger = 2 * time.Second
	}
	t.idle = time.AfterFunc(linger, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if t.users == 0 {
			p.closeLocked(t)
		}
	})
}

func (p *PortForward) closeLocked(t *tunnel) {
	if p.tunnels[t.node] == t {
		delete(p.tunnels, t.node)
	}
	select {
	case <-t.ready:
		if t.err == nil {
			t.conn.Close()
			t.stop()
		}
	default: // still opening: open sees it is no longer in the map
	}
}

// Close closes every tunnel.
func (p *PortForward) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.tunnels {
		p.closeLocked(t)
	}
	return nil
}

// open starts a port-forward to the node's faultlined pod on a free
// loopback port of this process and a gRPC connection through it, then
// closes t.ready; a failed tunnel is forgotten, for the next call to retry.
func (p *PortForward) open(t *tunnel) {
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	t.conn, t.stop, t.err = p.dial(ctx, t)
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.err != nil && p.tunnels[t.node] == t {
		delete(p.tunnels, t.node)
	}
	close(t.ready)
	if t.err == nil && p.tunnels[t.node] != t { // closed while opening
		t.conn.Close()
		t.stop()
	}
}

func (p *PortForward) dial(ctx context.Context, t *tunnel) (*grpc.ClientConn, context.CancelFunc, error) {
	began := time.Now()
	node := t.node
	pod, err := p.faultlinedPod(ctx, node)
	if err != nil {
		return nil, nil, err
	}
	rt, upgrader, err := spdy.RoundTripperFor(p.Config)
	if err != nil {
		return nil, nil, fmt.Errorf("port-forward to %s: %w", pod, err)
	}
	url := p.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(p.Namespace).Name(pod).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, url)
	port := p.Port
	if port == 0 {
		port = DefaultFaultlinedPort
	}
	tctx, stop := context.WithCancel(context.Background())
	ready := make(chan struct{})
	errOut := &logWriter{log: p.log(), node: node}
	pf, err := portforward.NewOnAddressesWithContext(tctx, dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(port)}, ready, io.Discard, errOut)
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("port-forward to %s: %w", pod, err)
	}
	failed := make(chan error, 1)
	go func() {
		err := pf.ForwardPorts()
		failed <- err
		close(t.broken)
		stop()
	}()
	select {
	case <-ready:
	case err := <-failed:
		return nil, nil, fmt.Errorf("%w: port-forward to faultlined pod %s/%s on node %s: %v", errdefs.ErrUnavailable, p.Namespace, pod, node, err)
	case <-ctx.Done():
		stop()
		return nil, nil, fmt.Errorf("%w: port-forward to faultlined pod %s/%s on node %s: %v", errdefs.ErrUnavailable, p.Namespace, pod, node, ctx.Err())
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) == 0 {
		stop()
		return nil, nil, fmt.Errorf("port-forward to %s: no local port: %v", pod, err)
	}
	conn, err := grpc.NewClient("passthrough:///127.0.0.1:"+strconv.Itoa(int(ports[0].Local)), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("connect to faultlined through %s: %w", pod, err)
	}
	p.log().Info("tunnel open", "node", node, "pod", pod, "local", ports[0].Local, "took", time.Since(began).Round(time.Millisecond))
	return conn, stop, nil
}

// faultlinedPod finds the ready faultlined pod of the node.
func (p *PortForward) faultlinedPod(ctx context.Context, node string) (string, error) {
	list, err := p.Client.CoreV1().Pods(p.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: p.Selector,
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String(),
	})
	if err != nil {
		return "", fmt.Errorf("%w: find faultlined on node %s (namespace %s, %s): %v", errdefs.ErrUnavailable, node, p.Namespace, p.Selector, err)
	}
	for _, pod := range list.Items {
		if pod.DeletionTimestamp == nil && pod.Status.Phase == corev1.PodRunning && podReady(&pod) {
			return pod.Name, nil
		}
	}
	return "", fmt.Errorf("%w: no ready faultlined pod on node %s (namespace %s, %s): is the faultlined DaemonSet deployed and running there?", errdefs.ErrUnavailable, node, p.Namespace, p.Selector)
}

// Nodes lists the nodes that have a faultlined pod, ready or not (a node
// whose pod is not ready is then unreachable, and says why).
func (p *PortForward) Nodes(ctx context.Context) ([]string, error) {
	list, err := p.Client.CoreV1().Pods(p.Namespace).List(ctx, metav1.ListOptions{LabelSelector: p.Selector})
	if err != nil {
		return nil, fmt.Errorf("%w: list faultlined pods (namespace %s, %s): %v", errdefs.ErrUnavailable, p.Namespace, p.Selector, err)
	}
	var nodes []string
	for _, pod := range list.Items {
		if n := pod.Spec.NodeName; n != "" && !slices.Contains(nodes, n) {
			nodes = append(nodes, n)
		}
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("%w: no faultlined pod in namespace %s (%s): is the faultlined DaemonSet deployed?", errdefs.ErrUnavailable, p.Namespace, p.Selector)
	}
	slices.Sort(nodes)
	return nodes, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (p *PortForward) log() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

// logWriter turns the port-forward's error output into log lines.
type logWriter struct {
	log  *slog.Logger
	node string
}

func (w *logWriter) Write(b []byte) (int, error) {
	w.log.Warn("port-forward", "node", w.node, "msg", string(b))
	return len(b), nil
}
