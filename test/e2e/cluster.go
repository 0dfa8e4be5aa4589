//go:build e2e

// Package e2e runs faultline on a real two-node Kubernetes that it starts
// on this machine: etcd and containerd/runc/CNI from Debian (a containerd,
// CNI bridge, kubelet root directory, ports and cgroup root per node), and
// kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
// kubectl v1.33.13 built from the Go module proxy (k8sbin/), cached outside
// the repository. Run it with `make e2e` (root).
package e2e

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/faultline-dev/faultline/internal/testkit/ctrkit"
)

const (
	k8sVersion = "v1.33.13"
	// nodeIP is the first node's, where the API server listens too.
	nodeIP     = "198.18.32.1"
	svcCIDR    = "198.19.0.0/24"
	pauseImage = "registry.k8s.io/pause:3.10"
)

// Node is one kubelet of the cluster, with a containerd, CNI bridge, root
// directory, ports and cgroup root of its own.
type Node struct {
	Name, IP, Link, Bridge, PodCIDR string
	// CgroupRoot is the kubelet's --cgroup-root ("" for /): two kubelets
	// of one machine must not share kubepods.
	CgroupRoot string
	Ctr        *ctrkit.Daemon
	CtrSocket  string
	ctrClient  *containerd.Client
}

// nodes are the cluster's: containerd of each in DIR/nodes/NAME, which the
// DaemonSet mounts, so that faultlined finds its node's by NODE_NAME.
var nodes = []*Node{
	{Name: "e2e-node", IP: nodeIP, Link: "fle2e-node0", Bridge: "fle2e-br0", PodCIDR: "198.18.80.0/24"},
	{Name: "e2e-node-b", IP: "198.18.32.2", Link: "fle2e-node1", Bridge: "fle2e-br1", PodCIDR: "198.18.81.0/24", CgroupRoot: "/fle2e-node-b"},
}

// Cluster is a running two-node cluster.
type Cluster struct {
	Dir        string // everything of the run, removed at the end
	Bin        string // Kubernetes binaries
	Kubeconfig string // admin
	Client     kubernetes.Interface
	Nodes      []*Node
	APIPort    int

	procs     []*proc
	netnsSeen map[string]bool // /run/netns entries before the run
	logf      func(string, ...any)
	stopped   bool
}

// node returns the cluster's node of that name.
func (c *Cluster) node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// k8sBinaries builds (once per machine) the Kubernetes binaries and returns
// their directory: $FAULTLINE_CACHE (default /var/cache/faultline), keyed
// by Kubernetes and Go versions.
func k8sBinaries(ctx context.Context) (string, error) {
	cache := os.Getenv("FAULTLINE_CACHE")
	if cache == "" {
		cache = "/var/cache/faultline"
	}
	dir := filepath.Join(cache, "k8s-"+k8sVersion+"-"+runtime.Version())
	cmd := exec.CommandContext(ctx, "k8sbin/build.sh", dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build Kubernetes binaries: %w", err)
	}
	return dir, nil
}

// StartCluster starts etcd, containerd with CRI, the control plane and a
// kubelet, and waits for the node to be Ready. Stop tears all of it down;
// StartCluster registers it with t.Cleanup, so a failure leaves nothing.
func StartCluster(ctx context.Context, t testing.TB) *Cluster {
	t.Helper()
	bin, err := k8sBinaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sweepCrashedRuns(t.Logf)
	dir, err := os.MkdirTemp("", "fle2e-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(fmt.Sprint(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{Dir: dir, Bin: bin, logf: t.Logf, netnsSeen: map[string]bool{}}
	for _, n := range nodes {
		nc := *n
		c.Nodes = append(c.Nodes, &nc)
	}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			c.netnsSeen[e.Name()] = true
		}
	}
	t.Cleanup(c.Stop)
	start := time.Now()
	if err := c.start(ctx); err != nil {
		c.dumpLogs(t)
		t.Fatalf("start cluster: %v", err)
	}
	t.Logf("cluster up in %s (binaries: %s)", time.Since(start).Round(time.Millisecond), bin)
	return c
}

func (c *Cluster) path(parts ...string) string {
	return filepath.Join(append([]string{c.Dir}, parts...)...)
}

