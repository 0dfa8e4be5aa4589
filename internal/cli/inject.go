package cli

import (
	"context"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/faultline-dev/faultline/pkg/fault"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

func newCmdInject(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inject",
		Short: "Inject a fault and wait until it ends",
	}
	cmd.AddCommand(newCmdInjectHTTP(g), newCmdInjectGRPC(g), newCmdInjectNetwork(g), newCmdInjectTCP(g))
	return cmd
}

// targetParams are the flags every inject subcommand shares: a target
// given directly (--netns, --pid, through the local faultlined) or by
// selector (--selector, --namespace, --service, through a gateway).
type targetParams struct {
	id, netns string
	pid       int32
	duration  time.Duration
	sel       selectorParams
	local     localParams
}

func (p *targetParams) bind(f *pflag.FlagSet) {
	f.StringVar(&p.id, "id", "", "fault id (default: generated)")
	f.StringVar(&p.netns, "netns", "", "target network namespace path, e.g. /run/netns/NAME")
	f.Int32Var(&p.pid, "pid", 0, "target process; its network namespace is used")
	f.DurationVar(&p.duration, "duration", 0, "how long the fault lasts, at least 1s (required)")
	p.sel.bind(f)
	p.local.bind(f)
}

// run sends the request to faultlined, or to a gateway when the targets
// are given by selector.
func (p *targetParams) run(ctx context.Context, g *globals, req *pb.InjectRequest) error {
	if p.sel.given() {
		return g.injectVia(ctx, &p.local, &p.sel, req)
	}
	return g.inject(ctx, req)
}

// request builds the request around a fault, checking the shared flags
// and the fault's port (0 allowed when allowZero).
func (p *targetParams) request(port int, allowZero bool) (*pb.InjectRequest, error) {
	req := &pb.InjectRequest{Id: p.id, Duration: durationpb.New(p.duration)}
	switch {
	case (p.netns != "" || p.pid != 0) && p.sel.given():
		return nil, usagef("give --netns/--pid or --selector/--namespace/--service, not both")
	case p.netns != "" && p.pid != 0:
		return nil, usagef("give --netns or --pid, not both")
	case p.netns != "":
		req.Target = &pb.Target{Kind: &pb.Target_NetnsPath{NetnsPath: p.netns}}
	case p.pid != 0:
		req.Target = &pb.Target{Kind: &pb.Target_Pid{Pid: p.pid}}
	case p.sel.given():
	default:
		return nil, usagef("give a target with --netns PATH, --pid N, --selector, --namespace or --service")
	}
	if p.duration == 0 {
		return nil, usagef("--duration is required, e.g. --duration 30s")
	}
	if err := checkPort(port, allowZero); err != nil {
		return nil, err
	}
	if req.Id == "" {
		req.Id = fault.NewID("f")
	}
	return req, nil
}

// timingParams are the delay and error-rate flags of http and grpc faults.
type timingParams struct {
	delay, variation time.Duration
	delayRate        float64
	errorRate        float64
	failFirst        int
	failFirstKey     string
	phases           []string
}

// failFirstProto is the --fail-first sequence, if given.
func (p *timingParams) failFirstProto() (*pb.FailFirst, error) {
	switch {
	case p.failFirst == 0 && p.failFirstKey != "":
		return nil, usagef("--fail-first-key needs --fail-first N")
	case p.failFirst == 0:
		return nil, nil
	case p.failFirst < 0 || p.failFirst > math.MaxUint32:
		return nil, usagef("--fail-first must be in 1-100, got %d", p.failFirst)
	}
	return &pb.FailFirst{Attempts: uint32(p.failFirst), KeyHeader: p.failFirstKey}, nil
}

func (p *timingParams) bind(f *pflag.FlagSet, what, failed string) {
	f.DurationVar(&p.delay, "delay", 0, "average delay added to matching "+what+" (averageDelay)")
	f.DurationVar(&p.variation, "delay-variation", 0, "delays are uniform in [delay-variation, delay+variation] (delayVariation)")
	f.Float64Var(&p.delayRate, "delay-rate", 1, "fraction of matching "+what+" delayed (delayRate)")
	f.Float64Var(&p.errorRate, "error-rate", 0, "fraction of matching "+what+" "+failed+" (errorRate)")
	f.IntVar(&p.failFirst, "fail-first", 0, "instead of --error-rate: the first N attempts of each logical request are "+failed+", later ones pass (failFirst)")
	f.StringArrayVar(&p.phases, "phase", nil, "instead of the delay and error flags, a timeline: DURATION[,key=value...] with the keys of those flags, e.g. 10s,error-rate=1,error-code=429; repeatable, in order; after the last, requests pass")
	f.StringVar(&p.failFirstKey, "fail-first-key", "", "the header (gRPC: metadata key) naming a logical request for --fail-first, e.g. Idempotency-Key; default: method and path")
}

