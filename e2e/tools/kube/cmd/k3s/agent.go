package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// agentConfig is what an agent receives from a server's supervisor once
// its token and node password are accepted: the CA, its kubelet and
// kube-proxy credentials, and the cluster's CIDRs. (K3s serves these from
// several /v1-k3s endpoints; the stand-in from one.)
type agentConfig struct {
	CA                         []byte
	KubeletCert, KubeletKey    []byte
	ServingCert, ServingKey    []byte
	ProxyCert, ProxyKey        []byte
	ClusterCIDR, ServiceCIDR   string
	APIServer                  string
	ServerNodeName, ServerAddr string
}

const (
	headerNodeName     = "K3s-Node-Name"
	headerNodePassword = "K3s-Node-Password"
)

// serveAgentConfig is the server side: token secret as basic auth (user
// "node" or "server"), node password checked against kube-system, then
// certificates issued for that node.
func (s *server) serveAgentConfig(w http.ResponseWriter, r *http.Request) {
	u, p, ok := r.BasicAuth()
	if !ok || (u != "node" && u != "server") || p != s.secret {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	node, pw := r.Header.Get(headerNodeName), r.Header.Get(headerNodePassword)
	if node == "" || pw == "" {
		http.Error(w, "node name and password required", http.StatusBadRequest)
		return
	}
	cs, err := s.adminClient()
	if err != nil {
		http.Error(w, "server is not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	if err := verifyNodePassword(r.Context(), cs, node, pw); err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	dir, err := os.MkdirTemp("", "agent-certs-")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer os.RemoveAll(dir)
	p2 := &pki{dir: dir, caCert: s.pki.caCert, caKey: s.pki.caKey}
	leaves := []struct {
		name, cn string
		orgs     []string
		hosts    []string
		server   bool
	}{
		{"client-kubelet", "system:node:" + node, []string{"system:nodes"}, nil, false},
		{"serving-kubelet", node, nil, []string{"127.0.0.1", "localhost", ip, node}, true},
		{"client-kube-proxy", "system:kube-proxy", nil, nil, false},
	}
	for _, l := range leaves {
		if err := p2.leaf(l.name, l.cn, l.orgs, l.hosts, l.server, !l.server); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	read := func(n string) []byte { b, _ := os.ReadFile(filepath.Join(dir, n)); return b }
	ca, _ := os.ReadFile(s.pki.path("server-ca.crt"))
	_ = json.NewEncoder(w).Encode(agentConfig{
		CA: ca, KubeletCert: read("client-kubelet.crt"), KubeletKey: read("client-kubelet.key"),
		ServingCert: read("serving-kubelet.crt"), ServingKey: read("serving-kubelet.key"),
		ProxyCert: read("client-kube-proxy.crt"), ProxyKey: read("client-kube-proxy.key"),
		ClusterCIDR: s.c.ClusterCIDR, ServiceCIDR: s.c.ServiceCIDR,
		APIServer: "https://" + net.JoinHostPort(s.c.NodeIP, "6443"),
	})
}

// runAgent is `k3s agent`: fetch the CA (checked against the token's
// hash), get this node's credentials from the server (refused while the
// node password does not match), then run containerd, kubelet and
// kube-proxy. Agents talk to the server they were given directly (K3s
// runs a local load balancer at 127.0.0.1:6444 over all servers).
func runAgent(ctx context.Context, c *config) error {
	if c.Server == "" {
		return errors.New("--server is required")
	}
	if c.Token == "" {
		return errors.New("--token is required")
	}
	logf("level=info msg=%q", "Starting k3s agent "+version())
	hash, secret, err := parseToken(c.Token)
	if err != nil {
		return err
	}
	u, err := url.Parse(c.Server)
	if err != nil {
		return fmt.Errorf("server %q: %w", c.Server, err)
	}
	base := "https://" + net.JoinHostPort(u.Hostname(), strconv.Itoa(supervisorPort))
	insecure := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // verified against the token hash below
	pw, err := localPassword()
	if err != nil {
		return err
	}
	var cfg agentConfig
	for {
		err = fetchAgentConfig(ctx, insecure, base, u.Hostname(), hash, secret, c.NodeName, pw, &cfg)
		if err == nil {
			break
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			return err
		}
		logf("level=error msg=%q", "Waiting to retrieve agent configuration; server is not ready: "+err.Error())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(5 * time.Second):
		}
	}
	c.ClusterCIDR, c.ServiceCIDR = cfg.ClusterCIDR, cfg.ServiceCIDR
	a := &nodeAgent{c: c, dir: filepath.Join(c.DataDir, "agent")}
	if err := a.writeCredentials(c.Server, &cfg); err != nil {
		return err
	}
	rc, err := clientcmd.BuildConfigFromFlags("", a.proxy)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	exits := make(chan error, 4)
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	if err := a.start(cctx, cs, exits); err != nil {
		return err
	}
	sdNotify("READY=1")
	select {
	case <-ctx.Done():
		return nil
	case err := <-exits:
		stop()
		return err
	}
}

// fatalError ends the agent instead of being retried (a CA mismatch).
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

func fetchAgentConfig(ctx context.Context, insecure *http.Client, base, host, hash, secret, node, pw string, out *agentConfig) error {
	ca, err := get(ctx, insecure, base+"/cacerts", "", "")
	if err != nil {
		return fmt.Errorf("failed to get CA certs: %w", err)
	}
	if hash != "" {
		sum := sha256.Sum256(ca)
		if got := hex.EncodeToString(sum[:]); got != hash {
			return &fatalError{fmt.Errorf("failed to validate token: token CA hash does not match the Cluster CA certificate hash: %s != %s", got, hash)}
		}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	verified := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host}}}
	body, err := getWith(ctx, verified, base+"/v1-k3s/agent-config", "node", secret, map[string]string{headerNodeName: node, headerNodePassword: pw})
	if err != nil {
		return err
	}
	return json.Unmarshal(body, out)
}

// writeCredentials writes the agent's certificates and kubeconfigs.
func (a *nodeAgent) writeCredentials(server string, cfg *agentConfig) error {
	tls := filepath.Join(a.dir, "tls")
	if err := os.MkdirAll(tls, 0o700); err != nil {
		return err
	}
	files := map[string][]byte{
		"server-ca.crt": cfg.CA, "client-kubelet.crt": cfg.KubeletCert, "client-kubelet.key": cfg.KubeletKey,
		"serving-kubelet.crt": cfg.ServingCert, "serving-kubelet.key": cfg.ServingKey,
		"client-kube-proxy.crt": cfg.ProxyCert, "client-kube-proxy.key": cfg.ProxyKey,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(tls, name), b, 0o600); err != nil {
			return err
		}
	}
	t := func(n string) string { return filepath.Join(tls, n) }
	a.caFile = t("server-ca.crt")
	a.servCert, a.servKey = t("serving-kubelet.crt"), t("serving-kubelet.key")
	a.kubelet = filepath.Join(a.dir, "kubelet.kubeconfig")
	a.proxy = filepath.Join(a.dir, "kubeproxy.kubeconfig")
	if err := writeKubeconfig(a.kubelet, server, t("server-ca.crt"), t("client-kubelet.crt"), t("client-kubelet.key"), 0o600); err != nil {
		return err
	}
	return writeKubeconfig(a.proxy, server, t("server-ca.crt"), t("client-kube-proxy.crt"), t("client-kube-proxy.key"), 0o600)
}
