package testbed

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Registries are the hosts whose pulls the bed serves from its own
// registry when it runs in real-images mode: what Docker asks for
// docker.io/… images, and ghcr.io (k3d's helpers, Flux).
var Registries = []string{"registry-1.docker.io", "ghcr.io"}

// pullProxy is the HTTPS proxy the bed's dockerd is started with (its
// HTTP(S)_PROXY). Docker reaches a registry through it with CONNECT, so
// neither name resolution nor Docker's configuration is touched: a
// CONNECT to one of Registries is tunnelled to the bed's registry once
// one runs (whose certificate, from the bed's CA, names those hosts);
// every other CONNECT or request is refused at once with 403, naming the
// host, so an unexpected pull fails fast instead of reaching a network.
type pullProxy struct {
	ln      net.Listener
	mu      sync.Mutex
	to      string   // the registry's unix socket; "" until it runs
	refused []string // hosts refused, in order
	lns     []net.Listener
	extra   map[string]string // address → URL of listenOn's listeners
}

func startPullProxy() (*pullProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("pull proxy: %w", err)
	}
	p := &pullProxy{ln: ln}
	go p.accept(ln)
	return p, nil
}

func (p *pullProxy) URL() string { return "http://" + p.ln.Addr().String() }

// listenOn serves the proxy on another address too (the bed network's
// gateway, for the Docker host nodes' dockerd) and returns its URL.
func (p *pullProxy) listenOn(addr string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if u, ok := p.extra[addr]; ok {
		return u, nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return "", fmt.Errorf("pull proxy on %s: %w", addr, err)
	}
	p.lns = append(p.lns, ln)
	go p.accept(ln)
	if p.extra == nil {
		p.extra = map[string]string{}
	}
	p.extra[addr] = "http://" + ln.Addr().String()
	return p.extra[addr], nil
}

func (p *pullProxy) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go p.serve(c)
	}
}

func (p *pullProxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ln := range append(p.lns, p.ln) {
		_ = ln.Close()
	}
}

func (p *pullProxy) route(sock string) {
	p.mu.Lock()
	p.to = sock
	p.mu.Unlock()
}

// Refused lists the hosts the proxy refused (an unexpected pull).
func (p *pullProxy) Refused() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.refused...)
}

func (p *pullProxy) serve(c net.Conn) {
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	host := req.Host
	p.mu.Lock()
	to := p.to
	known := false
	for _, r := range Registries {
		known = known || host == r+":443"
	}
	if req.Method != http.MethodConnect || !known || to == "" {
		p.refused = append(p.refused, host)
		p.mu.Unlock()
		msg := fmt.Sprintf("the labctl test bed has no network: %s %s refused (only %s, served by the bed's registry in real-images mode)\n", req.Method, host, strings.Join(Registries, ", "))
		_, _ = fmt.Fprintf(c, "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(msg), msg)
		return
	}
	p.mu.Unlock()
	up, err := net.DialTimeout("unix", to, 5*time.Second)
	if err != nil {
		_, _ = fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n")
		return
	}
	defer func() { _ = up.Close() }()
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, br); closeWrite(up); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); closeWrite(c); done <- struct{}{} }()
	<-done
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// Registry is the CNCF Distribution registry (e2e/tools/registry) the bed
// runs in real-images mode, its data kept in the cache between runs.
type Registry struct {
	// Log is the registry's log file: its access log names every pull.
	Log string
	pid int
}