func checkPort(port int, allowZero bool) error {
	if (port == 0 && !allowZero) || port < 0 || port > 65535 {
		return usagef("--port must be in 1-65535, got %d", port)
	}
	return nil
}

type httpParams struct {
	targetParams
	port int
	timingParams
	delayMode               string
	errorCode               int
	errorBody, exclude      string
	errorHeaders            []string
	paths, methods, headers []string
	keepConnections         bool
	rewriteStatus           int
	rewriteSet, rewriteDel  []string
	rewriteBody             string
	flags                   *pflag.FlagSet // to tell an empty --rewrite-body from none
}

func newCmdInjectHTTP(g *globals) *cobra.Command {
	var p httpParams
	cmd := &cobra.Command{
		Use:   "http",
		Short: "Delay or fail HTTP requests to a port of a network namespace",
		Long: `Delay or fail HTTP requests to a port, for --duration; blocks until the
fault ends and prints its counters. Ctrl-C revokes the fault at once.

Examples:
  faultline inject http --netns /run/netns/catalog --port 8080 --delay 900ms --delay-variation 150ms --duration 40s
  faultline inject http --pid 4242 --port 8080 --error-rate 0.1 --error-code 503 --error-body '{"error":"unavailable"}' --error-header 'Content-Type: application/json' --exclude /health --duration 1m
  faultline inject http --netns /run/netns/api --port 80 --match-path '/api/*' --match-method POST --delay 2s --duration 30s
  faultline inject http --netns /run/netns/api --port 80 --duration 40s \
      --phase 10s,error-rate=1,error-code=429,error-header=Retry-After:2 --phase 20s,delay=300ms`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := p.request()
			if err != nil {
				return err
			}
			return p.run(cmd.Context(), g, req)
		},
	}
	f := cmd.Flags()
	p.flags = f
	p.targetParams.bind(f)
	f.IntVar(&p.port, "port", 0, "target port (required)")
	p.timingParams.bind(f, "requests", "answered with --error-code")
	f.StringVar(&p.delayMode, "delay-mode", "request", "request: hold the request before the app sees it; response: hold the app's response")
	f.IntVar(&p.errorCode, "error-code", 0, "HTTP status of injected errors, 200-599; 204 and 304 without a body (errorCode)")
	f.StringVar(&p.errorBody, "error-body", "", "body of injected errors (errorBody)")
	f.StringArrayVar(&p.errorHeaders, "error-header", nil, "header of injected errors, 'Name: value'; repeatable (errorHeaders)")
	f.StringVar(&p.exclude, "exclude", "", "comma-separated paths never faulted (exclude)")
	f.StringArrayVar(&p.paths, "match-path", nil, "fault only this path, exact or prefix ending in *; repeatable")
	f.StringArrayVar(&p.methods, "match-method", nil, "fault only this method; repeatable")
	f.StringArrayVar(&p.headers, "match-header", nil, "fault only requests with this header, 'Name' or 'Name=value'; repeatable")
	f.BoolVar(&p.keepConnections, "keep-connections", false, "do not reset connections established before the fault")
	f.IntVar(&p.rewriteStatus, "rewrite-status", 0, "replace the status of the application's responses to matching requests (rewrite, HTTP/1.1)")
	f.StringArrayVar(&p.rewriteSet, "rewrite-header", nil, "set a header on those responses, 'Name: value'; repeatable")
	f.StringArrayVar(&p.rewriteDel, "rewrite-remove-header", nil, "remove a header from those responses; repeatable")
	f.StringVar(&p.rewriteBody, "rewrite-body", "", "replace the body of those responses (given, even empty, it replaces)")
	return cmd
}

