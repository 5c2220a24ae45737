package testbed

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ca is the bed's own certificate authority: the nodes trust it as
// machines trust a public CA, so what the bed serves them (K3s's install
// script, its binary) goes over HTTPS, as get.k3s.io and GitHub do.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

// cachedCA is the CA kept in dir (bed-ca.pem, bed-ca-key.pem) while it
// has more than a day left, else a new one written there: images that
// carry it (the k3d node image trusts it for pulls) stay the same
// between runs.
func cachedCA(dir string) (*ca, error) {
	certFile, keyFile := caFile(dir), filepath.Join(dir, "bed-ca-key.pem")
	if c, err := readCA(certFile, keyFile); err == nil && time.Until(c.cert.NotAfter) > 24*time.Hour {
		return c, nil
	}
	c, err := newCA()
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(c.key)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return c, os.WriteFile(certFile, c.pem, 0o644)
}

// caFile is the bed's CA certificate (PEM) in the cache dir: the bed's
// dockerd trusts it (SSL_CERT_FILE), the k3d node image carries it.
func caFile(dir string) string { return filepath.Join(dir, "bed-ca.pem") }

func readCA(certFile, keyFile string) (*ca, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("%s or %s: no PEM block", certFile, keyFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, err
	}
	return &ca{cert: cert, key: key, pem: certPEM}, nil
}

func newCA() (*ca, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "labctl test bed CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &ca{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// ServerTLS is a TLS config serving a certificate for ip, signed by the
// bed's CA.
func (b *Bed) ServerTLS(ip string) (*tls.Config, error) {
	addr := net.ParseIP(ip)
	if addr == nil {
		return nil, fmt.Errorf("server TLS: %q is not an IP address", ip)
	}
	der, key, err := b.ca.leaf(ip, nil, []net.IP{addr})
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}, nil
}

// leaf issues a day's server certificate for names and ips.
func (c *ca) leaf(cn string, names []string, ips []net.IP) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: names, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	return der, key, err
}