func (c *Cluster) start(ctx context.Context) error {
	for _, n := range c.Nodes {
		if err := n.network(); err != nil {
			return err
		}
		if err := n.cgroupRoot(); err != nil {
			return err
		}
		if err := c.startContainerd(ctx, n); err != nil {
			return err
		}
	}
	if err := c.certs(); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	ports, err := freePorts(3 + 2*len(c.Nodes))
	if err != nil {
		return err
	}
	etcdClient, etcdPeer, etcdMetrics := ports[0], ports[1], ports[2]
	apiPorts, err := freePortsOn(nodeIP, 1)
	if err != nil {
		return err
	}
	c.APIPort = apiPorts[0]
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	if err := c.run("etcd", "/usr/bin/etcd", "--name", "e2e", "--data-dir", c.path("etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--initial-cluster", fmt.Sprintf("e2e=http://127.0.0.1:%d", etcdPeer),
		"--listen-metrics-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdMetrics)); err != nil {
		return err
	}
	pki := c.path("pki")
	if err := c.run("kube-apiserver", filepath.Join(c.Bin, "kube-apiserver"),
		"--etcd-servers", etcdURL,
		"--bind-address", nodeIP, "--advertise-address", nodeIP, fmt.Sprintf("--secure-port=%d", c.APIPort),
		"--tls-cert-file", filepath.Join(pki, "apiserver.crt"), "--tls-private-key-file", filepath.Join(pki, "apiserver.key"),
		"--client-ca-file", filepath.Join(pki, "ca.crt"),
		"--kubelet-client-certificate", filepath.Join(pki, "kubelet-client.crt"), "--kubelet-client-key", filepath.Join(pki, "kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-key-file", filepath.Join(pki, "sa.key"), "--service-account-signing-key-file", filepath.Join(pki, "sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--token-auth-file", filepath.Join(pki, "tokens.csv"),
		"--authorization-mode=Node,RBAC", "--allow-privileged=true",
		"--service-cluster-ip-range", svcCIDR, "--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false", "--profiling=false"); err != nil {
		return err
	}
	c.Kubeconfig = c.path("admin.kubeconfig")
	for _, who := range []string{"admin", "controller-manager", "scheduler"} {
		if err := c.writeKubeconfig(c.path(who+".kubeconfig"), who+"-token"); err != nil {
			return err
		}
	}
	for _, n := range c.Nodes {
		if err := c.writeKubeconfig(c.path("kubelet-"+n.Name+".kubeconfig"), "kubelet-"+n.Name+"-token"); err != nil {
			return err
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return err
	}
	if c.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if err := waitFor(ctx, 60*time.Second, "API server ready", func() error {
		_, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	}); err != nil {
		return err
	}
	if err := c.run("kube-controller-manager", filepath.Join(c.Bin, "kube-controller-manager"),
		"--kubeconfig", c.path("controller-manager.kubeconfig"),
		"--service-account-private-key-file", filepath.Join(pki, "sa.key"), "--root-ca-file", filepath.Join(pki, "ca.crt"),
		"--use-service-account-credentials=false", "--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0",
		"--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle,-persistentvolume-binder,-attachdetach,-persistentvolume-expander,-ttl-after-finished,-bootstrapsigner,-tokencleaner",
		"--node-monitor-grace-period=20s", "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10"); err != nil {
		return err
	}
	if err := c.run("kube-scheduler", filepath.Join(c.Bin, "kube-scheduler"),
		"--kubeconfig", c.path("scheduler.kubeconfig"), "--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0"); err != nil {
		return err
	}
	for i, n := range c.Nodes {
		if err := c.startKubelet(n, ports[3+2*i], ports[4+2*i]); err != nil {
			return err
		}
	}
	return waitFor(ctx, 90*time.Second, "nodes Ready without taints", func() error {
		for _, node := range c.Nodes {
			n, err := c.Client.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status != corev1.ConditionTrue {
					return fmt.Errorf("node %s not ready: %s", n.Name, cond.Message)
				}
			}
			if len(n.Spec.Taints) > 0 {
				return fmt.Errorf("node %s tainted: %v", n.Name, n.Spec.Taints)
			}
		}
		return nil
	})
}

// network gives the node its IP on a veth (the kernel has no dummy
// driver); its kubelet (and, on the first, the API server) listens there.
func (n *Node) network() error {
	_ = netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n.Link}}) // a crashed run's
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n.Link}, PeerName: n.Link + "p"}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("node %s veth: %w", n.Name, err)
	}
	addr, _ := netlink.ParseAddr(n.IP + "/32")
	if err := netlink.AddrAdd(veth, addr); err != nil {
		return fmt.Errorf("node %s address: %w", n.Name, err)
	}
	for _, name := range []string{n.Link, n.Link + "p"} {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
	}
	return nil
}

