package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Gateway is the gateway's metrics: a gateway.Metrics, gRPC interceptors
// counting calls, and a prometheus.Collector.
type Gateway struct {
	calls        *prometheus.CounterVec
	targets      prometheus.Histogram
	timeToActive prometheus.Histogram
	active       prometheus.Gauge
}

// NewGateway returns the gateway's metrics.
func NewGateway() *Gateway {
	return &Gateway{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "faultline_gateway_calls_total",
			Help: "Gateway calls, by method and gRPC code (Unauthenticated included).",
		}, []string{"method", "code"}),
		targets: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "faultline_gateway_call_targets",
			Help:    "Targets per inject call.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000},
		}),
		timeToActive: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "faultline_gateway_time_to_active_seconds",
			Help:    "From asking a node to start a target's fault to the node saying it is active.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "faultline_gateway_targets_active",
			Help: "Targets whose fault, started through this gateway, is active.",
		}),
	}
}

// Injecting implements gateway.Metrics.
func (g *Gateway) Injecting(n int) { g.targets.Observe(float64(n)) }

// Active implements gateway.Metrics.
func (g *Gateway) Active(took time.Duration) {
	g.timeToActive.Observe(took.Seconds())
	g.active.Inc()
}

// Ended implements gateway.Metrics.
func (g *Gateway) Ended() { g.active.Dec() }

// ServerOptions count every call by method and code; put them first, so
// that refused calls count too.
func (g *Gateway) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			resp, err := h(ctx, req)
			g.calls.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			err := h(srv, ss)
			g.calls.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
			return err
		}),
	}
}

// Describe implements prometheus.Collector.
func (g *Gateway) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range []prometheus.Collector{g.calls, g.targets, g.timeToActive, g.active} {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (g *Gateway) Collect(ch chan<- prometheus.Metric) {
	for _, c := range []prometheus.Collector{g.calls, g.targets, g.timeToActive, g.active} {
		c.Collect(ch)
	}
}

// NewGatewayRegistry returns a registry with the gateway's metrics, Go's
// and the process's, and faultline_build_info.
func NewGatewayRegistry(g *Gateway) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(g, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), BuildInfo("faultline"))
	return reg
}
