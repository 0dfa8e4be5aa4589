package k6model

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
)

type metricKind int

const (
	kindCounter metricKind = iota
	kindRate
	kindTrend
)

// Sample is one recorded value with its tags.
type Sample struct {
	Value float64
	Tags  map[string]string
}

// Metrics is the model's registry, shared by all VUs.
type Metrics struct {
	mu      sync.Mutex
	kinds   map[string]metricKind
	samples map[string][]Sample
}

func newMetrics() *Metrics {
	return &Metrics{kinds: map[string]metricKind{}, samples: map[string][]Sample{}}
}

func (m *Metrics) declare(name string, k metricKind) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.kinds[name] = k
}

func (m *Metrics) add(name string, v any, tags map[string]string) {
	var f float64
	switch x := v.(type) {
	case int64:
		f = float64(x)
	case float64:
		f = x
	case bool:
		if x {
			f = 1
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.samples[name] = append(m.samples[name], Sample{Value: f, Tags: tags})
}

// record adds a sample to a built-in metric, declaring it on first use.
func (m *Metrics) record(name string, k metricKind, v any, tags map[string]string) {
	m.mu.Lock()
	if _, declared := m.kinds[name]; !declared {
		m.kinds[name] = k
	}
	m.mu.Unlock()
	m.add(name, v, tags)
}

func (m *Metrics) addRate(name string, ok bool, tags map[string]string) {
	m.record(name, kindRate, ok, tags)
}

func (m *Metrics) addTrend(name string, v float64, tags map[string]string) {
	m.record(name, kindTrend, v, tags)
}

func (m *Metrics) addCount(name string, v float64, tags map[string]string) {
	m.record(name, kindCounter, v, tags)
}

// Samples returns a metric's samples whose tags include match.
func (m *Metrics) Samples(name string, match map[string]string) []Sample {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Sample
	for _, s := range m.samples[name] {
		ok := true
		for k, v := range match {
			if s.Tags[k] != v {
				ok = false
			}
		}
		if ok {
			out = append(out, s)
		}
	}
	return out
}

// Sum adds a metric's values (a Counter's total; a Rate's true count).
func (m *Metrics) Sum(name string, match map[string]string) float64 {
	var sum float64
	for _, s := range m.Samples(name, match) {
		sum += s.Value
	}
	return sum
}

// Count is the number of samples.
func (m *Metrics) Count(name string, match map[string]string) int {
	return len(m.Samples(name, match))
}

// Rate is the share of non-zero samples.
func (m *Metrics) Rate(name string, match map[string]string) float64 {
	n := m.Count(name, match)
	if n == 0 {
		return 0
	}
	return m.Sum(name, match) / float64(n)
}

// aggregate computes a threshold aggregate of a metric: rate, count, avg,
// min, max, med, p(N).
func (m *Metrics) aggregate(name, agg string, tags map[string]string) (float64, error) {
	s := m.Samples(name, tags)
	vals := make([]float64, len(s))
	for i, x := range s {
		vals[i] = x.Value
	}
	sort.Float64s(vals)
	switch {
	case agg == "rate":
		return m.Rate(name, tags), nil
	case agg == "count":
		return m.Sum(name, tags), nil
	case len(vals) == 0:
		return 0, nil
	case agg == "avg":
		var sum float64
		for _, v := range vals {
			sum += v
		}
		return sum / float64(len(vals)), nil
	case agg == "min":
		return vals[0], nil
	case agg == "max":
		return vals[len(vals)-1], nil
	case agg == "med":
		return percentile(vals, 50), nil
	case strings.HasPrefix(agg, "p(") && strings.HasSuffix(agg, ")"):
		var p float64
		if _, err := fmt.Sscanf(agg, "p(%g)", &p); err != nil {
			return 0, err
		}
		return percentile(vals, p), nil
	}
	return 0, fmt.Errorf("unknown aggregate %q", agg)
}

func percentile(sorted []float64, p float64) float64 {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// MetricSummary is one metric over all its samples, as the stand-in k6
// command exports it.
type MetricSummary struct {
	Type  string  `json:"type"`  // counter, rate or trend
	Count int     `json:"count"` // samples
	Sum   float64 `json:"sum"`   // a counter's total; a rate's true samples
	Rate  float64 `json:"rate"`  // a rate's share of true samples
	Avg   float64 `json:"avg"`   // a trend's mean
}

// Summary summarises every metric that has samples or was declared.
func (m *Metrics) Summary() map[string]MetricSummary {
	m.mu.Lock()
	names := map[string]metricKind{}
	for n, k := range m.kinds {
		names[n] = k
	}
	m.mu.Unlock()
	out := map[string]MetricSummary{}
	for name, k := range names {
		s := MetricSummary{Type: [...]string{"counter", "rate", "trend"}[k], Count: m.Count(name, nil), Sum: m.Sum(name, nil)}
		if s.Count > 0 {
			s.Rate = m.Rate(name, nil)
			s.Avg = s.Sum / float64(s.Count)
		}
		out[name] = s
	}
	return out
}
