//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/faultline-dev/faultline/internal/testkit/ctrkit"
	"github.com/faultline-dev/faultline/pkg/auth"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

const faultlinedImage = "faultline.local/faultlined:e2e"

// env is one cluster with faultline deployed, the test apps and a gateway.
type env struct {
	*Cluster
	overlay string
	gw      pb.GatewayClient
	gwAddr  string
	gwToken string
	// startRSS is faultlined's RSS (KiB) once ready, before any fault.
	startRSS int
	http     *http.Client
}

// requireRoot fails loudly in CI and skips elsewhere without root.
func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the e2e test needs root")
		}
		t.Skip("needs root")
	}
}

func setup(t *testing.T) *env {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	t.Cleanup(cancel)
	c := StartCluster(ctx, t)
	e := &env{Cluster: c, http: &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true},
	}}
	bin := c.path("bin")
	start := time.Now()
	for _, b := range []struct{ pkg, out, image, file string }{
		{"github.com/faultline-dev/faultline/cmd/faultlined", "faultlined", faultlinedImage, "faultlined"},
		{"github.com/faultline-dev/faultline/examples/catalog", "catalog", "faultline.local/catalog:e2e", "app"},
		{"github.com/faultline-dev/faultline/test/e2e/pause", "pause", pauseImage, "pause"},
		{"github.com/faultline-dev/faultline/cmd/faultline", "faultline", "", ""},
	} {
		out := filepath.Join(bin, b.out)
		// As the Dockerfile builds it: static, stripped.
		if err := ctrkit.GoBuild(ctx, b.pkg, out, "-ldflags=-s -w"); err != nil {
			t.Fatal(err)
		}
		if b.image == "" {
			continue
		}
		// The Dockerfile's recipe without Docker: the static binary alone
		// in an image, imported where the CRI plugin finds it.
		for _, n := range c.Nodes {
			if _, err := ctrkit.BuildImageAt(ctrkit.WithNamespace(ctx, "k8s.io"), n.ctrClient, b.image, out, b.file); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("binaries and images built in %s", time.Since(start).Round(time.Millisecond))

	e.overlay = e.writeOverlay(t)
	if out, err := c.Kubectl(ctx, "apply", "-k", e.overlay); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("kubectl apply -k:\n%s", out)
	}
	if out, err := c.Kubectl(ctx, "apply", "-f", "testdata/app.yaml"); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("kubectl apply -f testdata/app.yaml:\n%s", out)
	}
	e.waitReady(t, "faultline", "app.kubernetes.io/name=faultlined", len(c.Nodes))
	time.Sleep(2 * time.Second) // settled
	e.startRSS = rssKiB(t, e.faultlinedPID(t, c.Nodes[0].Name))
	e.waitReady(t, "shop", "app=catalog", 3)
	e.waitReady(t, "shop", "app=solo", 1)
	// 40: the time-to-active measurement's 30 pods are more than the
	// nodes' default limit of 20 per Fault.
	gw := e.startGateway(t, "gateway", e.Kubeconfig, "--max-targets", "40")
	e.gw, e.gwAddr, e.gwToken = gw.client, gw.addr, gw.token
	return e
}