// cgroupRoot makes the node's cgroup root in every cgroup v1 hierarchy
// (the kubelet refuses a root that does not exist), cpuset's with the
// machine's CPUs and memory nodes.
func (n *Node) cgroupRoot() error {
	if n.CgroupRoot == "" {
		return nil
	}
	hier, err := filepath.Glob("/sys/fs/cgroup/*")
	if err != nil {
		return err
	}
	for _, h := range hier {
		if fi, err := os.Lstat(h); err != nil || !fi.IsDir() || fi.Mode()&os.ModeSymlink != 0 {
			continue
		}
		dir := filepath.Join(h, n.CgroupRoot)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup root %s: %w", dir, err)
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if b, err := os.ReadFile(filepath.Join(h, f)); err == nil {
					_ = os.WriteFile(filepath.Join(dir, f), b, 0o644)
				}
			}
		}
	}
	return nil
}

func (c *Cluster) startContainerd(ctx context.Context, n *Node) error {
	cni := c.path("cni", n.Name)
	if err := os.MkdirAll(filepath.Join(cni, "net.d"), 0o755); err != nil {
		return err
	}
	conflist := fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "fle2e",
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}},
    {"type": "loopback"}
  ]
}`, n.Bridge, n.PodCIDR, filepath.Join(cni, "ipam"))
	if err := os.WriteFile(filepath.Join(cni, "net.d", "10-fle2e.conflist"), []byte(conflist), 0o644); err != nil {
		return err
	}
	// restrict_oom_score_adj: this machine has no CAP_SYS_RESOURCE, and
	// runc fails to lower the sandbox's oom_score_adj without it.
	cri := fmt.Sprintf(`
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
`, pauseImage, filepath.Join(cni, "net.d"))
	d, err := ctrkit.StartContainerdCRI(ctx, c.path("nodes", n.Name), c.path("ctr-root", n.Name), cri)
	if err != nil {
		return err
	}
	n.Ctr, n.CtrSocket = d, d.Socket
	n.ctrClient, err = d.Client()
	return err
}

func (c *Cluster) startKubelet(n *Node, port, healthz int) error {
	pki := c.path("pki")
	resolv := c.path("resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		return err
	}
	config := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %q}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
makeIPTablesUtilChains: false
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "1Mi", "nodefs.available": "1%%", "imagefs.available": "1%%"}
resolvConf: %q
podLogsDir: %q
# no iptables chains on the host: nothing of the run may outlive it
maxPods: 110
serializeImagePulls: false
syncFrequency: 5s
fileCheckFrequency: 60s
nodeStatusUpdateFrequency: 5s
cgroupRoot: %q
`, n.IP, port, healthz, filepath.Join(pki, "ca.crt"), n.CtrSocket, resolv, c.path("pod-logs", n.Name), cmp.Or(n.CgroupRoot, "/"))
	file := c.path("kubelet-" + n.Name + ".yaml")
	if err := os.WriteFile(file, []byte(config), 0o644); err != nil {
		return err
	}
	return c.run("kubelet-"+n.Name, filepath.Join(c.Bin, "kubelet"),
		"--config", file, "--kubeconfig", c.path("kubelet-"+n.Name+".kubeconfig"),
		"--hostname-override", n.Name, "--node-ip", n.IP, "--root-dir", c.path("kubelet", n.Name))
}

// run starts a component with its output in DIR/logs/NAME.log.
func (c *Cluster) run(name, bin string, args ...string) error {
	if err := os.MkdirAll(c.path("logs"), 0o755); err != nil {
		return err
	}
	log, err := os.Create(c.path("logs", name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); log.Close(); close(p.done) }()
	c.procs = append(c.procs, p)
	return nil
}

