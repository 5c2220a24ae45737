package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// supervisorPort serves /cacerts and the bootstrap data (K3s multiplexes
// these on 6443; the stand-in keeps them apart, as RKE2 does on 9345).
const supervisorPort = 9345

type server struct {
	c      *config
	dir    string // <data-dir>/server
	tlsDir string
	secret string // the token's secret part
	pki    *pki
}

// parseToken accepts K10<ca-hash>::<user>:<secret> or a bare secret.
func parseToken(tok string) (hash, secret string, err error) {
	if !strings.HasPrefix(tok, "K10") {
		return "", tok, nil
	}
	h, rest, ok := strings.Cut(strings.TrimPrefix(tok, "K10"), "::")
	if !ok {
		return "", "", fmt.Errorf("invalid token format")
	}
	_, secret, ok = strings.Cut(rest, ":")
	if !ok || secret == "" {
		return "", "", fmt.Errorf("invalid token format")
	}
	return h, secret, nil
}

func runServer(ctx context.Context, c *config) error {
	s := &server{c: c, dir: filepath.Join(c.DataDir, "server")}
	s.tlsDir = filepath.Join(s.dir, "tls")
	if c.ClusterReset {
		p, err := loadCA(s.tlsDir)
		if err != nil {
			return fmt.Errorf("cluster reset: this server has no certificates (the stand-in resets or restores on a server that was a member): %w", err)
		}
		s.pki = p
		return resetEtcd(ctx, s)
	}
	if err := os.Remove(filepath.Join(s.dir, "db", "reset-flag")); err == nil {
		logf("level=info msg=%q", "Managed etcd cluster membership was previously reset, deleting marker")
	}
	// A member is its etcd data: CA files alone (a join refused by etcd)
	// must lead to another join, never to a lone new cluster.
	_, statErr := os.Stat(filepath.Join(s.dir, "db", "etcd", "member"))
	fresh := errors.Is(statErr, os.ErrNotExist)
	var join *bootstrap
	switch {
	case !fresh:
		logf("level=info msg=%q", "Starting k3s "+version()+" with existing data")
		p, err := loadCA(s.tlsDir)
		if err != nil {
			return err
		}
		s.pki = p
		b, err := os.ReadFile(filepath.Join(s.dir, "token-secret"))
		if err != nil {
			return err
		}
		s.secret = string(b)
	case c.Server != "":
		if c.Token == "" {
			return fmt.Errorf("--token is required to join %s", c.Server)
		}
		b, err := s.fetchBootstrap(ctx)
		if err != nil {
			return fmt.Errorf("starting kubernetes: preparing server: %w", err)
		}
		if b.Critical != c.critical() {
			return fmt.Errorf("failed to validate server configuration: critical configuration value mismatch between servers: cluster has %q, this server %q", b.Critical, c.critical())
		}
		if err := s.adopt(b); err != nil {
			return err
		}
		join = b
	default:
		if err := s.initCA(); err != nil {
			return err
		}
	}
	if err := s.issueCerts(); err != nil {
		return err
	}
	if err := s.writeTokens(); err != nil {
		return err
	}
	etcd, err := startEtcd(ctx, s, join)
	if err != nil {
		return err
	}
	defer etcd.Close()
	srv, err := s.serveSupervisor()
	if err != nil {
		return err
	}
	defer srv.Close()
	// Children stop before etcd closes: etcd's Close waits for its clients.
	cctx, stopChildren := context.WithCancel(ctx)
	defer stopChildren()
	procs, err := s.startControlPlane(cctx)
	if err != nil {
		return err
	}
	if err := s.waitAPI(ctx); err != nil {
		return err
	}
	if err := s.writeKubeconfig(); err != nil {
		return err
	}
	logf("level=info msg=%q", "k3s is up and running")
	sdNotify("READY=1")
	cs, err := s.adminClient()
	if err != nil {
		return err
	}
	if err := s.writeDNSManifest(ctx, cs); err != nil {
		return err
	}
	go watchNodeDeletions(cctx, cs, s.removeMember)
	go s.runNode(cctx, cs, etcd.Server.Cfg.Name, procs)
	select {
	case <-ctx.Done():
		return nil
	case err := <-procs:
		logf("level=error msg=%q", err.Error())
		stopChildren()
		return err
	case err := <-etcd.Err():
		logf("level=error msg=%q", "etcd: "+err.Error())
		stopChildren()
		return fmt.Errorf("etcd: %w", err)
	}
}

