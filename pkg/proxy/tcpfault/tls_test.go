package tcpfault

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/faultline-dev/faultline/pkg/fault"
)

// testPKI is a CA and a certificate it issued for the app's names.
type testPKI struct {
	ca     *tls.Certificate
	pool   *x509.CertPool
	server tls.Certificate
}

func newPKI(t *testing.T, names ...string) *testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caT, caT, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafT := &x509.Certificate{SerialNumber: big.NewInt(2), DNSNames: names, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, leafT, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{ca: &tls.Certificate{Certificate: [][]byte{caDER}, PrivateKey: caKey, Leaf: ca}, pool: pool,
		server: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
}

// tlsEcho is a TLS app that answers each line with "NAME: line", NAME the
// server name it was asked for.
func (k *testPKI) tlsEcho(c net.Conn) {
	s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{k.server}})
	if s.Handshake() != nil {
		return
	}
	r := bufio.NewReader(s)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		io.WriteString(s, s.ConnectionState().ServerName+": "+line)
	}
}

// ask connects with TLS for name, trusting pool (nil: verify nothing),
// sends a line and returns the answer and the handshake's time.
func ask(addr, name string, pool *x509.CertPool) (string, time.Duration, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	tc := tls.Client(c, &tls.Config{ServerName: name, RootCAs: pool, InsecureSkipVerify: pool == nil})
	t0 := time.Now()
	if err := tc.Handshake(); err != nil {
		return "", time.Since(t0), err
	}
	took := time.Since(t0)
	if _, err := io.WriteString(tc, "hello\n"); err != nil {
		return "", took, err
	}
	line, err := bufio.NewReader(tc).ReadString('\n')
	return strings.TrimSpace(line), took, err
}

func tlsFault(names []string, action fault.TLSAction, set func(*fault.TLS)) *fault.TCP {
	tl := &fault.TLS{ServerNames: names, Rate: 1, Action: action}
	if set != nil {
		set(tl)
	}
	return &fault.TCP{TLS: tl}
}

// TestTLSUnmatchedPassUntouched: names the fault is not for reach the app
// with its own certificate, verified; so does a client speaking no TLS.
func TestTLSUnmatchedPassUntouched(t *testing.T) {
	pki := newPKI(t, "pay.test", "shop.test")
	addr, p := start(t, tlsFault([]string{"*.pay.test"}, fault.TLSReset, nil), pki.tlsEcho)
	got, _, err := ask(addr, "shop.test", pki.pool)
	if err != nil || got != "shop.test: hello" {
		t.Fatalf("unmatched name: %q, %v", got, err)
	}
	got, _, err = ask(addr, "pay.test", pki.pool) // *.pay.test does not match pay.test itself
	if err != nil || got != "pay.test: hello" {
		t.Fatalf("the suffix's own name: %q, %v", got, err)
	}
	plain, _ := start(t, tlsFault(nil, fault.TLSReset, nil), echo)
	c := dial(t, plain)
	io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
	b := make([]byte, 18)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "GET / HTTP/1.1\r\n\r\n" {
		t.Fatalf("plain bytes: %q, %v", b, err)
	}
	if c := p.Counters(); c.TLSHandshakes != 2 || c.TLSFaulted != 0 {
		t.Errorf("counters %+v, want 2 handshakes, none faulted", c)
	}
}

// TestTLSReset: a matching ClientHello gets a RST.
func TestTLSReset(t *testing.T) {
	pki := newPKI(t, "api.pay.test")
	addr, p := start(t, tlsFault([]string{"*.pay.test"}, fault.TLSReset, nil), pki.tlsEcho)
	_, _, err := ask(addr, "api.pay.test", pki.pool)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("handshake: %v, want a connection reset", err)
	}
	if c := p.Counters(); c.TLSFaulted != 1 || c.Cut != 1 {
		t.Errorf("counters %+v, want 1 faulted, 1 cut", c)
	}
}

