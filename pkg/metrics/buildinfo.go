// Package metrics has what faultline's Prometheus metrics share (build
// info, the /metrics server) and the gateway's metrics; faultlined's are in
// nodemetrics. It imports nothing of the engine, so that the CLI builds on
// any platform.
package metrics

import (
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// BuildInfo is faultline_build_info{binary, version, revision, goversion} 1.
func BuildInfo(binary string) prometheus.Collector {
	version, revision, goVersion := "unknown", "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "faultline_build_info",
		Help:        "Which faultline this is: always 1.",
		ConstLabels: prometheus.Labels{"binary": binary, "version": version, "revision": revision, "goversion": goVersion},
	})
	g.Set(1)
	return g
}
