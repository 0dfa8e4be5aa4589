package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/faultline-dev/faultline/pkg/fault"
)

func TestPhaseFlags(t *testing.T) {
	p := httpParams{port: 80, delayMode: "request"}
	p.duration, p.netns, p.delayRate = 40*time.Second, "/run/netns/x", 1
	p.phases = []string{"10s,error-rate=1,error-code=429,error-header=Retry-After:2", "20s,delay=300ms,delay-variation=50ms", "5s"}
	req, err := p.request()
	if err != nil {
		t.Fatal(err)
	}
	spec, err := fault.FromProto(req) // what the node will accept
	if err != nil {
		t.Fatal(err)
	}
	tl := spec.Fault.(*fault.HTTP).Timeline
	if len(tl.Phases) != 3 || tl.Length() != 35*time.Second {
		t.Fatalf("timeline %+v", tl)
	}
	if ph := tl.Phases[0].Rule.(*fault.HTTP); ph.ErrorStatus != 429 || ph.ErrorHeaders[0] != (fault.HeaderField{Name: "Retry-After", Value: "2"}) {
		t.Errorf("phase 1: %+v", ph)
	}
	if ph := tl.Phases[1].Rule.(*fault.HTTP); ph.Delay.Average != 300*time.Millisecond || ph.Delay.Variation != 50*time.Millisecond {
		t.Errorf("phase 2: %+v", ph.Delay)
	}
	g := grpcParams{port: 90}
	g.duration, g.netns, g.delayRate = time.Minute, "/run/netns/x", 1
	g.phases = []string{"10s,error-rate=1,status-code=14,status-message=down"}
	if req, err = g.request(); err != nil {
		t.Fatal(err)
	}
	if ph := req.GetGrpc().GetPhases()[0]; ph.GetStatusCode() != 14 || ph.GetStatusMessage() != "down" {
		t.Errorf("grpc phase %v", ph)
	}
	for _, tc := range []struct{ flag, want string }{
		{"error-rate=1", "must start with its duration"},
		{"10s,teleport=1", `unknown key "teleport"`},
		{"10s,delay", `"delay" is not key=value`},
		{"10s,delay=soon", "delay: time: invalid duration"},
		{"10s,error-header=nocolon", "must look like Name:value"},
	} {
		p.phases = []string{tc.flag}
		if _, err := p.request(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--phase %s: %v, want %q", tc.flag, err, tc.want)
		}
	}
	g.phases = []string{"1s,error-header=A:b"}
	if _, err := g.request(); err == nil || !strings.Contains(err.Error(), `unknown key "error-header"`) {
		t.Errorf("grpc error-header: %v", err)
	}
}

func TestTLSFlags(t *testing.T) {
	p := tcpParams{port: 8443}
	p.duration, p.netns, p.tls.rate = time.Minute, "/run/netns/x", 1
	p.tls.serverNames, p.tls.alert = []string{"*.pay.test"}, "handshake_failure"
	req, err := p.request()
	if err != nil {
		t.Fatal(err)
	}
	if tf := req.GetTcp().GetTls(); tf.GetAlert() != "handshake_failure" || tf.GetServerNames()[0] != "*.pay.test" || tf.Rate != nil {
		t.Errorf("tls %v", tf)
	}
	if _, err := fault.FromProto(req); err != nil {
		t.Error(err)
	}
	p.tls.reset = true
	if _, err := p.request(); err == nil || !strings.Contains(err.Error(), "give one of --tls-handshake-delay, --tls-reset, --tls-alert, --tls-certificate") {
		t.Errorf("two actions: %v", err)
	}
	p.tls = tlsParams{rate: 1, caCert: "ca.pem"}
	if _, err := p.request(); err == nil || !strings.Contains(err.Error(), "give --tls-ca-cert and --tls-ca-key together") && !strings.Contains(err.Error(), "go with --tls-certificate") {
		t.Errorf("a CA without a certificate: %v", err)
	}
	p.tls = tlsParams{rate: 1}
	if _, err := p.request(); err == nil || !strings.Contains(err.Error(), "give at least one --toxic") {
		t.Errorf("nothing to do: %v", err)
	}
}
