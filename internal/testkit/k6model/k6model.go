// Package k6model runs k6 scripts without k6, to test faultline's k6
// library: an embedded JavaScript engine (grafana/sobek, MIT) loads the
// script as an ES module, and the parts of k6 the library and its examples
// use are modelled from k6's documentation:
//
//   - k6: check, sleep, fail, group
//   - k6/metrics: Counter, Rate, Trend (declared in the init context only)
//   - k6/net/grpc: Client with load (init context only), connect (VU
//     context only; plaintext, reflect, reflectMetadata, timeout, tls),
//     invoke (returning {status, message, headers, trailers, error}, the
//     message decoded with protojson, so 64-bit integers are strings),
//     close, and the status constants
//   - k6/http: get and request, with the http_reqs, http_req_failed and
//     http_req_duration metrics
//   - open(path) in the init context only (text mode; a relative path is
//     relative to the main script), throwing when the file cannot be read
//   - __ENV, the per-VU init context, options.scenarios (constant-vus,
//     shared-iterations, per-vu-iterations; startTime, exec) and
//     options.thresholds (rate, count, avg, p(N) against a number).
//
// Module code is Go; each k6 module is exposed to scripts by a small ES
// module shim that re-exports a Go object, so a script and the library are
// parsed, linked and evaluated as k6 would: as ES modules.
package k6model

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/grafana/sobek"
)