// writeOverlay is what a user of another cluster writes: deploy/ with the
// image overridden, and this cluster's oddities patched in: each node's
// private containerd (DIR/nodes/NODE_NAME, one host directory for both),
// and the API server's address (there is no kube-proxy to route the
// kubernetes Service).
func (e *env) writeOverlay(t *testing.T) string {
	dir := e.path("overlay")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	base, err := filepath.Rel(dir, filepath.Join(wd, "..", "..", "deploy"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(wd, "..", "..", "deploy", "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.Unmarshal(b, &ds); err != nil {
		t.Fatal(err)
	}
	socketArg := slices.IndexFunc(ds.Spec.Template.Spec.Containers[0].Args, func(a string) bool { return strings.HasPrefix(a, "--containerd-socket=") })
	if socketArg < 0 {
		t.Fatal("deploy/daemonset.yaml has no --containerd-socket argument")
	}
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
images:
  - name: ghcr.io/faultline-dev/faultlined
    newName: faultline.local/faultlined
    newTag: e2e
patches:
  - target: {kind: DaemonSet, name: faultlined}
    patch: |-
      - op: replace
        path: /spec/template/spec/volumes/0/hostPath/path
        value: %s
      - op: replace
        path: /spec/template/spec/containers/0/args/%d
        value: --containerd-socket=/run/containerd/$(NODE_NAME)/containerd.sock
      - op: replace
        path: /spec/template/spec/containers/0/imagePullPolicy
        value: Never
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value: {name: KUBERNETES_SERVICE_HOST, value: %q}
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value: {name: KUBERNETES_SERVICE_PORT, value: %q}
`, base, e.path("nodes"), socketArg, nodeIP, strconv.Itoa(e.APIPort))
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// waitReady waits for n ready pods matching selector.
func (e *env) waitReady(t *testing.T, ns, selector string, n int) []corev1.Pod {
	t.Helper()
	var ready []corev1.Pod
	err := waitFor(context.Background(), 120*time.Second, fmt.Sprintf("%d ready pods %s in %s", n, selector, ns), func() error {
		list, err := e.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		ready = ready[:0]
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && isReady(&p) {
				ready = append(ready, p)
			}
		}
		if len(ready) != n {
			return fmt.Errorf("%d of %d ready (%d pods)", len(ready), n, len(list.Items))
		}
		return nil
	})
	if err != nil {
		e.dumpLogs(t)
		out, _ := e.Kubectl(context.Background(), "get", "pods", "-A", "-o", "wide")
		t.Logf("pods:\n%s", out)
		out, _ = e.Kubectl(context.Background(), "get", "events", "-A")
		t.Logf("events:\n%s", out)
		t.Fatal(err)
	}
	return ready
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// gatewayProc is a `faultline gateway` process of the test.
type gatewayProc struct {
	client pb.GatewayClient
	addr   string
	token  string
	cmd    *exec.Cmd
}

// startGateway runs `faultline gateway` with a kubeconfig, as a user
// outside the cluster would, with a config directory of its own (named),
// where it creates its token file. Its client sends the token.
func (e *env) startGateway(t *testing.T, name, kubeconfig string, args ...string) *gatewayProc {
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	log, err := os.Create(e.path("logs", name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	config := e.path("config-" + name)
	cmd := exec.Command(filepath.Join(e.path("bin"), "faultline"), append([]string{"gateway", "--kubeconfig", kubeconfig, "--listen", addr}, args...)...)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+config)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		log.Close()
	})
	if err := waitFor(context.Background(), 10*time.Second, name+" listening", func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	token, err := auth.ReadFile(filepath.Join(config, "faultline", "gateway-token"), true)
	if err != nil {
		t.Fatalf("the gateway's token file: %v", err)
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(auth.Bearer(token)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &gatewayProc{client: pb.NewGatewayClient(conn), addr: addr, token: token, cmd: cmd}
}

// userKubeconfig writes a kubeconfig that acts as user in groups, through
// the admin's impersonation (kubectl --as).
func (e *env) userKubeconfig(t *testing.T, user string, groups ...string) string {
	b, err := os.ReadFile(e.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range cfg.AuthInfos {
		ai.Impersonate, ai.ImpersonateGroups = user, groups
	}
	path := e.path("kubeconfig-" + user)
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// pods returns the ready pods of a selector in shop.
func (e *env) pods(t *testing.T, selector string) []corev1.Pod {
	t.Helper()
	list, err := e.Client.CoreV1().Pods("shop").List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && isReady(&p) {
			out = append(out, p)
		}
	}
	return out
}

// get sends GET http://podIP:8080/ingredients/1 and returns the status, or
// 0 when the request failed.
func (e *env) get(ip string) int {
	resp, err := e.http.Get("http://" + net.JoinHostPort(ip, "8080") + "/ingredients/1")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitStatus polls a pod until it answers want, and returns how long that
// took; it fails after timeout.
func (e *env) waitStatus(t *testing.T, ip string, want int, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		if e.get(ip) == want {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("pod %s did not answer %d within %s (last: %d)", ip, want, timeout, e.get(ip))
	return 0
}

// podSpecs snapshots the pods' specs and annotations as JSON, to prove
// faultline never changes them.
func (e *env) podSpecs(t *testing.T, selector string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range e.pods(t, selector) {
		b, err := json.Marshal(struct {
			Spec        corev1.PodSpec
			Annotations map[string]string
			Labels      map[string]string
		}{p.Spec, p.Annotations, p.Labels})
		if err != nil {
			t.Fatal(err)
		}
		out[p.Name] = string(b)
	}
	return out
}

// faultlinedPID finds the faultlined process of a node through its
// containerd.
func (e *env) faultlinedPID(t *testing.T, node string) int {
	t.Helper()
	ctx := ctrkit.WithNamespace(context.Background(), "k8s.io")
	cs, err := e.node(node).ctrClient.Containers(ctx, `labels."io.kubernetes.container.name"==faultlined`)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		task, err := c.Task(ctx, nil)
		if err != nil {
			continue
		}
		if st, err := task.Status(ctx); err == nil && st.Status == containerd.Running {
			return int(task.Pid())
		}
	}
	t.Fatalf("no running faultlined container on node %s", node)
	return 0
}

// rssKiB reads a process's resident set size.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
