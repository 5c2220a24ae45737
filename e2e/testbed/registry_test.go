package testbed

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
)

// The pull proxy refuses everything until a registry runs, then tunnels
// CONNECTs to the registry hosts alone; the registry's certificate, from
// the bed's CA, is valid for those names.
func TestPullProxyTunnelsOnlyTheRegistryHosts(t *testing.T) {
	c, err := newCA()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := c.hostCert(Registries)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "registry.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "registry for "+r.Host+r.URL.Path)
	})}
	go func() { _ = srv.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{pair}})) }()
	t.Cleanup(func() { _ = srv.Close() })

	p, err := startPullProxy()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.pem)
	proxy, _ := url.Parse(p.URL())
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxy), TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(u string) (string, error) {
		resp, err := client.Get(u)
		if err != nil {
			return "", err
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}

	if _, err := get("https://ghcr.io/v2/"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("before the registry runs: %v, want Forbidden", err)
	}
	p.route(sock)
	for _, host := range Registries {
		if body, err := get("https://" + host + "/v2/"); err != nil || body != "registry for "+host+"/v2/" {
			t.Errorf("%s through the proxy: %q %v", host, body, err)
		}
	}
	if _, err := get("https://example.org/"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("another host: %v, want Forbidden", err)
	}
	resp, err := client.Get("http://registry-1.docker.io/v2/")
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("plain HTTP through the proxy: %v %v, want 403", resp, err)
	}
	if resp != nil {
		_ = resp.Body.Close()
	}
	if got := strings.Join(p.Refused(), " "); got != "ghcr.io:443 example.org:443 registry-1.docker.io" {
		t.Errorf("refused: %q", got)
	}
}

func TestSplitRef(t *testing.T) {
	for in, want := range map[string]string{
		"docker.io/rancher/k3s:v1.34.4-k3s1": "rancher/k3s v1.34.4-k3s1",
		"ghcr.io/k3d-io/k3d-proxy:5.8.3":     "k3d-io/k3d-proxy 5.8.3",
		"busybox":                            "library/busybox latest",
		"localhost:5000/a/b":                 "a/b latest",
	} {
		repo, tag := splitRef(in)
		if repo+" "+tag != want {
			t.Errorf("splitRef(%q) = %s %s, want %s", in, repo, tag, want)
		}
	}
}
