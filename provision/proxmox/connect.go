// Package proxmox creates the nodes' VMs on Proxmox VE through its API
// (github.com/luthermonson/go-proxmox): a full clone of a cloud-init
// template per node, configured (size, cloud-init, guest agent) and
// started, each task waited for and its exit status checked.
//
// A VM is found by its name. One carrying labctl's description marker and
// the planned config is left alone; one that differs is drift, shown by
// `labctl plan --observe` and changed only with --apply-drift. Destroy
// removes only VMs that carry the marker.
package proxmox

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	gp "github.com/luthermonson/go-proxmox"

	"github.com/labctl/labctl/profiles"
)

// The environment variables of the widely used Terraform provider
// (bpg/proxmox), read when the profile does not say otherwise.
const (
	EnvEndpoint = "PROXMOX_VE_ENDPOINT"
	EnvToken    = "PROXMOX_VE_API_TOKEN"
)

// ConnectOptions shape Connect.
type ConnectOptions struct {
	// Lookup reads the environment (os.LookupEnv).
	Lookup func(string) (string, bool)
	// Insecure skips TLS verification: only by the user's explicit flag,
	// with a warning on Warn.
	Insecure bool
	Warn     io.Writer
	// Timeout bounds one API request; default 60 s.
	Timeout time.Duration
}

// Client is a connected API client and where it points.
type Client struct {
	API      *gp.Client
	Endpoint string
	// TokenID is user@realm!name: safe to print, unlike the secret.
	TokenID string
}

var reTokenID = regexp.MustCompile(`^[^@\s=]+@[^!\s=]+![A-Za-z][A-Za-z0-9._-]*$`)

// Connect builds the API client from the profile's proxmox section and
// the environment: the endpoint (profile, else PROXMOX_VE_ENDPOINT), the
// API token (user@realm!name=secret, from the profile's tokenRef), and TLS
// verified with the profile's CA file or pinned SHA-256 fingerprint, the
// system roots otherwise. Nothing is sent yet.
func Connect(px *profiles.Proxmox, o ConnectOptions) (*Client, error) {
	if o.Lookup == nil {
		o.Lookup = os.LookupEnv
	}
	if o.Timeout == 0 {
		o.Timeout = 60 * time.Second
	}
	endpoint, err := endpointURL(px.Endpoint, o.Lookup)
	if err != nil {
		return nil, err
	}
	ref := px.TokenRef
	if ref.IsZero() {
		ref = profiles.SecretRef{Env: EnvToken}
	}
	tok, err := ref.Resolve(o.Lookup)
	if err != nil {
		return nil, fmt.Errorf("proxmox.tokenRef: %w", err)
	}
	id, secret, ok := strings.Cut(tok.Reveal(), "=")
	if !ok || secret == "" || !reTokenID.MatchString(id) {
		return nil, fmt.Errorf("proxmox.tokenRef (%s): want user@realm!tokenname=secret, as PVE shows it when the token is created", ref)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	host := hostOf(endpoint)
	switch {
	case px.Fingerprint != "":
		pin, err := parseFingerprint(px.Fingerprint)
		if err != nil {
			return nil, fmt.Errorf("proxmox.fingerprint: %w", err)
		}
		// The pin replaces chain verification: PVE's own certificate is
		// self-signed by the cluster CA, which a client rarely has.
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("%s sent no certificate", host)
			}
			got := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if string(got[:]) != string(pin) {
				return fmt.Errorf("TLS certificate of %s has SHA-256 fingerprint %s; the profile pins %s", host, formatFingerprint(got[:]), formatFingerprint(pin))
			}
			return nil
		}
	case px.CAFile != "":
		p, err := profiles.ExpandHome(px.CAFile)
		if err != nil {
			return nil, err
		}
		pem, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("proxmox.caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("proxmox.caFile %s: no PEM certificate in it", p)
		}
		tc.RootCAs = pool
	case o.Insecure:
		tc.InsecureSkipVerify = true
		if o.Warn != nil {
			fmt.Fprintf(o.Warn, "warning: the TLS certificate of %s is NOT verified (--proxmox-insecure): anyone on the path can read the API token; set proxmox.caFile or proxmox.fingerprint instead\n", host)
		}
	}
	hc := &http.Client{Timeout: o.Timeout, Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 8}}
	api := gp.NewClient(endpoint, gp.WithHTTPClient(hc), gp.WithAPIToken(id, secret), gp.WithUserAgent("labctl"))
	return &Client{API: api, Endpoint: endpoint, TokenID: id}, nil
}

func endpointURL(fromProfile string, lookup func(string) (string, bool)) (string, error) {
	raw, field := fromProfile, "proxmox.endpoint"
	if raw == "" {
		raw, _ = lookup(EnvEndpoint)
		field = EnvEndpoint
	}
	if raw == "" {
		return "", fmt.Errorf("no Proxmox API endpoint: set proxmox.endpoint in the profile or export %s (https://pve.example:8006/)", EnvEndpoint)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%s %q: not a URL like https://pve.example:8006/", field, raw)
	}
	if u.Scheme != "https" {
		return "", fmt.Errorf("%s %q: the API is served over https only", field, raw)
	}
	if u.User != nil {
		return "", fmt.Errorf("%s: credentials in the URL are refused; use the API token", field)
	}
	p := strings.TrimSuffix(u.Path, "/")
	if !strings.HasSuffix(p, "/api2/json") {
		p += "/api2/json"
	}
	u.Path, u.RawQuery, u.Fragment = p, "", ""
	return u.String(), nil
}

func hostOf(endpoint string) string {
	if u, err := url.Parse(endpoint); err == nil {
		return u.Host
	}
	return endpoint
}

func parseFingerprint(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if err != nil || len(b) != sha256.Size {
		return nil, errors.New("want the certificate's SHA-256 fingerprint, 32 hex bytes (AA:BB:…), as PVE shows under Node → Certificates")
	}
	return b, nil
}

func formatFingerprint(b []byte) string {
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02X", x)
	}
	return strings.Join(parts, ":")
}
