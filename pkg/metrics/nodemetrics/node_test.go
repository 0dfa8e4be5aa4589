package nodemetrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/fault"
	"github.com/faultline-dev/faultline/pkg/proxy/httpfault"
)

// fakeFaults is a test double of the engine.
type fakeFaults []engine.Status

func (f fakeFaults) List() []engine.Status { return f }

func TestNodeExposesLiveAndEndedFaults(t *testing.T) {
	now := time.Unix(1000, 0)
	n := NewNode()
	n.now = func() time.Time { return now }
	pod := engine.Target{Pod: engine.PodRef{Namespace: "shop", Name: "catalog-1"}}
	live := engine.Status{ID: "f1", Kind: fault.KindHTTP, Target: pod, State: engine.StateActive, Links: 1,
		Counters: engine.Counters{Counters: httpfault.Counters{Requests: 10, Unmatched: 2, Delayed: 5, Errored: 3}}}
	n.Watch(fakeFaults{live})
	delays, _ := n.Observers("f1", fault.KindHTTP, pod)
	delays.Observe(0.1)
	n.Ended(engine.Status{ID: "f0", Kind: fault.KindNetwork, Target: engine.Target{NetnsPath: "/run/netns/a"}, State: engine.StateEnded,
		EndReason: engine.ReasonExpired, Counters: engine.Counters{PacketsSeen: 7, PacketsDropped: 4}})

	want := `
# HELP faultline_fault_requests_errored_total Requests answered with the fault's error.
# TYPE faultline_fault_requests_errored_total counter
faultline_fault_requests_errored_total{fault="f1",kind="http",namespace="shop",target="catalog-1"} 3
# HELP faultline_fault_requests_matched_total Requests the fault's rule matched (not excluded, within its paths, methods and headers).
# TYPE faultline_fault_requests_matched_total counter
faultline_fault_requests_matched_total{fault="f1",kind="http",namespace="shop",target="catalog-1"} 8
# HELP faultline_fault_packets_dropped_total Network faults: packets dropped.
# TYPE faultline_fault_packets_dropped_total counter
faultline_fault_packets_dropped_total{fault="f0",kind="network",namespace="",target="/run/netns/a"} 4
# HELP faultline_faults_active Faults active (or starting, or draining) on this node.
# TYPE faultline_faults_active gauge
faultline_faults_active{kind="http",namespace="shop"} 1
# HELP faultline_faults_ended_total Faults ended, by kind and reason (expired, revoked, cancelled, shutdown, target-deleted).
# TYPE faultline_faults_ended_total counter
faultline_faults_ended_total{kind="network",reason="expired"} 1
# HELP faultline_fault_bpf_links Kernel links (bpf_link) the fault holds now.
# TYPE faultline_fault_bpf_links gauge
faultline_fault_bpf_links{fault="f0",kind="network",namespace="",target="/run/netns/a"} 0
faultline_fault_bpf_links{fault="f1",kind="http",namespace="shop",target="catalog-1"} 1
`
	names := []string{"faultline_fault_requests_errored_total", "faultline_fault_requests_matched_total", "faultline_fault_packets_dropped_total",
		"faultline_faults_active", "faultline_faults_ended_total", "faultline_fault_bpf_links"}
	if err := testutil.CollectAndCompare(n, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	if c := testutil.CollectAndCount(n, "faultline_fault_delay_seconds"); c != 1 {
		t.Errorf("%d delay histograms, want 1", c)
	}
	// A proxy fault has no packet counters; a network fault no request ones.
	if c := testutil.CollectAndCount(n, "faultline_fault_packets_seen_total"); c != 1 {
		t.Errorf("%d packets_seen series, want 1 (the network fault's)", c)
	}

	// After the retention, the ended fault's series and its histograms go.
	n.Ended(engine.Status{ID: "f1", Kind: fault.KindHTTP, Target: pod, State: engine.StateEnded, EndReason: engine.ReasonRevoked})
	n.Watch(fakeFaults{})
	now = now.Add(DefaultRetention + time.Second)
	if c := testutil.CollectAndCount(n, "faultline_fault_requests_total", "faultline_fault_delay_seconds", "faultline_fault_bpf_links"); c != 0 {
		t.Errorf("%d series left after the retention, want 0", c)
	}
	if c := testutil.CollectAndCount(n, "faultline_faults_ended_total"); c != 2 {
		t.Errorf("%d ended_total series, want 2 (it is a counter: it stays)", c)
	}
}

func TestNodeRegistryGathers(t *testing.T) {
	n := NewNode()
	reg := NewNodeRegistry(n)
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	if c, err := testutil.GatherAndCount(reg, "faultline_build_info", "faultline_bpf_links_open"); err != nil || c != 2 {
		t.Errorf("build info and open links: %d series, %v", c, err)
	}
}