// Kubectl runs the cluster's kubectl as admin.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.Bin, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// dumpLogs prints the tail of every component's log.
func (c *Cluster) dumpLogs(t testing.TB) {
	ents, _ := os.ReadDir(c.path("logs"))
	for _, e := range ents {
		b, _ := os.ReadFile(c.path("logs", e.Name()))
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 25 {
			lines = lines[len(lines)-25:]
		}
		t.Logf("--- %s (last lines)\n%s", e.Name(), strings.Join(lines, "\n"))
	}
	if b, err := os.ReadFile(filepath.Join(c.path("ctr"), "containerd.log")); err == nil {
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 25 {
			lines = lines[len(lines)-25:]
		}
		t.Logf("--- containerd.log (last lines)\n%s", strings.Join(lines, "\n"))
	}
}

// Stop tears everything down: the pods (through the kubelet, so CNI and
// containerd clean their part), the components, the containers left, the
// node's links, mounts, netns entries and cgroups, and the directory.
func (c *Cluster) Stop() {
	if c.stopped {
		return
	}
	c.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if c.Client != nil && c.running("kubelet-"+c.Nodes[0].Name) {
		c.deleteAllPods(ctx)
	}
	// The components, newest first: kubelet before the API server.
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	for _, n := range c.Nodes {
		if n.ctrClient != nil {
			n.removeContainers(ctx)
			n.ctrClient.Close()
		}
		if n.Ctr != nil {
			n.Ctr.Stop()
		}
	}
	c.sweep()
}

func (c *Cluster) running(name string) bool {
	for _, p := range c.procs {
		if p.name == name {
			select {
			case <-p.done:
				return false
			default:
				return true
			}
		}
	}
	return false
}

// deleteAllPods force-deletes every pod and waits until containerd runs no
// sandbox: the kubelet stops them through CRI, which runs CNI DEL.
func (c *Cluster) deleteAllPods(ctx context.Context) {
	zero := int64(0)
	nss, err := c.Client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, ns := range nss.Items {
		_ = c.Client.AppsV1().Deployments(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		_ = c.Client.AppsV1().DaemonSets(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		_ = c.Client.AppsV1().ReplicaSets(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		_ = c.Client.CoreV1().Pods(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
	}
	_ = waitFor(ctx, 60*time.Second, "no pod sandbox left", func() error {
		n := c.runningSandboxes(ctx)
		if n > 0 {
			return fmt.Errorf("%d sandboxes still running", n)
		}
		return nil
	})
}

func (c *Cluster) runningSandboxes(ctx context.Context) int {
	total := 0
	for _, n := range c.Nodes {
		if n.ctrClient == nil {
			continue
		}
		cs, err := n.ctrClient.Containers(ctrkit.WithNamespace(ctx, "k8s.io"), `labels."io.cri-containerd.kind"==sandbox`)
		if err == nil {
			total += len(cs)
		}
	}
	return total
}

func (n *Node) removeContainers(ctx context.Context) {
	nctx := ctrkit.WithNamespace(ctx, "k8s.io")
	cs, err := n.ctrClient.Containers(nctx)
	if err != nil {
		return
	}
	for _, ctr := range cs {
		_ = ctrkit.Remove(nctx, ctr)
	}
}

// sweep removes what the kernel and the host keep after the processes are
// gone: mounts under the run's directory, the run's /run/netns entries,
// links, kubepods cgroups, and the directory.
func (c *Cluster) sweep() {
	for _, m := range mountsUnder(c.Dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			c.logf("unmount %s: %v", m, err)
		}
	}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if !c.netnsSeen[e.Name()] && strings.HasPrefix(e.Name(), "cni-") {
				p := filepath.Join("/run/netns", e.Name())
				_ = syscall.Unmount(p, syscall.MNT_DETACH)
				_ = os.Remove(p)
			}
		}
	}
	for _, n := range c.Nodes {
		for _, name := range []string{n.Link, n.Bridge} {
			if l, err := netlink.LinkByName(name); err == nil {
				_ = netlink.LinkDel(l)
			}
		}
		removeCgroups(n.CgroupRoot)
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		c.logf("remove %s: %v", c.Dir, err)
	}
}

// ownerFile in a run's directory holds the test binary's pid.
const ownerFile = "owner.pid"

// sweepCrashedRuns removes what earlier runs left when they were killed
// before their cleanup ran (a SIGKILLed go test): each fle2e- directory
// whose owner is gone is swept like a finished run, except that only the
// cni- namespaces no process holds are removed.
func sweepCrashedRuns(logf func(string, ...any)) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "fle2e-*"))
	for _, dir := range dirs {
		if b, err := os.ReadFile(filepath.Join(dir, ownerFile)); err == nil {
			var pid int
			if _, err := fmt.Sscan(string(b), &pid); err == nil && syscall.Kill(pid, 0) == nil {
				continue // a run in progress
			}
		}
		logf("sweeping %s, left by a run that was killed", dir)
		c := &Cluster{Dir: dir, Nodes: nodes, logf: logf, netnsSeen: heldNetns()}
		c.sweep()
	}
}

