// Package nodemetrics is faultlined's Prometheus metrics: proof that a
// fault hit, and what it cost.
//
// Node metrics are read from the engine when Prometheus scrapes, never
// counted twice: the proxy's own atomic counters become the fault's
// counters here, so the request path pays nothing for them. Only the
// histograms (delays as spent, the proxy's overhead) are observed on the
// request path, one lock-free observation each.
//
// Labels are bounded by the faults, never by requests: fault (its id),
// kind, namespace (the pod's, empty in local mode) and target (the pod's
// name, or the netns path or pid). A fault's series stay for Retention
// after it ends, with its final values, so that a scrape after the end
// still sees what the fault returned.
package nodemetrics

import (
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/fault"
	"github.com/faultline-dev/faultline/pkg/metrics"
	"github.com/faultline-dev/faultline/pkg/proxy/httpfault"
)

// DefaultRetention is how long an ended fault's series stay.
const DefaultRetention = 5 * time.Minute

// Buckets of the delay histogram, in seconds: dense around the delays
// users ask for (tens to hundreds of milliseconds), so that a requested
// interval such as 100 ms ± 20 ms is one bucket.
var DelayBuckets = []float64{.001, .0025, .005, .01, .025, .05, .075, .1, .125, .15, .2, .25, .3, .4, .5, .75, 1, 1.5, 2, 3, 5, 10, 30, 60}

// Buckets of the overhead histogram, in seconds.
var OverheadBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}

// faultLabels name one fault's series.
var faultLabels = []string{"fault", "kind", "namespace", "target"}

// Faults is what the node metrics read: an *engine.Engine.
type Faults interface {
	List() []engine.Status
}

// Node is faultlined's metrics: an engine.Monitor, and a
// prometheus.Collector once Watch has given it the engine.
type Node struct {
	// Retention is how long an ended fault's series stay; zero means
	// DefaultRetention.
	Retention time.Duration
	// now is time.Now, but for tests.
	now func() time.Time

	delays, overhead *prometheus.HistogramVec

	mu     sync.Mutex
	faults Faults
	ended  map[string]endedFault // by fault id
	// endedTotal counts ended faults by kind and reason.
	endedTotal map[[2]string]uint64
}

type endedFault struct {
	st engine.Status
	at time.Time
}

// NewNode returns node metrics; call Watch, then register it.
func NewNode() *Node {
	return &Node{
		now: time.Now,
		delays: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "faultline_fault_delay_seconds",
			Help:    "Delays the proxy spent on requests, as measured (a delay cut short by the fault's end counts what was spent).",
			Buckets: DelayBuckets,
		}, faultLabels),
		overhead: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "faultline_proxy_overhead_seconds",
			Help:    "What the proxy adds to a request it neither delays nor answers: from its head read to its head sent to the application, a dial included.",
			Buckets: OverheadBuckets,
		}, faultLabels),
		ended:      map[string]endedFault{},
		endedTotal: map[[2]string]uint64{},
	}
}

// Watch sets the engine whose faults the metrics read.
func (n *Node) Watch(f Faults) {
	n.mu.Lock()
	n.faults = f
	n.mu.Unlock()
}

func labelValues(id string, kind fault.Kind, t engine.Target) []string {
	target := t.String()
	if t.Pod.Name != "" {
		target = t.Pod.Name
	}
	return []string{id, string(kind), t.Pod.Namespace, target}
}

// Observers implements engine.Monitor.
func (n *Node) Observers(id string, kind fault.Kind, t engine.Target) (delays, overhead httpfault.Observer) {
	lv := labelValues(id, kind, t)
	return n.delays.WithLabelValues(lv...), n.overhead.WithLabelValues(lv...)
}

// Ended implements engine.Monitor: the fault's final values stay for
// Retention.
func (n *Node) Ended(st engine.Status) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.endedTotal[[2]string{string(st.Kind), string(st.EndReason)}]++
	n.ended[st.ID] = endedFault{st: st, at: n.now()}
	n.pruneLocked()
}

func (n *Node) retention() time.Duration {
	if n.Retention > 0 {
		return n.Retention
	}
	return DefaultRetention
}