func (p *httpParams) request() (*pb.InjectRequest, error) {
	req, err := p.targetParams.request(p.port, p.sel.given())
	if err != nil {
		return nil, err
	}
	if p.errorCode < 0 || p.errorCode > math.MaxUint32 {
		return nil, usagef("--error-code must be an HTTP status in 200-599, got %d", p.errorCode)
	}
	h := &pb.HTTPFault{
		Port:            uint32(p.port),
		AverageDelay:    durationpb.New(p.delay),
		DelayVariation:  durationpb.New(p.variation),
		DelayRate:       &p.delayRate,
		ErrorRate:       p.errorRate,
		ErrorCode:       uint32(p.errorCode),
		ErrorBody:       p.errorBody,
		Exclude:         p.exclude,
		KeepConnections: p.keepConnections,
	}
	if h.FailFirst, err = p.failFirstProto(); err != nil {
		return nil, err
	}
	if h.Rewrite, err = p.rewriteProto(); err != nil {
		return nil, err
	}
	if h.Phases, err = httpPhases(p.phases); err != nil {
		return nil, err
	}
	switch p.delayMode {
	case "request":
		h.DelayMode = pb.DelayMode_DELAY_MODE_REQUEST
	case "response":
		h.DelayMode = pb.DelayMode_DELAY_MODE_RESPONSE
	default:
		return nil, usagef("--delay-mode must be request or response, got %q", p.delayMode)
	}
	for _, kv := range p.errorHeaders {
		name, value, ok := strings.Cut(kv, ":")
		if !ok {
			return nil, usagef("--error-header %q must look like 'Name: value'", kv)
		}
		if h.ErrorHeaders == nil {
			h.ErrorHeaders = map[string]string{}
		}
		h.ErrorHeaders[strings.TrimSpace(name)] = strings.TrimSpace(value)
	}
	if len(p.paths)+len(p.methods)+len(p.headers) > 0 {
		h.Match = &pb.HTTPMatch{Paths: p.paths, Methods: p.methods}
		for _, kv := range p.headers {
			name, value, _ := strings.Cut(kv, "=")
			h.Match.Headers = append(h.Match.Headers, &pb.HeaderMatch{Name: name, Value: value})
		}
	}
	req.Fault = &pb.InjectRequest_Http{Http: h}
	return req, nil
}

// inject runs the fault; on Ctrl-C it revokes it and still prints the
// counters.
func (g *globals) inject(ctx context.Context, req *pb.InjectRequest) error {
	client, closeConn, err := g.dial()
	if err != nil {
		return err
	}
	defer closeConn()
	type result struct {
		last *pb.FaultStatus
		err  error
	}
	done := make(chan result, 1)
	// The call outlives ctx so that a Ctrl-C becomes a Revoke with counters.
	go func() {
		stream, err := client.Inject(context.WithoutCancel(ctx), req)
		var last *pb.FaultStatus
		for err == nil {
			var m *pb.InjectResponse
			if m, err = stream.Recv(); err == nil {
				last = m.GetFault()
			}
		}
		if err == io.EOF && last != nil {
			err = nil
		}
		done <- result{last, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return r.err
		}
		return g.printStatus(r.last)
	case <-ctx.Done():
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := client.Revoke(rctx, &pb.RevokeRequest{Id: req.GetId()})
		if err != nil {
			return fmt.Errorf("revoke %s after interrupt: %w", req.GetId(), err)
		}
		_ = g.printStatus(resp.GetFault())
		return errInterrupted
	}
}

// rewriteProto is the --rewrite-* response rewrite, if any flag is given.
func (p *httpParams) rewriteProto() (*pb.ResponseRewrite, error) {
	bodyGiven := p.flags != nil && p.flags.Changed("rewrite-body")
	if p.rewriteStatus == 0 && len(p.rewriteSet) == 0 && len(p.rewriteDel) == 0 && !bodyGiven {
		return nil, nil
	}
	if p.rewriteStatus < 0 || p.rewriteStatus > math.MaxUint32 {
		return nil, usagef("--rewrite-status must be an HTTP status in 200-599, got %d", p.rewriteStatus)
	}
	rw := &pb.ResponseRewrite{Status: uint32(p.rewriteStatus), RemoveHeaders: p.rewriteDel, SetHeaders: map[string]string{}}
	for _, h := range p.rewriteSet {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return nil, usagef("--rewrite-header %q must look like 'Name: value'", h)
		}
		rw.SetHeaders[strings.TrimSpace(name)] = strings.TrimSpace(value)
	}
	if bodyGiven {
		rw.Body = &p.rewriteBody
	}
	return rw, nil
}
