package fault

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// TLS narrows a tcp fault to the TLS connections whose ClientHello names a
// matching server (SNI), read without the application's keys, and faults
// their handshake with Action. Connections that do not match are relayed
// untouched, toxics and all.
type TLS struct {
	// ServerNames are lower-case patterns: "pay.example.test" exactly, or
	// "*.example.test" for any name below example.test. Empty matches
	// every ClientHello, one without SNI too.
	ServerNames []string
	// Rate is the share of matching handshakes Action applies to.
	Rate   float64
	Action TLSAction

	HandshakeDelay time.Duration // TLSDelay
	Alert          Alert         // TLSAlert
	Certificate    *Certificate  // TLSCertificate
}

// TLSAction is what happens to a matching handshake.
type TLSAction string

// The TLS actions; TLSMatchOnly only narrows the toxics.
const (
	TLSMatchOnly   TLSAction = ""
	TLSDelay       TLSAction = "handshake_delay"
	TLSReset       TLSAction = "reset"
	TLSAlert       TLSAction = "alert"
	TLSCertificate TLSAction = "certificate"
)

// Alert is a fatal TLS alert (RFC 8446 §6).
type Alert struct {
	Name string
	Code uint8
}

// Alerts are the alerts a fault may answer with, by name.
var alerts = map[string]uint8{
	"handshake_failure":       40,
	"bad_certificate":         42,
	"certificate_expired":     45,
	"unknown_ca":              48,
	"access_denied":           49,
	"protocol_version":        70,
	"insufficient_security":   71,
	"internal_error":          80,
	"unrecognized_name":       112,
	"no_application_protocol": 120,
}

// CertDefect is what is wrong with a fault's certificate.
type CertDefect string

// The defects.
const (
	CertExpired   CertDefect = "expired"
	CertWrongName CertDefect = "wrong_name"
	CertUnknownCA CertDefect = "unknown_ca"
)

// WrongName is the only name a wrong_name certificate carries.
const WrongName = "wrong-name.faultline.invalid"

// Certificate is the certificate a fault completes handshakes with.
type Certificate struct {
	Defect CertDefect
	// CA issues the certificates when set (a PEM certificate and key the
	// user gave); else each fault makes a CA of its own.
	CA *tls.Certificate
}

// Matches reports whether a ClientHello's server name ("" when it has
// none) is one the fault is for.
func (t *TLS) Matches(serverName string) bool {
	if len(t.ServerNames) == 0 {
		return true
	}
	name := strings.ToLower(serverName)
	for _, p := range t.ServerNames {
		if suffix, ok := strings.CutPrefix(p, "*"); ok {
			if strings.HasSuffix(name, suffix) && len(name) > len(suffix) {
				return true
			}
		} else if name == p {
			return true
		}
	}
	return false
}

// Applies draws whether the action applies to a matching handshake.
func (t *TLS) Applies() bool { return draw(t.Rate) }

func (t *TLS) validate() error {
	for i, p := range t.ServerNames {
		if err := serverNamePattern(p); err != nil {
			return Invalid("tls.serverNames[%d]: %v", i, err)
		}
	}
	if err := rate("tls.rate", t.Rate); err != nil {
		return err
	}
	switch t.Action {
	case TLSDelay:
		if t.HandshakeDelay <= 0 || t.HandshakeDelay > MaxDuration {
			return Invalid("tls.handshakeDelay must be positive and at most %s, got %s", MaxDuration, t.HandshakeDelay)
		}
	case TLSAlert:
		if t.Alert.Code == 0 {
			return Invalid("tls.alert %q is not one of %s", t.Alert.Name, strings.Join(slices.Sorted(maps.Keys(alerts)), ", "))
		}
	case TLSCertificate:
		switch c := t.Certificate; {
		case c.Defect != CertExpired && c.Defect != CertWrongName && c.Defect != CertUnknownCA:
			return Invalid("tls.certificate.defect %q is not one of expired, wrong_name, unknown_ca", c.Defect)
		case c.Defect == CertUnknownCA && c.CA != nil:
			return Invalid("tls.certificate: unknown_ca issues from a CA of the fault's own; drop caCertPem/caKeyPem, or pick expired or wrong_name")
		}
	}
	return nil
}

// serverNamePattern checks one SNI pattern (lower case by then).
func serverNamePattern(p string) error {
	name, wild := strings.CutPrefix(p, "*.")
	switch {
	case p == "" || p == "*":
		return fmt.Errorf("%q matches no server name; leave serverNames empty to match every ClientHello", p)
	case strings.Contains(name, "*"):
		return fmt.Errorf("%q: * is only allowed as the first label, as in *.example.test", p)
	case strings.HasSuffix(p, "."):
		return fmt.Errorf("%q ends with a dot, which a ClientHello's server name never does (RFC 6066)", p)
	case len(p) > 253:
		return fmt.Errorf("%q is longer than a DNS name (253)", p)
	}
	if _, err := netip.ParseAddr(name); err == nil && !wild {
		return fmt.Errorf("%q is an IP address, which a ClientHello never names (RFC 6066): leave serverNames empty to match clients that connect by address", p)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%q: the label %q is not a DNS label", p, label)
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%q: %q is not allowed in a server name", p, string(c))
			}
		}
	}
	return nil
}

func tlsFromProto(p *pb.TlsFault) (*TLS, error) {
	if p == nil {
		return nil, nil
	}
	t := &TLS{Rate: 1}
	if p.Rate != nil {
		t.Rate = p.GetRate()
	}
	for _, n := range p.GetServerNames() {
		t.ServerNames = append(t.ServerNames, strings.ToLower(strings.TrimSpace(n)))
	}
	switch a := p.GetAction().(type) {
	case *pb.TlsFault_HandshakeDelay:
		t.Action = TLSDelay
		var err error
		if t.HandshakeDelay, err = duration("tls.handshakeDelay", a.HandshakeDelay); err != nil {
			return nil, err
		}
	case *pb.TlsFault_Reset_:
		t.Action = TLSReset
	case *pb.TlsFault_Alert:
		t.Action = TLSAlert
		name := strings.ToLower(strings.TrimSpace(a.Alert))
		t.Alert = Alert{Name: name, Code: alerts[name]}
	case *pb.TlsFault_Certificate:
		t.Action = TLSCertificate
		t.Certificate = &Certificate{Defect: CertDefect(strings.ToLower(a.Certificate.GetDefect()))}
		if a.Certificate.GetCaCertPem() != "" || a.Certificate.GetCaKeyPem() != "" {
			ca, err := parseCA([]byte(a.Certificate.GetCaCertPem()), []byte(a.Certificate.GetCaKeyPem()))
			if err != nil {
				return nil, err
			}
			t.Certificate.CA = ca
		}
	}
	return t, nil
}

// parseCA checks that a PEM certificate and key are a CA's pair.
func parseCA(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	if b, _ := pem.Decode(certPEM); b == nil || b.Type != "CERTIFICATE" {
		return nil, Invalid("tls.certificate.caCertPem is not a PEM certificate")
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, Invalid("tls.certificate: caCertPem and caKeyPem are not a certificate and its key: %v", err)
	}
	if !pair.Leaf.IsCA || pair.Leaf.KeyUsage&x509.KeyUsageCertSign == 0 && pair.Leaf.KeyUsage != 0 {
		return nil, Invalid("tls.certificate.caCertPem is not a CA certificate (basicConstraints CA:TRUE, keyCertSign)")
	}
	return &pair, nil
}