// heldNetns names the /run/netns entries that some process is in.
func heldNetns() map[string]bool {
	type key struct{ dev, ino uint64 }
	inUse := map[key]bool{}
	procs, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	for _, p := range procs {
		var st syscall.Stat_t
		if syscall.Stat(p, &st) == nil {
			inUse[key{uint64(st.Dev), st.Ino}] = true
		}
	}
	held := map[string]bool{}
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/run/netns", e.Name()), &st) != nil || inUse[key{uint64(st.Dev), st.Ino}] {
			held[e.Name()] = true
		}
	}
	return held
}

// mountsUnder lists mount points under dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			out = append(out, fields[4])
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// removeCgroups removes a kubelet's empty kubepods cgroups under its
// cgroup root in every hierarchy (cgroup v1 here), children first, and
// the root when it is not /.
func removeCgroups(root string) {
	sub := "kubepods"
	if root != "" {
		sub = strings.TrimPrefix(root, "/")
	}
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + sub)
	if _, err := os.Stat("/sys/fs/cgroup/" + sub); err == nil {
		roots = append(roots, "/sys/fs/cgroup/"+sub)
	}
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = os.Remove(dirs[i])
		}
	}
}

func waitFor(ctx context.Context, timeout time.Duration, what string, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePorts(n int) ([]int, error) { return freePortsOn("127.0.0.1", n) }

func freePortsOn(ip string, n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// certs writes a CA, the API server's serving certificate, the API
// server's client certificate for kubelets, the service-account key and
// the token file (admin in system:masters, the node in system:nodes).
func (c *Cluster) certs() error {
	pki := c.path("pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fle2e-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)
	if err := writePEM(filepath.Join(pki, "ca.crt"), "CERTIFICATE", caDER); err != nil {
		return err
	}
	issue := func(name string, tmpl *x509.Certificate) error {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return err
		}
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		if err := writePEM(filepath.Join(pki, name+".crt"), "CERTIFICATE", der); err != nil {
			return err
		}
		return writePEM(filepath.Join(pki, name+".key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))
	}
	if err := issue("apiserver", &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP(nodeIP), net.ParseIP("127.0.0.1"), net.ParseIP("198.19.0.1")},
		DNSNames:    []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc"},
	}); err != nil {
		return err
	}
	if err := issue("kubelet-client", &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(pki, "sa.key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)); err != nil {
		return err
	}
	tokens := strings.Join([]string{
		`admin-token,admin,1,"system:masters"`,
		// With use-service-account-credentials off the controller
		// manager acts as itself for every controller: give it (and the
		// scheduler) everything rather than replicate kubeadm's RBAC.
		`controller-manager-token,system:kube-controller-manager,2,"system:masters"`,
		`scheduler-token,system:kube-scheduler,3,"system:masters"`,
	}, "\n") + "\n"
	for i, n := range c.Nodes {
		tokens += fmt.Sprintf("kubelet-%s-token,system:node:%s,%d,\"system:nodes\"\n", n.Name, n.Name, 10+i)
	}
	return os.WriteFile(filepath.Join(pki, "tokens.csv"), []byte(tokens), 0o600)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

func (c *Cluster) writeKubeconfig(path, token string) error {
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://%s:%d
    certificate-authority: %s
users:
- name: e2e
  user:
    token: %s
contexts:
- name: e2e
  context: {cluster: e2e, user: e2e}
current-context: e2e
`, nodeIP, c.APIPort, c.path("pki", "ca.crt"), token)
	return os.WriteFile(path, []byte(cfg), 0o600)
}