// Model runs scripts; its metrics accumulate over every VU.
type Model struct {
	Env     map[string]string
	Metrics *Metrics
	// Dial makes every connection scripts open (HTTP and gRPC), e.g. from
	// a test's client network namespace. Nil dials from here.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// New returns a model with the given __ENV.
func New(env map[string]string) *Model {
	return &Model{Env: env, Metrics: newMetrics()}
}

// VU is one virtual user: a runtime with the script evaluated in its init
// context.
type VU struct {
	model   *Model
	rt      *sobek.Runtime
	ns      *sobek.Object // the script's module namespace
	ctx     context.Context
	inInit  bool
	mu      sync.Mutex
	closers []func()
}

// shims re-export the Go-implemented modules.
var shims = map[string]string{
	"k6": `const m = globalThis.__k6modules["k6"];
export const check = m.check, sleep = m.sleep, fail = m.fail, group = m.group;
export default m;`,
	"k6/metrics": `const m = globalThis.__k6modules["k6/metrics"];
export const Counter = m.Counter, Rate = m.Rate, Trend = m.Trend, Gauge = m.Gauge;
export default m;`,
	"k6/net/grpc": `const m = globalThis.__k6modules["k6/net/grpc"];
export const Client = m.Client, StatusOK = m.StatusOK;
export default m;`,
	"k6/http": `const m = globalThis.__k6modules["k6/http"];
export const get = m.get, request = m.request;
export default m;`,
}

// NewVU makes a VU and runs the script's init context in it.
func (m *Model) NewVU(ctx context.Context, script string) (*VU, error) {
	vu := &VU{model: m, rt: sobek.New(), ctx: ctx, inInit: true}
	vu.rt.SetFieldNameMapper(sobek.UncapFieldNameMapper())
	env := vu.rt.NewObject()
	for k, v := range m.Env {
		env.Set(k, v)
	}
	vu.rt.Set("__ENV", env)
	mods := vu.rt.NewObject()
	mods.Set("k6", vu.k6Module())
	mods.Set("k6/metrics", vu.metricsModule())
	mods.Set("k6/net/grpc", vu.grpcModule())
	mods.Set("k6/http", vu.httpModule())
	vu.rt.Set("__k6modules", mods)
	vu.rt.Set("console", vu.console())

	abs, err := filepath.Abs(script)
	if err != nil {
		return nil, err
	}
	vu.rt.Set("open", func(path string) string {
		if !vu.inInit {
			vu.throw(`The "open()" function is only available in the init stage (i.e. the global scope), see https://grafana.com/docs/k6/latest/using-k6/test-lifecycle/ for more information`)
		}
		if !filepath.IsAbs(path) {
			path = filepath.Join(filepath.Dir(abs), path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			vu.throw("%v", err)
		}
		return string(b)
	})
	r := &resolver{cache: map[string]sobek.ModuleRecord{}}
	mod, err := r.resolve(nil, abs)
	if err != nil {
		return nil, err
	}
	stop := vu.interruptOnDone()
	defer stop()
	if err := mod.(sobek.CyclicModuleRecord).Link(); err != nil {
		return nil, fmt.Errorf("link %s: %w", script, err)
	}
	p := vu.rt.CyclicModuleRecordEvaluate(mod.(sobek.CyclicModuleRecord), r.resolve)
	if p.State() == sobek.PromiseStateRejected {
		return nil, fmt.Errorf("init context of %s: %v", script, p.Result())
	}
	vu.ns = vu.rt.NamespaceObjectFor(mod)
	vu.inInit = false
	return vu, nil
}

// resolver loads modules: k6 modules from shims, files relative to the
// importing module.
type resolver struct {
	mu    sync.Mutex
	cache map[string]sobek.ModuleRecord
	paths map[sobek.ModuleRecord]string
}

func (r *resolver) resolve(referrer interface{}, specifier string) (sobek.ModuleRecord, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := specifier
	src, isShim := shims[specifier]
	if !isShim {
		if strings.HasPrefix(specifier, "https://") || strings.HasPrefix(specifier, "http://") {
			return nil, fmt.Errorf("the model does not fetch %s: import the library by path", specifier)
		}
		if !filepath.IsAbs(specifier) {
			base := "."
			if m, ok := referrer.(sobek.ModuleRecord); ok && r.paths != nil {
				base = filepath.Dir(r.paths[m])
			}
			key = filepath.Join(base, specifier)
		}
		b, err := os.ReadFile(key)
		if err != nil {
			return nil, fmt.Errorf("import %q: %w", specifier, err)
		}
		src = string(b)
	}
	if m, ok := r.cache[key]; ok {
		return m, nil
	}
	m, err := sobek.ParseModule(key, src, r.resolve)
	if err != nil {
		return nil, err
	}
	r.cache[key] = m
	if r.paths == nil {
		r.paths = map[sobek.ModuleRecord]string{}
	}
	r.paths[m] = key
	return m, nil
}

// interruptOnDone interrupts the runtime when the VU's context ends.
func (vu *VU) interruptOnDone() func() {
	done := make(chan struct{})
	go func() {
		select {
		case <-vu.ctx.Done():
			vu.rt.Interrupt(vu.ctx.Err())
		case <-done:
		}
	}()
	return func() { close(done) }
}

// Export returns an export of the script.
func (vu *VU) Export(name string) sobek.Value {
	return vu.ns.Get(name)
}

// Call runs an exported function in the VU context, as an iteration.
func (vu *VU) Call(name string) (err error) {
	fn, ok := sobek.AssertFunction(vu.ns.Get(name))
	if !ok {
		return fmt.Errorf("the script exports no function %q", name)
	}
	stop := vu.interruptOnDone()
	defer stop()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	_, err = fn(sobek.Undefined(), vu.rt.ToValue(map[string]any{}))
	var ex *sobek.Exception
	if errors.As(err, &ex) {
		return fmt.Errorf("%s", ex.Value().String())
	}
	return err
}

// Close releases what the VU holds (gRPC connections).
func (vu *VU) Close() {
	vu.mu.Lock()
	defer vu.mu.Unlock()
	for _, c := range vu.closers {
		c()
	}
	vu.closers = nil
}

func (vu *VU) throw(format string, args ...any) {
	panic(vu.rt.NewGoError(fmt.Errorf(format, args...)))
}

func (vu *VU) console() *sobek.Object {
	c := vu.rt.NewObject()
	log := func(call sobek.FunctionCall) sobek.Value {
		var parts []string
		for _, a := range call.Arguments {
			parts = append(parts, a.String())
		}
		fmt.Fprintln(os.Stderr, "console:", strings.Join(parts, " "))
		return sobek.Undefined()
	}
	for _, n := range []string{"log", "info", "warn", "error", "debug"} {
		c.Set(n, log)
	}
	return c
}

// k6Module models the k6 module.
func (vu *VU) k6Module() *sobek.Object {
	m := vu.rt.NewObject()
	m.Set("check", func(val sobek.Value, sets *sobek.Object, tags map[string]string) bool {
		all := true
		for _, name := range sets.Keys() {
			ok := false
			if fn, isFn := sobek.AssertFunction(sets.Get(name)); isFn {
				res, err := fn(sobek.Undefined(), val)
				if err != nil {
					panic(err)
				}
				ok = res.ToBoolean()
			} else {
				ok = sets.Get(name).ToBoolean()
			}
			t := map[string]string{"check": name}
			for k, v := range tags {
				t[k] = v
			}
			vu.model.Metrics.addRate("checks", ok, t)
			all = all && ok
		}
		return all
	})
	m.Set("sleep", func(secs float64) {
		t := time.NewTimer(time.Duration(secs * float64(time.Second)))
		defer t.Stop()
		select {
		case <-t.C:
		case <-vu.ctx.Done():
		}
	})
	m.Set("fail", func(msg string) {
		vu.throw("%s", msg)
	})
	m.Set("group", func(name string, fn sobek.Callable) sobek.Value {
		v, err := fn(sobek.Undefined())
		if err != nil {
			panic(err)
		}
		return v
	})
	return m
}

// metricsModule models k6/metrics: metrics are declared in the init
// context; add() records into the model's registry.
func (vu *VU) metricsModule() *sobek.Object {
	m := vu.rt.NewObject()
	kind := func(k metricKind) func(sobek.ConstructorCall) *sobek.Object {
		return func(call sobek.ConstructorCall) *sobek.Object {
			if !vu.inInit {
				vu.throw("metrics must be declared in the init context")
			}
			name := call.Argument(0).String()
			if name == "" || name == "undefined" {
				vu.throw("a metric needs a name")
			}
			vu.model.Metrics.declare(name, k)
			obj := call.This
			obj.Set("name", name)
			obj.Set("add", func(v sobek.Value, tags map[string]string) bool {
				if vu.inInit {
					vu.throw("metric values cannot be added in the init context")
				}
				vu.model.Metrics.add(name, v.Export(), tags)
				return true
			})
			return nil
		}
	}
	m.Set("Counter", kind(kindCounter))
	m.Set("Rate", kind(kindRate))
	m.Set("Trend", kind(kindTrend))
	m.Set("Gauge", kind(kindTrend))
	return m
}

// sortedKeys is for stable output.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Global returns a global variable of the VU as a string.
func (vu *VU) Global(name string) string {
	v := vu.rt.GlobalObject().Get(name)
	if v == nil || sobek.IsUndefined(v) {
		return ""
	}
	return v.String()
}