func (s *server) initCA() error {
	p, err := newCA(s.tlsDir)
	if err != nil {
		return err
	}
	s.pki = p
	_, secret, err := parseToken(s.c.Token)
	if err != nil {
		return err
	}
	if secret == "" {
		raw := make([]byte, 16)
		_, _ = rand.Read(raw)
		secret = hex.EncodeToString(raw)
	}
	s.secret = secret
	if err := s.writeCritical(s.c.critical()); err != nil {
		return err
	}
	return s.serviceKey()
}

func (s *server) writeCritical(v string) error {
	return os.WriteFile(filepath.Join(s.dir, "critical"), []byte(v), 0o600)
}

// serviceKey creates the service-account signing key, shared by servers.
func (s *server) serviceKey() error {
	_, der, err := newKey()
	if err != nil {
		return err
	}
	return writePEM(s.pki.path("service.key"), "EC PRIVATE KEY", der, 0o600)
}

// issueCerts makes this server's leaf certificates (idempotent per start).
func (s *server) issueCerts() error {
	hosts := append([]string{"127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", s.c.NodeIP, s.c.AdvertiseAddress, s.c.NodeName}, s.c.TLSSAN...)
	if ip := firstServiceIP(s.c.ServiceCIDR); ip != "" {
		hosts = append(hosts, ip)
	}
	leaves := []struct {
		name, cn       string
		orgs           []string
		hosts          []string
		server, client bool
	}{
		{"serving", "k3s", nil, hosts, true, false},
		{"etcd", s.c.NodeName, nil, []string{"127.0.0.1", "localhost", s.c.NodeIP}, true, true},
		{"client-admin", "system:admin", []string{"system:masters"}, nil, false, true},
		{"client-controller", "system:kube-controller-manager", nil, nil, false, true},
		{"client-scheduler", "system:kube-scheduler", nil, nil, false, true},
		{"client-kube-apiserver", "system:kube-apiserver", []string{"system:masters"}, nil, false, true},
		// Where K3s keeps its etcd client certificate, for tools (and
		// labctl) that ask etcd directly.
		{"etcd/client", "etcd-client", nil, nil, false, true},
	}
	for _, l := range leaves {
		if err := s.pki.leaf(l.name, l.cn, l.orgs, l.hosts, l.server, l.client); err != nil {
			return fmt.Errorf("certificate %s: %w", l.name, err)
		}
	}
	ca, err := os.ReadFile(s.pki.path("server-ca.crt"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(s.pki.path("etcd/server-ca.crt"), ca, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.dir, "token-secret"), []byte(s.secret), 0o600)
}

// sdNotify tells systemd (Type=notify units) about readiness, as K3s does.
func sdNotify(state string) {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return
	}
	if sock[0] == '@' {
		sock = "\x00" + sock[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	_, _ = c.Write([]byte(state))
}

func firstServiceIP(cidr string) string {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		return ""
	}
	ip := n.IP.To4()
	if ip == nil {
		return ""
	}
	out := make(net.IP, 4)
	copy(out, ip)
	out[3]++
	return out.String()
}

// writeTokens writes server/token and server/node-token in K3s's format.
func (s *server) writeTokens() error {
	h, err := caHash(s.tlsDir)
	if err != nil {
		return err
	}
	tok := fmt.Sprintf("K10%s::server:%s\n", h, s.secret)
	for _, n := range []string{"token", "node-token"} {
		if err := os.WriteFile(filepath.Join(s.dir, n), []byte(tok), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// bootstrap is what a joining server receives: the shared CA and keys and
// the cluster's critical settings.
type bootstrap struct {
	CACert, CAKey, ServiceKey []byte
	Critical                  string
	EtcdEndpoints             []string
}

// serveSupervisor serves /cacerts (no auth, as K3s) and the bootstrap data
// (token secret required).
func (s *server) serveSupervisor() (*http.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/cacerts", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, s.pki.path("server-ca.crt"))
	})
	mux.HandleFunc("/v1-k3s/server-bootstrap", func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != "server" || p != s.secret {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		read := func(n string) []byte { b, _ := os.ReadFile(s.pki.path(n)); return b }
		crit, _ := os.ReadFile(filepath.Join(s.dir, "critical"))
		_ = json.NewEncoder(w).Encode(bootstrap{
			CACert: read("server-ca.crt"), CAKey: read("server-ca.key"), ServiceKey: read("service.key"),
			Critical: string(crit), EtcdEndpoints: []string{"https://" + s.c.NodeIP + ":2379"},
		})
	})
	mux.HandleFunc("/v1-k3s/agent-config", s.serveAgentConfig)
	cert, err := tls.LoadX509KeyPair(s.pki.path("serving.crt"), s.pki.path("serving.key"))
	if err != nil {
		return nil, err
	}
	l, err := tls.Listen("tcp", ":"+strconv.Itoa(supervisorPort), &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return srv, nil
}

// fetchBootstrap is a joining server's side: the CA is fetched without
// trust, checked against the token's hash, then the bootstrap data is
// fetched over TLS verified by that CA with the token's secret.
func (s *server) fetchBootstrap(ctx context.Context) (*bootstrap, error) {
	hash, secret, err := parseToken(s.c.Token)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(s.c.Server)
	if err != nil {
		return nil, fmt.Errorf("server %q: %w", s.c.Server, err)
	}
	base := "https://" + net.JoinHostPort(u.Hostname(), strconv.Itoa(supervisorPort))
	insecure := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // verified against the token hash below
	var ca []byte
	for attempt := 0; ; attempt++ {
		ca, err = get(ctx, insecure, base+"/cacerts", "", "")
		if err == nil || attempt >= 30 {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to get CA certs: %w", err)
	}
	if hash != "" {
		sum := sha256.Sum256(ca)
		if got := hex.EncodeToString(sum[:]); got != hash {
			return nil, fmt.Errorf("failed to validate token: token CA hash does not match the Cluster CA certificate hash: %s != %s", got, hash)
		}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	verified := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: u.Hostname()}}}
	body, err := get(ctx, verified, base+"/v1-k3s/server-bootstrap", "server", secret)
	if err != nil {
		return nil, fmt.Errorf("failed to get bootstrap data from %s: %w", s.c.Server, err)
	}
	var b bootstrap
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, err
	}
	s.secret = secret
	return &b, nil
}

// adopt writes the cluster's CA and keys: only after every check passed,
// so a refused join leaves no state that a later start would mistake for
// an existing member.
func (s *server) adopt(b *bootstrap) error {
	if err := writePEMRaw(filepath.Join(s.tlsDir, "server-ca.crt"), b.CACert, 0o644); err != nil {
		return err
	}
	if err := writePEMRaw(filepath.Join(s.tlsDir, "server-ca.key"), b.CAKey, 0o600); err != nil {
		return err
	}
	if err := writePEMRaw(filepath.Join(s.tlsDir, "service.key"), b.ServiceKey, 0o600); err != nil {
		return err
	}
	p, err := loadCA(s.tlsDir)
	if err != nil {
		return err
	}
	s.pki = p
	return s.writeCritical(b.Critical)
}

func writePEMRaw(path string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, b, mode)
}