// registryRunning starts the bed's registry once per bed and routes the
// pull proxy to it.
func (b *Bed) registryRunning(ctx context.Context, log func(string, ...any)) (*Registry, error) {
	b.regMu.Lock()
	defer b.regMu.Unlock()
	if b.registry != nil {
		return b.registry, nil
	}
	if b.proxy == nil {
		return nil, fmt.Errorf("real-images mode on the bed needs the bed's own dockerd (its pulls go through the bed's proxy); this one is %s", b.Docker.Host)
	}
	src, err := sourceDir("../tools/registry")
	if err != nil {
		return nil, err
	}
	sum, err := moduleHash(src)
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(b.opts.Cache, "bin", "registry-"+sum)
	if _, err := os.Stat(bin); err != nil {
		start := time.Now()
		log("registry: building github.com/distribution/distribution/v3/cmd/registry (cold: a minute or two)")
		if err := goBuild(ctx, src, "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w", "-o", bin, "github.com/distribution/distribution/v3/cmd/registry"); err != nil {
			return nil, err
		}
		log("registry: built in %s", time.Since(start).Round(time.Second))
	}
	dir := filepath.Join(b.opts.Cache, "registry")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := b.ca.hostCert(Registries)
	if err != nil {
		return nil, err
	}
	run := filepath.Join(b.dir, "registry")
	if err := os.MkdirAll(run, 0o700); err != nil {
		return nil, err
	}
	sock := filepath.Join(run, "registry.sock")
	files := map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "config.yml": []byte(fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: text
  accesslog: {disabled: false}
storage:
  filesystem: {rootdirectory: %s}
  delete: {enabled: true}
http:
  net: unix
  addr: %s
  tls: {certificate: %s, key: %s}
`, filepath.Join(dir, "data"), sock, filepath.Join(run, "tls.crt"), filepath.Join(run, "tls.key")))}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(run, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	// The log outlives the bed (in the cache, replaced by the next run's)
	// so that a failed pull can be read after the test.
	r := &Registry{Log: filepath.Join(dir, "registry.log")}
	logf, err := os.Create(r.Log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve", filepath.Join(run, "config.yml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the registry: %w", err)
	}
	r.pid = cmd.Process.Pid
	go func() { _ = cmd.Wait() }()
	start := time.Now()
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			_ = c.Close()
			break
		}
		if time.Since(start) > 20*time.Second {
			r.stop()
			tail, _ := os.ReadFile(r.Log)
			return nil, fmt.Errorf("the registry did not listen on %s within 20s: %s", sock, lastLines(string(tail), 10))
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.proxy.route(sock)
	b.registry = r
	log("registry: serving %s from %s (log %s)", strings.Join(Registries, ", "), dir, r.Log)
	return r, nil
}

func (r *Registry) stop() {
	if r == nil || r.pid == 0 {
		return
	}
	_ = syscall.Kill(r.pid, syscall.SIGTERM)
	for i := 0; i < 50 && syscall.Kill(r.pid, 0) == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(-r.pid, syscall.SIGKILL)
}

// ManifestRequests counts the registry's answered requests for image's
// manifest by its tag (image is a reference such as
// docker.io/rancher/k3s:v1.34.4-k3s1): a pull asks for it once (dockerd
// with HEAD, then fetches only what it does not hold yet).
func (r *Registry) ManifestRequests(image string) int {
	data, err := os.ReadFile(r.Log)
	if err != nil {
		return 0
	}
	repo, tag := splitRef(image)
	n := 0
	for _, m := range []string{"GET", "HEAD"} {
		n += strings.Count(string(data), `"`+m+` /v2/`+repo+`/manifests/`+tag+` HTTP/1.1" 200`)
	}
	return n
}

// Blobs counts the registry's answered layer and config downloads (GET
// of a blob) for image's repository.
func (r *Registry) Blobs(image string) int {
	data, err := os.ReadFile(r.Log)
	if err != nil {
		return 0
	}
	repo, _ := splitRef(image)
	return strings.Count(string(data), `"GET /v2/`+repo+`/blobs/sha256:`)
}

// splitRef splits an image reference into its repository (without the
// registry host, as the registry sees it) and tag.
func splitRef(image string) (string, string) {
	repo, tag := image, "latest"
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		repo, tag = image[:i], image[i+1:]
	}
	if i := strings.Index(repo, "/"); i > 0 && strings.ContainsAny(repo[:i], ".:") {
		repo = repo[i+1:]
	}
	if !strings.Contains(repo, "/") {
		repo = "library/" + repo
	}
	return repo, tag
}

// hostCert is a server certificate for names, signed by the CA, in PEM.
func (c *ca) hostCert(names []string) (certPEM, keyPEM []byte, err error) {
	der, key, err := c.leaf(names[0], names, nil)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}