// TestTLSAlert: a matching ClientHello is answered with the alert asked for.
func TestTLSAlert(t *testing.T) {
	pki := newPKI(t, "pay.test")
	addr, _ := start(t, tlsFault([]string{"pay.test"}, fault.TLSAlert, func(tl *fault.TLS) {
		tl.Alert = fault.Alert{Name: "protocol_version", Code: 70}
	}), pki.tlsEcho)
	_, _, err := ask(addr, "pay.test", pki.pool)
	if err == nil || !strings.Contains(err.Error(), "protocol version not supported") {
		t.Fatalf("handshake: %v, want the protocol_version alert", err)
	}
}

// TestTLSHandshakeDelay: the handshake takes the delay longer, then works.
func TestTLSHandshakeDelay(t *testing.T) {
	pki := newPKI(t, "pay.test", "shop.test")
	const d = 300 * time.Millisecond
	addr, _ := start(t, tlsFault([]string{"pay.test"}, fault.TLSDelay, func(tl *fault.TLS) { tl.HandshakeDelay = d }), pki.tlsEcho)
	got, took, err := ask(addr, "pay.test", pki.pool)
	if err != nil || got != "pay.test: hello" {
		t.Fatalf("delayed: %q, %v", got, err)
	}
	_, direct, err := ask(addr, "shop.test", pki.pool)
	if err != nil {
		t.Fatal(err)
	}
	if took < d || took > d+direct+time.Second {
		t.Errorf("handshake took %s under a %s delay (unmatched: %s)", took, d, direct)
	}
}

// TestTLSCertificate: the fault completes the handshake with a certificate
// of its own; a verifying client refuses it with the defect's error, one
// that verifies nothing talks to the app through it.
func TestTLSCertificate(t *testing.T) {
	pki := newPKI(t, "pay.test")
	for _, tc := range []struct {
		defect fault.CertDefect
		ca     *tls.Certificate
		want   string
	}{
		{fault.CertUnknownCA, nil, "certificate signed by unknown authority"},
		{fault.CertExpired, pki.ca, "certificate has expired"},
		{fault.CertWrongName, pki.ca, "certificate is valid for wrong-name.faultline.invalid, not pay.test"},
	} {
		t.Run(string(tc.defect), func(t *testing.T) {
			addr, p := start(t, tlsFault([]string{"pay.test"}, fault.TLSCertificate, func(tl *fault.TLS) {
				tl.Certificate = &fault.Certificate{Defect: tc.defect, CA: tc.ca}
			}), pki.tlsEcho)
			if _, _, err := ask(addr, "pay.test", pki.pool); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("verifying client: %v, want %q", err, tc.want)
			}
			got, _, err := ask(addr, "pay.test", nil)
			if err != nil || got != "pay.test: hello" {
				t.Fatalf("client verifying nothing: %q, %v", got, err)
			}
			if c := p.Counters(); c.TLSFaulted != 2 {
				t.Errorf("counters %+v, want 2 faulted", c)
			}
		})
	}
}

// TestTLSMatchNarrowsToxics: with no action, the toxics apply only to the
// matching names.
func TestTLSMatchNarrowsToxics(t *testing.T) {
	pki := newPKI(t, "pay.test", "shop.test")
	const d = 200 * time.Millisecond
	f := tlsFault([]string{"pay.test"}, fault.TLSMatchOnly, nil)
	f.Downstream = []fault.Toxic{toxic(fault.ToxicLatency, func(x *fault.Toxic) { x.Latency = d })}
	addr, p := start(t, f, pki.tlsEcho)
	t0 := time.Now()
	if _, _, err := ask(addr, "shop.test", pki.pool); err != nil {
		t.Fatal(err)
	}
	direct := time.Since(t0)
	t0 = time.Now()
	if _, _, err := ask(addr, "pay.test", pki.pool); err != nil {
		t.Fatal(err)
	}
	// TLS 1.3: the server's flight and the answer, each delayed.
	if faulted := time.Since(t0); faulted < 2*d || direct > d {
		t.Errorf("matching name took %s, unmatched %s, under a %s downstream latency", faulted, direct, d)
	}
	if c := p.Counters(); c.Toxic != 1 || c.BytesDelayed == 0 {
		t.Errorf("counters %+v, want 1 toxic connection with delayed bytes", c)
	}
}