func get(ctx context.Context, c *http.Client, u, user, pass string) ([]byte, error) {
	return getWith(ctx, c, u, user, pass, nil)
}

func getWith(ctx context.Context, c *http.Client, u, user, pass string, headers map[string]string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", u, resp.Status)
	}
	return b, nil
}

// startControlPlane runs the upstream components as children; the
// returned channel receives the first one's exit.
func (s *server) startControlPlane(ctx context.Context) (chan error, error) {
	t := s.pki.path
	cred := filepath.Join(s.dir, "cred")
	if err := os.MkdirAll(cred, 0o700); err != nil {
		return nil, err
	}
	for _, who := range []string{"controller", "scheduler"} {
		if err := writeKubeconfig(filepath.Join(cred, who+".kubeconfig"), "https://127.0.0.1:6443", t("server-ca.crt"), t("client-"+who+".crt"), t("client-"+who+".key"), 0o600); err != nil {
			return nil, err
		}
	}
	logs := filepath.Join(s.dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return nil, err
	}
	procs := []struct {
		name string
		args []string
	}{
		{"kube-apiserver", []string{
			"--advertise-address=" + s.c.AdvertiseAddress, "--bind-address=0.0.0.0", "--secure-port=6443",
			"--allow-privileged=true", "--authorization-mode=Node,RBAC", "--anonymous-auth=false",
			"--client-ca-file=" + t("server-ca.crt"), "--enable-admission-plugins=NodeRestriction",
			"--etcd-servers=https://127.0.0.1:2379", "--etcd-cafile=" + t("server-ca.crt"),
			"--etcd-certfile=" + t("client-kube-apiserver.crt"), "--etcd-keyfile=" + t("client-kube-apiserver.key"),
			"--kubelet-client-certificate=" + t("client-kube-apiserver.crt"), "--kubelet-client-key=" + t("client-kube-apiserver.key"),
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + t("service.key"), "--service-account-signing-key-file=" + t("service.key"),
			"--api-audiences=https://kubernetes.default.svc.cluster.local,k3s",
			"--service-cluster-ip-range=" + s.c.ServiceCIDR,
			"--tls-cert-file=" + t("serving.crt"), "--tls-private-key-file=" + t("serving.key"),
			"--profiling=false",
		}},
		{"kube-controller-manager", []string{
			"--kubeconfig=" + filepath.Join(cred, "controller.kubeconfig"),
			"--authentication-kubeconfig=" + filepath.Join(cred, "controller.kubeconfig"),
			"--authorization-kubeconfig=" + filepath.Join(cred, "controller.kubeconfig"),
			"--bind-address=127.0.0.1", "--secure-port=10257", "--leader-elect=true",
			"--allocate-node-cidrs=true", "--cluster-cidr=" + s.c.ClusterCIDR, "--service-cluster-ip-range=" + s.c.ServiceCIDR,
			"--cluster-signing-cert-file=" + t("server-ca.crt"), "--cluster-signing-key-file=" + t("server-ca.key"),
			"--root-ca-file=" + t("server-ca.crt"), "--service-account-private-key-file=" + t("service.key"),
			"--use-service-account-credentials=true", "--profiling=false",
		}},
		{"kube-scheduler", []string{
			"--kubeconfig=" + filepath.Join(cred, "scheduler.kubeconfig"),
			"--authentication-kubeconfig=" + filepath.Join(cred, "scheduler.kubeconfig"),
			"--authorization-kubeconfig=" + filepath.Join(cred, "scheduler.kubeconfig"),
			"--bind-address=127.0.0.1", "--secure-port=10259", "--leader-elect=true", "--profiling=false",
		}},
	}
	exits := make(chan error, len(procs)+4)
	for i, p := range procs {
		if i == 1 {
			// The controllers need the API's RBAC bootstrap; K3s too
			// starts them once the API is ready.
			if err := s.waitAPI(ctx); err != nil {
				return nil, err
			}
		}
		bin, err := findBinary(s.c.DataDir, p.name)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			logf("level=info msg=%q", "Running kube-apiserver")
		}
		if err := spawn(ctx, logs, p.name, bin, p.args, nil, exits); err != nil {
			return nil, err
		}
	}
	return exits, nil
}

