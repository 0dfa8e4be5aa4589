// Package fault is faultline's one fault model: the kinds of fault, their
// validated parameters, the one conversion from the API's protobuf that
// validates them, and, for faults the proxy applies, the rule that decides
// each request's fate.
//
// Every value this package hands out is validated once, by FromProto (or
// Validate, for values built in code). The layers below it (engine, proxy,
// eBPF) take these values as they are and never check them again. A new
// kind of fault is one type here (its parameters, its Validate, its rule or
// its claim), its protobuf message and case in FromProto, and its tests.
//
// The package imports nothing of faultline but the generated protobuf, so
// that the gateway and the CLI can validate a fault on any platform.
package fault

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"time"

	"github.com/containerd/errdefs"
)

// Invalid returns an error of class errdefs.ErrInvalidArgument (gRPC
// InvalidArgument at the API boundary). The message names the field.
func Invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errdefs.ErrInvalidArgument}, args...)...)
}

// Kind names a kind of fault, as the API and statuses spell it.
type Kind string

// The kinds of fault.
const (
	KindHTTP    Kind = "http"
	KindGRPC    Kind = "grpc"
	KindNetwork Kind = "network"
	KindTCP     Kind = "tcp"
)

// Durations a fault may last.
const (
	MinDuration = time.Second
	// MaxDuration bounds a fault, so that a forgotten one cannot last for
	// ever: a day covers any test run.
	MaxDuration = 24 * time.Hour
)

// Fault is one fault's kind and parameters, validated: *HTTP, *GRPC or
// *Network.
type Fault interface {
	Kind() Kind
	// Claim is what the fault holds in a network namespace while it runs.
	Claim() Claim
}

// ProxyFault is a fault that the proxy in the target's namespace applies
// to the requests of one port: its Rule decides each request.
type ProxyFault interface {
	Fault
	Rule
	// ResetsConnections says whether connections established before the
	// fault are reset at its start, so that their clients reconnect
	// through the proxy.
	ResetsConnections() bool
}

// Spec is one fault as the node API receives it, all but its target.
type Spec struct {
	// ID names the fault; empty lets the node pick one.
	ID       string
	Duration time.Duration
	Fault    Fault
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func validateSpec(s Spec) error {
	switch {
	case s.ID != "" && !idPattern.MatchString(s.ID):
		return Invalid("id %q must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", s.ID)
	case s.Duration < MinDuration:
		return Invalid("duration must be at least %s, got %s", MinDuration, s.Duration)
	case s.Duration > MaxDuration:
		return Invalid("duration must be at most %s, got %s", MaxDuration, s.Duration)
	case s.Fault == nil:
		return Invalid("fault: no fault given")
	}
	if l := timelineLength(s.Fault); l > s.Duration {
		return Invalid("phases last %s in all, longer than the fault's duration %s: shorten a phase or lengthen the fault", l, s.Duration)
	}
	return nil
}

// NewID returns a fresh fault id: prefix, a dash and 8 hex digits.
func NewID(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// Protocol is the transport a network fault covers.
type Protocol string

// Protocols; ProtocolAll is the empty string.
const (
	ProtocolAll Protocol = ""
	ProtocolTCP Protocol = "tcp"
	ProtocolUDP Protocol = "udp"
)

func (p Protocol) covers(q Protocol) bool { return p == ProtocolAll || q == ProtocolAll || p == q }

// Claim is what a fault holds in a network namespace; two faults whose
// claims collide cannot run there at once.
type Claim struct {
	Proxy    bool     // the port's new connections are steered into a proxy
	Port     uint16   // 0 = all ports (network faults only)
	Protocol Protocol // network faults
}

// Collides reports whether a and b cannot run in one namespace at once:
// two proxies on one port, two network faults whose ports and protocols
// overlap, or a network fault covering TCP on a proxied port.
func (a Claim) Collides(b Claim) bool {
	samePort := a.Port == 0 || b.Port == 0 || a.Port == b.Port
	switch {
	case a.Proxy && b.Proxy:
		return a.Port == b.Port
	case !a.Proxy && !b.Proxy:
		return samePort && a.Protocol.covers(b.Protocol)
	case a.Proxy:
		return samePort && b.Protocol.covers(ProtocolTCP)
	default:
		return b.Collides(a)
	}
}

// String describes the claim in messages: "port 8080", "all ports (udp)".
func (c Claim) String() string {
	port := "all ports"
	if c.Port != 0 {
		port = fmt.Sprintf("port %d", c.Port)
	}
	if c.Proxy {
		return port
	}
	proto := "all protocols"
	if c.Protocol != ProtocolAll {
		proto = string(c.Protocol)
	}
	return port + " (" + proto + ")"
}
