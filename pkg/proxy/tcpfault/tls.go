package tcpfault

import (
	"bytes"
	"context"
	"crypto"
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
	"net/netip"
	"sync"
	"time"

	"github.com/faultline-dev/faultline/pkg/fault"
)

// helloTimeout bounds waiting for a ClientHello; a connection that sends
// nothing for this long is relayed untouched (it is no TLS client).
const helloTimeout = 10 * time.Second

// hello is what reading a connection's first flight gave.
type hello struct {
	raw  []byte               // every byte read, to replay to the application
	info *tls.ClientHelloInfo // nil when the bytes were no ClientHello
}

var errGotHello = errors.New("tcpfault: ClientHello read")

// readHello reads the client's ClientHello with crypto/tls, which parses it
// and stops; what it read is kept for the application.
func readHello(c net.Conn) hello {
	rec := &recorder{Conn: c}
	_ = c.SetReadDeadline(time.Now().Add(helloTimeout))
	defer c.SetReadDeadline(time.Time{})
	var h hello
	_ = tls.Server(rec, &tls.Config{GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		h.info = chi
		return nil, errGotHello
	}}).Handshake()
	h.raw = rec.buf.Bytes()
	return h
}

// recorder keeps what is read and swallows what is written (crypto/tls's
// alert once the callback refused).
type recorder struct {
	net.Conn
	buf bytes.Buffer
}

func (r *recorder) Read(b []byte) (int, error) {
	n, err := r.Conn.Read(b)
	r.buf.Write(b[:n])
	return n, err
}

func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }

// alertRecord is a fatal alert as a TLS record (RFC 8446 §5.1, §6).
func alertRecord(code uint8) []byte { return []byte{21, 3, 3, 0, 2, 2, code} }

// replayConn reads the bytes already taken from the client first.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func newReplayConn(c net.Conn, raw []byte) *replayConn {
	return &replayConn{Conn: c, r: io.MultiReader(bytes.NewReader(raw), c)}
}

// terminate completes the client's handshake with the fault's certificate
// and opens TLS to the application (unverified: faultline is the test's
// man in the middle), with the client's server name and protocols. It
// returns the two plaintext ends, or ok false once it has closed them.
func (r *relay) terminate(ctx context.Context, h hello, up net.Conn) (client, app net.Conn, ok bool) {
	hctx, cancel := context.WithTimeout(ctx, helloTimeout)
	defer cancel()
	appTLS := tls.Client(up, &tls.Config{ServerName: h.info.ServerName, NextProtos: h.info.SupportedProtos,
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) // #nosec G402 -- the fault stands in for the application
	if err := appTLS.HandshakeContext(hctx); err != nil {
		r.p.Logger.Debug("TLS to the application", "err", err)
		r.close(toClient)
		return nil, nil, false
	}
	cert, err := r.p.certs.leaf(h.info.ServerName, r.client.LocalAddr())
	if err != nil {
		r.p.Logger.Warn("make the fault's certificate", "err", err)
		r.close(toClient)
		return nil, nil, false
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
	if p := appTLS.ConnectionState().NegotiatedProtocol; p != "" {
		cfg.NextProtos = []string{p}
	}
	clientTLS := tls.Server(newReplayConn(r.client, h.raw), cfg)
	if err := clientTLS.HandshakeContext(hctx); err != nil {
		// The client refused the certificate, as the test wants to see.
		r.p.Logger.Debug("client handshake with the fault's certificate", "err", err)
		r.close(toNone)
		return nil, nil, false
	}
	return clientTLS, appTLS, true
}

// certSource makes a fault's certificates: one per server name, issued by
// the user's CA or by one made for the fault.
type certSource struct {
	cert *fault.Certificate

	once   sync.Once
	ca     *x509.Certificate
	caKey  crypto.Signer
	caDER  []byte
	caErr  error
	mu     sync.Mutex
	leaves map[string]*tls.Certificate
}

// maxLeaves bounds the certificates a fault keeps (one per server name).
const maxLeaves = 1024

func (s *certSource) init() {
	s.once.Do(func() {
		if ca := s.cert.CA; ca != nil {
			key, ok := ca.PrivateKey.(crypto.Signer)
			if !ok {
				s.caErr = errors.New("the CA key cannot sign")
				return
			}
			s.ca, s.caKey, s.caDER = ca.Leaf, key, ca.Certificate[0]
			return
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			s.caErr = err
			return
		}
		now := time.Now()
		tmpl := &x509.Certificate{
			SerialNumber: serial(), Subject: pkix.Name{CommonName: "faultline fault CA (trusted by no one)"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(fault.MaxDuration + time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			s.caErr = err
			return
		}
		s.ca, s.caErr = x509.ParseCertificate(der)
		s.caKey, s.caDER = key, der
	})
}

// leaf returns the certificate for a server name ("" for a ClientHello
// without one: the certificate names the address the client dialled).
func (s *certSource) leaf(serverName string, local net.Addr) (*tls.Certificate, error) {
	s.init()
	if s.caErr != nil {
		return nil, s.caErr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.leaves[serverName]; c != nil {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(fault.MaxDuration + time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	name := serverName
	if s.cert.Defect == fault.CertWrongName {
		name = fault.WrongName
	}
	tmpl.Subject.CommonName = name
	switch ap, err := netip.ParseAddrPort(local.String()); {
	case name != "":
		tmpl.DNSNames = []string{name}
	case err == nil:
		tmpl.Subject.CommonName = ap.Addr().String()
		tmpl.IPAddresses = []net.IP{ap.Addr().AsSlice()}
	}
	if s.cert.Defect == fault.CertExpired {
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.ca, key.Public(), s.caKey)
	if err != nil {
		return nil, err
	}
	c := &tls.Certificate{Certificate: [][]byte{der, s.caDER}, PrivateKey: key}
	if s.leaves == nil || len(s.leaves) >= maxLeaves {
		s.leaves = map[string]*tls.Certificate{}
	}
	s.leaves[serverName] = c
	return c, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