// adminClient is a clientset with the admin credentials.
func (s *server) adminClient() (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", "/etc/rancher/k3s/k3s.yaml")
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// removeMember removes the etcd member of that name, if it is one.
func (s *server) removeMember(ctx context.Context, name string) error {
	cli, err := etcdClient(s, []string{"https://127.0.0.1:2379"})
	if err != nil {
		return err
	}
	defer cli.Close()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return err
	}
	for _, m := range list.Members {
		if m.Name == name {
			_, err := cli.MemberRemove(ctx, m.ID)
			return err
		}
	}
	return nil
}

// runNode is the server's agent: node password, containerd, kubelet,
// kube-proxy, pod network and K3s's labels. A refused node password is
// logged and retried, as K3s's agent does; the API keeps serving.
func (s *server) runNode(ctx context.Context, cs kubernetes.Interface, member string, exits chan<- error) {
	a, err := s.nodeAgent()
	if err == nil {
		err = a.start(ctx, cs, exits)
	}
	if err != nil && ctx.Err() == nil {
		exits <- fmt.Errorf("agent: %w", err)
		return
	}
	labelServer(ctx, cs, s.c, member)
}

// nodeAgent issues the server's kubelet and kube-proxy credentials.
func (s *server) nodeAgent() (*nodeAgent, error) {
	a := &nodeAgent{c: s.c, dir: filepath.Join(s.c.DataDir, "agent"), server: true, caFile: s.pki.path("server-ca.crt")}
	t := s.pki.path
	hosts := []string{"127.0.0.1", "localhost", s.c.NodeIP, s.c.NodeName}
	leaves := []struct {
		name, cn string
		orgs     []string
		hosts    []string
		server   bool
	}{
		{"client-kubelet", "system:node:" + s.c.NodeName, []string{"system:nodes"}, nil, false},
		{"serving-kubelet", s.c.NodeName, nil, hosts, true},
		{"client-kube-proxy", "system:kube-proxy", nil, nil, false},
	}
	for _, l := range leaves {
		if err := s.pki.leaf(l.name, l.cn, l.orgs, l.hosts, l.server, !l.server); err != nil {
			return nil, err
		}
	}
	a.servCert, a.servKey = t("serving-kubelet.crt"), t("serving-kubelet.key")
	a.kubelet = filepath.Join(a.dir, "kubelet.kubeconfig")
	a.proxy = filepath.Join(a.dir, "kubeproxy.kubeconfig")
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return nil, err
	}
	if err := writeKubeconfig(a.kubelet, "https://127.0.0.1:6443", t("server-ca.crt"), t("client-kubelet.crt"), t("client-kubelet.key"), 0o600); err != nil {
		return nil, err
	}
	return a, writeKubeconfig(a.proxy, "https://127.0.0.1:6443", t("server-ca.crt"), t("client-kube-proxy.crt"), t("client-kube-proxy.key"), 0o600)
}