// pruneLocked forgets ended faults older than the retention, and their
// histograms.
func (n *Node) pruneLocked() {
	cutoff := n.now().Add(-n.retention())
	for id, e := range n.ended {
		if e.at.Before(cutoff) {
			delete(n.ended, id)
			lv := labelValues(e.st.ID, e.st.Kind, e.st.Target)
			n.delays.DeleteLabelValues(lv...)
			n.overhead.DeleteLabelValues(lv...)
		}
	}
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// The series read from the engine at each scrape.
var (
	descActive = desc("faultline_faults_active", "Faults active (or starting, or draining) on this node.", "kind", "namespace")
	descState  = desc("faultline_fault_info", "One series per fault known to this node, with its state: starting, active, draining or ended (kept for the retention after its end).",
		append(faultLabels, "state", "claim")...)
	descExpires = desc("faultline_fault_expires_timestamp_seconds", "When the fault ends unless stopped first, as a Unix time.", faultLabels...)
	descEnded   = desc("faultline_faults_ended_total", "Faults ended, by kind and reason (expired, revoked, cancelled, shutdown, target-deleted).", "kind", "reason")
	descLinks   = desc("faultline_fault_bpf_links", "Kernel links (bpf_link) the fault holds now.", faultLabels...)
	descOpen    = desc("faultline_bpf_links_open", "Kernel links (bpf_link) faultlined's process holds open, counted in its file descriptors: more than the faults' faultline_fault_bpf_links would be a leak.")

	// counterDescs are the faults' counters; network ones are exposed for
	// network faults, the others for proxy faults (a zero then means "none
	// yet", not "does not apply").
	proxied = []fault.Kind{fault.KindHTTP, fault.KindGRPC}
	network = []fault.Kind{fault.KindNetwork}
	tcp     = []fault.Kind{fault.KindTCP}

	counterDescs = []struct {
		d     *prometheus.Desc
		kinds []fault.Kind // the kinds that have the series
		get   func(engine.Counters) uint64
	}{
		{desc("faultline_fault_requests_total", "Requests the fault's proxy saw.", faultLabels...), proxied, func(c engine.Counters) uint64 { return c.Requests }},
		{desc("faultline_fault_requests_matched_total", "Requests the fault's rule matched (not excluded, within its paths, methods and headers).", faultLabels...), proxied, func(c engine.Counters) uint64 { return c.Requests - c.Unmatched }},
		{desc("faultline_fault_requests_delayed_total", "Requests given a delay (answered ones included).", faultLabels...), proxied, func(c engine.Counters) uint64 { return c.Delayed }},
		{desc("faultline_fault_requests_errored_total", "Requests answered with the fault's error.", faultLabels...), proxied, func(c engine.Counters) uint64 { return c.Errored }},
		{desc("faultline_fault_upstream_errors_total", "Requests answered 502 because the application could not be reached.", faultLabels...), proxied, func(c engine.Counters) uint64 { return c.UpstreamErrors }},
		{desc("faultline_fault_connections_reset_total", "Established connections reset at the fault's start.", faultLabels...), []fault.Kind{fault.KindHTTP, fault.KindGRPC, fault.KindTCP}, func(c engine.Counters) uint64 { return c.ConnectionsReset }},
		{desc("faultline_fault_packets_seen_total", "Network faults: inbound packets matching the port and protocol.", faultLabels...), network, func(c engine.Counters) uint64 { return c.PacketsSeen }},
		{desc("faultline_fault_packets_dropped_total", "Network faults: packets dropped.", faultLabels...), network, func(c engine.Counters) uint64 { return c.PacketsDropped }},
		{desc("faultline_fault_connections_refused_total", "Network faults: new TCP connections refused.", faultLabels...), network, func(c engine.Counters) uint64 { return c.ConnectionsRefused }},
		{desc("faultline_fault_tcp_connections_total", "TCP faults: connections relayed.", faultLabels...), tcp, func(c engine.Counters) uint64 { return c.TCP.Connections }},
		{desc("faultline_fault_tcp_connections_toxic_total", "TCP faults: connections at least one toxic applied to.", faultLabels...), tcp, func(c engine.Counters) uint64 { return c.TCP.Toxic }},
		{desc("faultline_fault_tcp_connections_cut_total", "TCP faults: connections a toxic closed or reset.", faultLabels...), tcp, func(c engine.Counters) uint64 { return c.TCP.Cut }},
		{desc("faultline_fault_tcp_bytes_upstream_total", "TCP faults: bytes relayed from clients to the application (a direction without toxics counts when it ends).", faultLabels...), tcp, func(c engine.Counters) uint64 { return c.TCP.BytesUp }},
		{desc("faultline_fault_tcp_bytes_downstream_total", "TCP faults: bytes relayed from the application to clients.", faultLabels...), tcp, func(c engine.Counters) uint64 { return c.TCP.BytesDown }},
		{desc("faultline_fault_tcp_bytes_delayed_total", "TCP faults: bytes a latency, bandwidth or slicer toxic held back.", faultLabels...), tcp, func(c engine.Counters) uint64 { return c.TCP.BytesDelayed }},
		{desc("faultline_fault_tcp_bytes_dropped_total", "TCP faults: bytes read and never delivered (timeout, limit_data, a cut connection).", faultLabels...), tcp, func(c engine.Counters) uint64 { return c.TCP.BytesDropped }},
		{desc("faultline_fault_tls_handshakes_total", "TCP faults with tls: ClientHellos read.", faultLabels...), tcp, func(c engine.Counters) uint64 { return c.TCP.TLSHandshakes }},
		{desc("faultline_fault_tls_handshakes_faulted_total", "TCP faults with tls: handshakes the tls action faulted.", faultLabels...), tcp, func(c engine.Counters) uint64 { return c.TCP.TLSFaulted }},
	}
)

// Describe implements prometheus.Collector.
func (n *Node) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descActive, descState, descExpires, descEnded, descLinks, descOpen} {
		ch <- d
	}
	for _, c := range counterDescs {
		ch <- c.d
	}
	n.delays.Describe(ch)
	n.overhead.Describe(ch)
}

