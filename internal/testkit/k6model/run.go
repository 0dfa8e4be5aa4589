package k6model

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Result is what a run produced.
type Result struct {
	// Thresholds maps "metric: expression" to whether it held.
	Thresholds map[string]bool
	// Errors are the first exceptions iterations threw (k6 logs them and
	// goes on); ErrorCount counts them all.
	Errors     []error
	ErrorCount int
}

// maxErrors bounds Result.Errors.
const maxErrors = 5

// dial makes a connection with Model.Dial, or from here.
func (m *Model) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if m.Dial != nil {
		return m.Dial(ctx, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

type scenario struct {
	name       string
	executor   string
	vus        int
	iterations int
	duration   time.Duration
	startTime  time.Duration
	exec       string
}

// Run runs the script as k6 run would: its options' scenarios (or one
// iteration of the default function), then its thresholds.
func (m *Model) Run(ctx context.Context, script string) (*Result, error) {
	vu0, err := m.NewVU(ctx, script)
	if err != nil {
		return nil, err
	}
	opts, _ := vu0.Export("options").Export().(map[string]any)
	vu0.Close()
	scs, err := scenarios(opts)
	if err != nil {
		return nil, err
	}
	res := &Result{Thresholds: map[string]bool{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, sc := range scs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs := m.runScenario(ctx, script, sc)
			mu.Lock()
			res.ErrorCount += len(errs)
			for _, e := range errs {
				if len(res.Errors) < maxErrors {
					res.Errors = append(res.Errors, e)
				}
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if th, ok := opts["thresholds"].(map[string]any); ok {
		for metric, exprs := range th {
			list, _ := exprs.([]any)
			for _, e := range list {
				expr, _ := e.(string)
				ok, err := m.threshold(metric, expr)
				if err != nil {
					return res, err
				}
				res.Thresholds[metric+": "+expr] = ok
			}
		}
	}
	return res, ctx.Err()
}

func scenarios(opts map[string]any) ([]scenario, error) {
	raw, ok := opts["scenarios"].(map[string]any)
	if !ok {
		return []scenario{{name: "default", executor: "per-vu-iterations", vus: 1, iterations: 1, exec: "default"}}, nil
	}
	var out []scenario
	for _, name := range sortedKeys(raw) {
		s, _ := raw[name].(map[string]any)
		sc := scenario{name: name, executor: str(s["executor"]), vus: num(s["vus"], 1), iterations: num(s["iterations"], 1), exec: str(s["exec"])}
		if sc.exec == "" {
			sc.exec = "default"
		}
		var err error
		if sc.duration, err = dur(s["duration"]); err != nil {
			return nil, fmt.Errorf("scenario %s: duration: %w", name, err)
		}
		if sc.startTime, err = dur(s["startTime"]); err != nil {
			return nil, fmt.Errorf("scenario %s: startTime: %w", name, err)
		}
		switch sc.executor {
		case "constant-vus", "shared-iterations", "per-vu-iterations":
		default:
			return nil, fmt.Errorf("scenario %s: the model has no executor %q", name, sc.executor)
		}
		out = append(out, sc)
	}
	return out, nil
}

func (m *Model) runScenario(ctx context.Context, script string, sc scenario) []error {
	select {
	case <-time.After(sc.startTime):
	case <-ctx.Done():
		return nil
	}
	var (
		mu     sync.Mutex
		errs   []error
		wg     sync.WaitGroup
		shared atomic.Int64
	)
	deadline := time.Now().Add(sc.duration)
	for range sc.vus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vu, err := m.NewVU(ctx, script)
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			defer vu.Close()
			for i := 0; ctx.Err() == nil; i++ {
				switch sc.executor {
				case "constant-vus":
					if !time.Now().Before(deadline) {
						return
					}
				case "shared-iterations":
					if shared.Add(1) > int64(sc.iterations) {
						return
					}
				case "per-vu-iterations":
					if i >= sc.iterations {
						return
					}
				}
				if err := vu.Call(sc.exec); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("scenario %s: %w", sc.name, err))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return errs
}

var thresholdExpr = regexp.MustCompile(`^\s*([a-z]+(?:\([0-9.]+\))?)\s*(<=|>=|==|!=|<|>)\s*([0-9.]+)\s*$`)

var metricWithTags = regexp.MustCompile(`^([^{]+)\{(.*)\}$`)

// threshold evaluates one threshold; the metric may carry a tag filter,
// as in checks{check:name}.
func (m *Model) threshold(metric, expr string) (bool, error) {
	g := thresholdExpr.FindStringSubmatch(expr)
	if g == nil {
		return false, fmt.Errorf("threshold %q of %s: the model does not understand it", expr, metric)
	}
	name, tags := metric, map[string]string(nil)
	if t := metricWithTags.FindStringSubmatch(metric); t != nil {
		name, tags = t[1], map[string]string{}
		for _, kv := range strings.Split(t[2], ",") {
			k, v, _ := strings.Cut(kv, ":")
			tags[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	v, err := m.Metrics.aggregate(name, g[1], tags)
	if err != nil {
		return false, err
	}
	limit, _ := strconv.ParseFloat(g[3], 64)
	switch g[2] {
	case "<":
		return v < limit, nil
	case "<=":
		return v <= limit, nil
	case ">":
		return v > limit, nil
	case ">=":
		return v >= limit, nil
	case "==":
		return v == limit, nil
	}
	return v != limit, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func num(v any, def int) int {
	switch x := v.(type) {
	case int64:
		return int(x)
	case float64:
		return int(x)
	}
	return def
}

func dur(v any) (time.Duration, error) {
	switch x := v.(type) {
	case nil:
		return 0, nil
	case string:
		return time.ParseDuration(x)
	case int64:
		return time.Duration(x) * time.Millisecond, nil
	case float64:
		return time.Duration(x * float64(time.Millisecond)), nil
	}
	return 0, fmt.Errorf("%v is not a duration", v)
}