// findBinary looks in <data-dir>/data/current/bin, where K3s unpacks its
// bundled binaries, then in PATH.
func findBinary(dataDir, name string) (string, error) {
	p := filepath.Join(dataDir, "data", "current", "bin", name)
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return exec.LookPath(name)
}

// waitAPI polls /readyz with the admin certificate.
func (s *server) waitAPI(ctx context.Context) error {
	cert, err := tls.LoadX509KeyPair(s.pki.path("client-admin.crt"), s.pki.path("client-admin.key"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(s.pki.caCert)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}}}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if _, err := get(ctx, c, "https://127.0.0.1:6443/readyz", "", ""); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver not ready after 3m: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// writeKubeconfig writes /etc/rancher/k3s/k3s.yaml for the admin.
func (s *server) writeKubeconfig() error {
	mode, err := strconv.ParseUint(s.c.WriteKubeconfigMode, 8, 32)
	if err != nil {
		return fmt.Errorf("write-kubeconfig-mode %q: %w", s.c.WriteKubeconfigMode, err)
	}
	if err := writeKubeconfig("/etc/rancher/k3s/k3s.yaml", "https://127.0.0.1:6443", s.pki.path("server-ca.crt"), s.pki.path("client-admin.crt"), s.pki.path("client-admin.key"), os.FileMode(mode)); err != nil {
		return err
	}
	// K3S_KUBECONFIG_OUTPUT (set by k3d) names a second copy.
	if out := os.Getenv("K3S_KUBECONFIG_OUTPUT"); out != "" {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		return writeKubeconfig(out, "https://127.0.0.1:6443", s.pki.path("server-ca.crt"), s.pki.path("client-admin.crt"), s.pki.path("client-admin.key"), os.FileMode(mode))
	}
	return nil
}

// writeDNSManifest writes server/manifests/coredns.yaml as K3s does (k3d
// rewrites its ConfigMap's NodeHosts) and creates that ConfigMap. CoreDNS
// itself is not run: the manifest holds the ConfigMap only.
func (s *server) writeDNSManifest(ctx context.Context, cs kubernetes.Interface) error {
	if slices.Contains(s.c.Disable, "coredns") {
		return nil
	}
	dir := filepath.Join(s.dir, "manifests")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(dir, "coredns.yaml")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		m := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coredns\n  namespace: kube-system\ndata:\n  NodeHosts: \"\"\n"
		if err := os.WriteFile(path, []byte(m), 0o600); err != nil {
			return err
		}
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system"}, Data: map[string]string{"NodeHosts": ""}}
	for i := 0; ; i++ {
		_, err := cs.CoreV1().ConfigMaps("kube-system").Create(ctx, cm, metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) {
			break
		}
		if i == 30 {
			return fmt.Errorf("cluster dns configmap: %w", err)
		}
		time.Sleep(time.Second)
	}
	logf("level=info msg=%q", "Cluster dns configmap has been set successfully")
	return nil
}
