package fault

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

func tlsInject(tf *pb.TlsFault) *pb.InjectRequest {
	return inject(&pb.TcpFault{Port: 443, Tls: tf}, time.Minute)
}

// pemPair makes a PEM certificate and key; isCA sets basicConstraints.
func pemPair(t *testing.T, isCA bool) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: isCA, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}))
}

func TestTLSRefusals(t *testing.T) {
	caCert, caKey := pemPair(t, true)
	leafCert, leafKey := pemPair(t, false)
	reset := &pb.TlsFault_Reset_{Reset_: &pb.TlsReset{}}
	for _, tc := range []struct {
		tf   *pb.TlsFault
		want string
	}{
		{&pb.TlsFault{ServerNames: []string{"pay.test"}}, "a tcp fault needs at least one toxic, upstream or downstream, or a tls action"},
		{&pb.TlsFault{ServerNames: []string{"*"}, Action: reset}, `tls.serverNames[0]: "*" matches no server name`},
		{&pb.TlsFault{ServerNames: []string{""}, Action: reset}, `tls.serverNames[0]: "" matches no server name`},
		{&pb.TlsFault{ServerNames: []string{"a.*.test"}, Action: reset}, "* is only allowed as the first label"},
		{&pb.TlsFault{ServerNames: []string{"pay.test."}, Action: reset}, "ends with a dot"},
		{&pb.TlsFault{ServerNames: []string{"198.18.0.1"}, Action: reset}, "is an IP address, which a ClientHello never names"},
		{&pb.TlsFault{ServerNames: []string{"pay..test"}, Action: reset}, `the label "" is not a DNS label`},
		{&pb.TlsFault{ServerNames: []string{"-pay.test"}, Action: reset}, `the label "-pay" is not a DNS label`},
		{&pb.TlsFault{ServerNames: []string{"pay test"}, Action: reset}, `" " is not allowed in a server name`},
		{&pb.TlsFault{Rate: f64(2), Action: reset}, "tls.rate must be in the range [0, 1], got 2"},
		{&pb.TlsFault{Action: &pb.TlsFault_HandshakeDelay{HandshakeDelay: ms(-1)}}, "tls.handshakeDelay must be positive"},
		{&pb.TlsFault{Action: &pb.TlsFault_HandshakeDelay{HandshakeDelay: ms(0)}}, "tls.handshakeDelay must be positive"},
		{&pb.TlsFault{Action: &pb.TlsFault_Alert{Alert: "teapot"}}, `tls.alert "teapot" is not one of access_denied, bad_certificate`},
		{&pb.TlsFault{Action: &pb.TlsFault_Certificate{Certificate: &pb.TlsCertificate{Defect: "revoked"}}}, `tls.certificate.defect "revoked" is not one of expired, wrong_name, unknown_ca`},
		{&pb.TlsFault{Action: &pb.TlsFault_Certificate{Certificate: &pb.TlsCertificate{Defect: "unknown_ca", CaCertPem: caCert, CaKeyPem: caKey}}}, "unknown_ca issues from a CA of the fault's own"},
		{&pb.TlsFault{Action: &pb.TlsFault_Certificate{Certificate: &pb.TlsCertificate{Defect: "expired", CaCertPem: "nonsense", CaKeyPem: caKey}}}, "caCertPem is not a PEM certificate"},
		{&pb.TlsFault{Action: &pb.TlsFault_Certificate{Certificate: &pb.TlsCertificate{Defect: "expired", CaCertPem: caCert, CaKeyPem: leafKey}}}, "caCertPem and caKeyPem are not a certificate and its key"},
		{&pb.TlsFault{Action: &pb.TlsFault_Certificate{Certificate: &pb.TlsCertificate{Defect: "expired", CaCertPem: leafCert, CaKeyPem: leafKey}}}, "caCertPem is not a CA certificate"},
	} {
		_, err := FromProto(tlsInject(tc.tf))
		if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) || strings.Count(err.Error(), "invalid argument") != 1 {
			t.Errorf("%v: %v, want InvalidArgument %q", tc.tf, err, tc.want)
		}
	}
}

func TestTLSConversion(t *testing.T) {
	caCert, caKey := pemPair(t, true)
	spec, err := FromProto(tlsInject(&pb.TlsFault{ServerNames: []string{" Pay.Test ", "*.Shop.test"}, Rate: f64(0.5),
		Action: &pb.TlsFault_Certificate{Certificate: &pb.TlsCertificate{Defect: "Expired", CaCertPem: caCert, CaKeyPem: caKey}}}))
	if err != nil {
		t.Fatal(err)
	}
	tl := spec.Fault.(*TCP).TLS
	if tl.Action != TLSCertificate || tl.Certificate.Defect != CertExpired || tl.Certificate.CA == nil || tl.Rate != 0.5 {
		t.Errorf("converted %+v", tl)
	}
	for name, want := range map[string]bool{
		"pay.test": true, "PAY.TEST": true, "api.shop.test": true, "a.b.shop.test": true,
		"shop.test": false, "xshop.test": false, "pay.test.evil": false, "": false,
	} {
		if got := tl.Matches(name); got != want {
			t.Errorf("Matches(%q) = %v, want %v", name, got, want)
		}
	}
	every := &TLS{}
	if !every.Matches("") || !every.Matches("any.test") {
		t.Error("no server names must match every ClientHello")
	}
	spec, err = FromProto(tlsInject(&pb.TlsFault{Action: &pb.TlsFault_Alert{Alert: "Unknown_CA"}}))
	if err != nil {
		t.Fatal(err)
	}
	if a := spec.Fault.(*TCP).TLS.Alert; a.Code != 48 || a.Name != "unknown_ca" {
		t.Errorf("alert %+v, want unknown_ca (48)", a)
	}
}