// Collect implements prometheus.Collector.
func (n *Node) Collect(ch chan<- prometheus.Metric) {
	n.mu.Lock()
	n.pruneLocked()
	faults := n.faults
	sts := make([]engine.Status, 0, len(n.ended))
	for _, e := range n.ended {
		sts = append(sts, e.st)
	}
	for k, v := range n.endedTotal {
		ch <- prometheus.MustNewConstMetric(descEnded, prometheus.CounterValue, float64(v), k[0], k[1])
	}
	n.mu.Unlock()

	ended := len(sts)
	if faults != nil {
		sts = append(sts, faults.List()...)
	}
	active := map[[2]string]int{}
	seen := map[string]bool{}
	// Live faults come after ended ones: a fault that ended between the
	// two readings is reported once, ended.
	for i, st := range sts {
		if seen[st.ID] {
			continue
		}
		seen[st.ID] = true
		lv := labelValues(st.ID, st.Kind, st.Target)
		if i >= ended {
			active[[2]string{string(st.Kind), st.Target.Pod.Namespace}]++
			ch <- prometheus.MustNewConstMetric(descExpires, prometheus.GaugeValue, float64(st.Expires.UnixMilli())/1e3, lv...)
		}
		state := st.State.String()
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, 1, append(lv, state, st.Claim.String())...)
		ch <- prometheus.MustNewConstMetric(descLinks, prometheus.GaugeValue, float64(st.Links), lv...)
		for _, c := range counterDescs {
			if slices.Contains(c.kinds, st.Kind) {
				v := c.get(st.Counters)
				ch <- prometheus.MustNewConstMetric(c.d, prometheus.CounterValue, float64(v), lv...)
			}
		}
	}
	for k, v := range active {
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(v), k[0], k[1])
	}
	ch <- prometheus.MustNewConstMetric(descOpen, prometheus.GaugeValue, float64(openLinks()))
	n.delays.Collect(ch)
	n.overhead.Collect(ch)
}

// openLinks counts this process's bpf_link file descriptors.
func openLinks() int {
	fds, _ := os.ReadDir("/proc/self/fd")
	n := 0
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && l == "anon_inode:bpf_link" {
			n++
		}
	}
	return n
}

// NewNodeRegistry returns a registry with the node's metrics, Go's and
// the process's, and faultline_build_info.
func NewNodeRegistry(n *Node) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(n, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), metrics.BuildInfo("faultlined"))
	return reg
}
