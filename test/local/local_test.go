// Package local tests the gateway's local mode end to end: a private real
// containerd running the demo's catalog service in containers, each in a
// network namespace of its own, the real faultlined, and the gateway
// resolving selectors over the containers' labels.
package local

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/faultline-dev/faultline/internal/testkit/ctrkit"
	"github.com/faultline-dev/faultline/internal/testkit/netnstest"
	"github.com/faultline-dev/faultline/internal/testkit/proctest"
	"github.com/faultline-dev/faultline/pkg/gateway"
	ctrsource "github.com/faultline-dev/faultline/pkg/targets/containerd"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

const ctrNamespace = "fltest"

var env struct {
	once   sync.Once
	err    error
	bin    string
	dir    string
	daemon *ctrkit.Daemon
	client *containerd.Client
	image  containerd.Image // catalog
	reco   containerd.Image // recommendations
}

func TestMain(m *testing.M) {
	code := m.Run()
	if env.client != nil {
		env.client.Close()
	}
	if env.daemon != nil {
		env.daemon.Stop()
	}
	if env.dir != "" {
		os.RemoveAll(env.dir)
	}
	if env.bin != "" {
		os.RemoveAll(env.bin)
	}
	os.Exit(code)
}

// setup starts the shared containerd and builds the catalog image once.
func setup(t *testing.T) {
	t.Helper()
	netnstest.RequireRoot(t)
	env.once.Do(func() {
		ctx := ctrkit.WithNamespace(context.Background(), ctrNamespace)
		if env.bin, env.err = proctest.Build("../../cmd/faultlined", "../../cmd/faultline"); env.err != nil {
			return
		}
		if env.err = ctrkit.GoBuild(ctx, "../../examples/catalog", env.bin+"/catalog"); env.err != nil {
			return
		}
		if env.err = ctrkit.GoBuild(ctx, "../../examples/recommendations", env.bin+"/recommendations"); env.err != nil {
			return
		}
		if env.dir, env.err = os.MkdirTemp("", "flctr"); env.err != nil {
			return
		}
		if env.daemon, env.err = ctrkit.StartContainerd(ctx, env.dir, ""); env.err != nil {
			return
		}
		if env.client, env.err = env.daemon.Client(); env.err != nil {
			return
		}
		if env.image, env.err = ctrkit.BuildImage(ctx, env.client, "faultline.local/catalog:test", env.bin+"/catalog"); env.err != nil {
			return
		}
		env.reco, env.err = ctrkit.BuildImage(ctx, env.client, "faultline.local/recommendations:test", env.bin+"/recommendations")
	})
	if env.err != nil {
		t.Fatalf("set-up: %v", env.err)
	}
}

type lab struct {
	net    *netnstest.Net
	client *netnstest.Host
	node   *proctest.Daemon
	gw     *gateway.Server
	hosts  map[string]*netnstest.Host
	prefix string
}

func newLab(t *testing.T) *lab {
	setup(t)
	l := &lab{net: netnstest.NewNet(t), hosts: map[string]*netnstest.Host{}, prefix: fmt.Sprintf("t%d", time.Now().UnixNano()%1e9)}
	l.client = l.net.AddHost("client")
	l.node = proctest.StartFaultlined(t, env.bin)
	src := &ctrsource.Source{Address: env.daemon.Socket, Namespaces: []string{ctrNamespace}}
	t.Cleanup(func() { src.Close() })
	tr := &gateway.LocalTransport{Socket: l.node.Socket}
	t.Cleanup(func() { tr.Close() })
	l.gw = &gateway.Server{Source: src, Transport: tr}
	return l
}

// run starts a catalog container named name with labels, in a network
// namespace of its own on the lab's bridge.
func (l *lab) run(t *testing.T, name string, labels map[string]string) *netnstest.Host {
	t.Helper()
	return l.runImage(t, env.image, name, labels)
}

// runImage starts a container of img named name with labels (and
// environment variables from labels["env"], comma-separated).
func (l *lab) runImage(t *testing.T, img containerd.Image, name string, labels map[string]string, envs ...string) *netnstest.Host {
	t.Helper()
	ctx := ctrkit.WithNamespace(context.Background(), ctrNamespace)
	h := l.net.AddHost(name)
	all := map[string]string{"faultline.name": name}
	for k, v := range labels {
		all[k] = v
	}
	c, err := ctrkit.Run(ctx, env.client, ctrkit.Spec{ID: l.prefix + "-" + name, Image: img, Labels: all, Env: envs, NetnsPath: h.Path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctrkit.Remove(ctx, c) })
	l.hosts[name] = h
	hc := l.http()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := hc.Get(l.url(name) + "/health")
		if err == nil {
			resp.Body.Close()
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s did not answer: %v", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *lab) url(name string) string {
	return "http://" + netip.AddrPortFrom(l.hosts[name].Addr, 8080).String()
}

func (l *lab) http() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: l.client.Dial(), DisableKeepAlives: true}, Timeout: 5 * time.Second}
}

func (l *lab) status(t *testing.T, name string) int {
	t.Helper()
	resp, err := l.http().Get(l.url(name) + "/ingredients/1")
	if err != nil {
		t.Fatalf("GET %s: %v", name, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func pods(ns string, sel, exc map[string]string) *pb.TargetSet {
	return &pb.TargetSet{Kind: &pb.TargetSet_Pods{Pods: &pb.PodSelector{Namespace: ns, Select: &pb.LabelSet{Labels: sel}, Exclude: &pb.LabelSet{Labels: exc}}}}
}

func service(name, ns string) *pb.TargetSet {
	return &pb.TargetSet{Kind: &pb.TargetSet_Service{Service: &pb.ServiceRef{Name: name, Namespace: ns}}}
}

func names(ts []*pb.TargetInfo) string {
	var out []string
	for _, t := range ts {
		out = append(out, t.GetName())
	}
	return strings.Join(out, ",")
}

func (l *lab) shop(t *testing.T) {
	shop := map[string]string{"faultline.namespace": "shop", "app": "catalog"}
	l.run(t, "catalog-1", merge(shop, map[string]string{"tier": "web", "faultline.service": "catalog"}))
	l.run(t, "catalog-2", merge(shop, map[string]string{"tier": "web", "faultline.service": "catalog"}))
	l.run(t, "catalog-db", merge(shop, map[string]string{"tier": "db"}))
	l.run(t, "other", map[string]string{"app": "catalog"}) // namespace: the containerd one
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func TestSelectorResolution(t *testing.T) {
	l := newLab(t)
	l.shop(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		set  *pb.TargetSet
		want string
	}{
		{"labels", pods("shop", map[string]string{"app": "catalog"}, nil), "catalog-1,catalog-2,catalog-db"},
		{"exclude", pods("shop", map[string]string{"app": "catalog"}, map[string]string{"tier": "db"}), "catalog-1,catalog-2"},
		{"two labels", pods("shop", map[string]string{"app": "catalog", "tier": "db"}, nil), "catalog-db"},
		{"containerd namespace", pods(ctrNamespace, map[string]string{"app": "catalog"}, nil), "other"},
		{"namespace only", pods("shop", nil, nil), "catalog-1,catalog-2,catalog-db"},
		{"service", service("catalog", "shop"), "catalog-1,catalog-2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := l.gw.Targets(ctx, &pb.TargetsRequest{Targets: tc.set})
			if err != nil {
				t.Fatal(err)
			}
			if got := names(resp.GetTargets()); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
			for _, ti := range resp.GetTargets() {
				if ti.GetTarget().GetPid() == 0 || !strings.HasPrefix(ti.GetIp(), "198.18.") {
					t.Errorf("%s: pid %d ip %q", ti.GetName(), ti.GetTarget().GetPid(), ti.GetIp())
				}
			}
		})
	}
	_, err := l.gw.Targets(ctx, &pb.TargetsRequest{Targets: pods("shop", map[string]string{"app": "nothing"}, nil)})
	if err == nil || !strings.Contains(err.Error(), `finding pods matching pods including(app=nothing), excluding() in namespace "shop": no pods found matching selector`) {
		t.Errorf("no match: %v", err)
	}
	_, err = l.gw.Targets(ctx, &pb.TargetsRequest{Targets: service("nothing", "shop")})
	if err == nil || !strings.Contains(err.Error(), "service does not have any backing pods") {
		t.Errorf("no service: %v", err)
	}
}

func TestHTTPFaultOnTwoContainers(t *testing.T) {
	l := newLab(t)
	l.shop(t)
	done := make(chan *pb.GatewayInjectResponse, 1)
	go func() {
		resp, err := l.gw.InjectHTTP(context.Background(), &pb.InjectHTTPRequest{
			Targets: service("catalog", "shop"), Duration: durationpb.New(2 * time.Second),
			Fault: &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 503},
		})
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	waitFaults(t, l, 2)
	sent := map[string]int{"catalog-1": 3, "catalog-2": 5}
	for name, n := range sent {
		for range n {
			if code := l.status(t, name); code != 503 {
				t.Errorf("%s: %d, want 503", name, code)
			}
		}
	}
	if code := l.status(t, "catalog-db"); code != 200 {
		t.Errorf("catalog-db is not behind the service but answered %d", code)
	}
	resp := <-done
	if resp == nil {
		t.FailNow()
	}
	for _, r := range resp.GetTargets() {
		if got := r.GetFault().GetCounters().GetErrored(); int(got) != sent[r.GetTarget().GetName()] {
			t.Errorf("%s: %d errored, want %d", r.GetTarget().GetName(), got, sent[r.GetTarget().GetName()])
		}
	}
	if resp.GetTotal().GetRequests() != 8 || resp.GetNoRequests() {
		t.Errorf("total %v no_requests=%v", resp.GetTotal(), resp.GetNoRequests())
	}
}

func waitFaults(t *testing.T, l *lab, n int) {
	t.Helper()
	tr := &gateway.LocalTransport{Socket: l.node.Socket}
	defer tr.Close()
	node, _, err := tr.Node(context.Background(), "local")
	if err != nil {
		t.Fatal(err)
	}
	proctest.WaitFaults(t, node, n)
}

func TestNoRequests(t *testing.T) {
	l := newLab(t)
	l.run(t, "lonely", map[string]string{"app": "lonely"})
	_, err := l.gw.InjectHTTP(context.Background(), &pb.InjectHTTPRequest{
		Targets: pods("", map[string]string{"app": "lonely"}, nil), Duration: durationpb.New(time.Second),
		Fault: &pb.HTTPFault{Port: 8080, AverageDelay: durationpb.New(time.Millisecond)},
	})
	// The container's namespace is the containerd one, not "default".
	if !errdefs.IsNotFound(err) {
		t.Fatalf("default namespace: %v, want NotFound", err)
	}
	resp, err := l.gw.InjectHTTP(context.Background(), &pb.InjectHTTPRequest{
		Targets: pods(ctrNamespace, map[string]string{"app": "lonely"}, nil), Duration: durationpb.New(time.Second),
		Fault: &pb.HTTPFault{Port: 8080, AverageDelay: durationpb.New(time.Millisecond)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetNoRequests() || resp.GetTotal().GetRequests() != 0 {
		t.Errorf("no_requests %v, total %v", resp.GetNoRequests(), resp.GetTotal())
	}
}

func TestPartialFailureRollsBack(t *testing.T) {
	l := newLab(t)
	l.shop(t)
	// catalog-2 already has a fault on 8080: the gateway's cannot start there.
	tr := &gateway.LocalTransport{Socket: l.node.Socket}
	defer tr.Close()
	node, _, _ := tr.Node(context.Background(), "local")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go proctest.Inject(ctx, node, &pb.InjectRequest{Id: "already-there", Target: &pb.Target{Kind: &pb.Target_NetnsPath{NetnsPath: l.hosts["catalog-2"].Path}},
		Duration: durationpb.New(time.Minute), Fault: &pb.InjectRequest_Http{Http: &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 418}}})
	waitFaults(t, l, 1)

	_, err := l.gw.InjectHTTP(context.Background(), &pb.InjectHTTPRequest{
		Targets: service("catalog", "shop"), Duration: durationpb.New(time.Minute),
		Fault: &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 503},
	})
	st, _ := status.FromError(err)
	if st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "target shop/catalog-2") || !strings.Contains(st.Message(), "already-there") {
		t.Fatalf("got %v %q, want FailedPrecondition naming shop/catalog-2 and the fault in the way", st.Code(), st.Message())
	}
	waitFaults(t, l, 1) // catalog-1's fault was revoked
	if code := l.status(t, "catalog-1"); code != 200 {
		t.Errorf("catalog-1 after the rollback: %d, want 200", code)
	}
}

func TestBadFaultChangesNothing(t *testing.T) {
	l := newLab(t)
	l.run(t, "one", map[string]string{"app": "one"})
	_, err := l.gw.InjectHTTP(context.Background(), &pb.InjectHTTPRequest{
		Targets: pods(ctrNamespace, map[string]string{"app": "one"}, nil), Duration: durationpb.New(time.Minute),
		Fault: &pb.HTTPFault{Port: 8080, ErrorRate: 3, ErrorCode: 503},
	})
	if !strings.Contains(fmt.Sprint(err), "errorRate must be in the range [0, 1], got 3") {
		t.Errorf("got %v", err)
	}
	waitFaults(t, l, 0)
}

func TestTerminatePods(t *testing.T) {
	l := newLab(t)
	for i := range 4 {
		l.run(t, fmt.Sprintf("victim-%d", i), map[string]string{"app": "victim"})
	}
	resp, err := l.gw.TerminatePods(context.Background(), &pb.TerminatePodsRequest{Targets: pods(ctrNamespace, map[string]string{"app": "victim"}, nil), Count: "50%"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetTerminated()) != 2 {
		t.Fatalf("terminated %v, want 2", resp.GetTerminated())
	}
	left, err := l.gw.Targets(context.Background(), &pb.TargetsRequest{Targets: pods(ctrNamespace, map[string]string{"app": "victim"}, nil)})
	if err != nil || len(left.GetTargets()) != 2 || len(left.GetSkipped()) != 2 {
		t.Errorf("after terminating 2 of 4: %v %v", left, err)
	}
	for _, name := range resp.GetTerminated() {
		if _, err := l.http().Get(l.url(name) + "/health"); err == nil {
			t.Errorf("%s still answers", name)
		}
	}
	for _, tc := range []struct{ count, want string }{
		{"3", "cannot sample 3 pods out of a total of 2"},
		{"0", "count must be at least 1"},
		{"lots", `count must be a whole number or a percentage such as 50%, got "lots"`},
		{"", "count is not a valid percentage"},
	} {
		_, err := l.gw.TerminatePods(context.Background(), &pb.TerminatePodsRequest{Targets: pods(ctrNamespace, map[string]string{"app": "victim"}, nil), Count: tc.count})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("count %q: %v, want %q", tc.count, err, tc.want)
		}
	}
}
