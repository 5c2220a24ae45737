package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Docker is a Docker engine the bed talks to through the docker CLI: one it
// started itself (own data root, own bridge subnets, pulls blocked), or
// one already running (a GitHub runner's).
type Docker struct {
	// Host is the DOCKER_HOST value, e.g. unix:///…/docker.sock.
	Host string
	// Own is true when the bed started the daemon and must stop it.
	Own bool

	pid     int
	dataDir string
}

// DockerOptions shape a daemon the bed starts.
type DockerOptions struct {
	// Cache holds the data root (so imported images survive between runs)
	// and the runtime wrapper.
	Cache string
	// BridgeIP is the default bridge's address (--bip).
	BridgeIP string
	// AddressPool is where user-defined networks get subnets.
	AddressPool string
	// Proxy is the daemon's HTTP(S)_PROXY (the bed's pull proxy) and
	// CAFile the roots it trusts (SSL_CERT_FILE: the bed's CA alone).
	Proxy, CAFile string
	// Log receives progress lines.
	Log func(format string, args ...any)
}

// StartDocker returns a usable engine: $DOCKER_HOST or the system socket if
// one answers, else a daemon of its own, installing docker.io when missing.
func StartDocker(ctx context.Context, o DockerOptions) (*Docker, error) {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	for _, host := range []string{os.Getenv("DOCKER_HOST"), "unix:///var/run/docker.sock"} {
		if host == "" {
			continue
		}
		d := &Docker{Host: host}
		if _, err := d.Output(ctx, "version", "--format", "{{.Server.Version}}"); err == nil {
			o.Log("docker: using the running engine at %s", host)
			return d, nil
		}
	}
	if _, err := exec.LookPath("dockerd"); err != nil {
		o.Log("docker: installing docker.io")
		if err := aptInstall(ctx, "docker.io"); err != nil {
			return nil, err
		}
	}
	dir := filepath.Join(o.Cache, "docker")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "docker.sock")
	d := &Docker{Host: "unix://" + sock, Own: true, dataDir: dir}
	cfg := map[string]any{}
	if lacksSysResource() {
		wrap, err := buildRuncWrap(ctx, o.Cache)
		if err != nil {
			return nil, err
		}
		o.Log("docker: CAP_SYS_RESOURCE is missing here; default runtime is the wrapper %s", wrap)
		cfg["runtimes"] = map[string]any{"runcwrap": map[string]any{"path": wrap}}
		cfg["default-runtime"] = "runcwrap"
	}
	cfgPath := filepath.Join(dir, "daemon.json")
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		return nil, err
	}
	stopStale(filepath.Join(dir, "dockerd.pid"), o.Log)
	_ = os.Remove(sock)
	logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("dockerd",
		"--config-file", cfgPath,
		"--data-root", filepath.Join(dir, "root"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"),
		"--host", d.Host,
		"--bip", o.BridgeIP,
		"--default-address-pool", "base="+o.AddressPool+",size=24",
		"--storage-driver", "overlay2",
	)
	// Every pull goes to the bed's proxy, which serves the bed's registry
	// or refuses at once: nothing tries the network.
	proxy := o.Proxy
	if proxy == "" {
		proxy = "http://127.0.0.1:9"
	}
	cmd.Env = append(os.Environ(), "HTTP_PROXY="+proxy, "HTTPS_PROXY="+proxy, "NO_PROXY=")
	if o.CAFile != "" {
		cmd.Env = append(cmd.Env, "SSL_CERT_FILE="+o.CAFile, "SSL_CERT_DIR=/nonexistent")
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start dockerd: %w", err)
	}
	d.pid = cmd.Process.Pid
	go func() { _ = cmd.Wait() }()
	start := time.Now()
	for {
		if _, err := d.Output(ctx, "version", "--format", "{{.Server.Version}}"); err == nil {
			break
		}
		if time.Since(start) > 30*time.Second || ctx.Err() != nil {
			d.Stop()
			tail, _ := os.ReadFile(filepath.Join(dir, "dockerd.log"))
			return nil, fmt.Errorf("dockerd did not answer within 30s: %s", lastLines(string(tail), 10))
		}
		time.Sleep(100 * time.Millisecond)
	}
	o.Log("docker: own daemon pid %d ready in %s (data root %s)", d.pid, time.Since(start).Round(time.Millisecond), dir)
	return d, nil
}

// Stop ends a daemon the bed started (by its PID) and waits for it.
func (d *Docker) Stop() {
	if !d.Own || d.pid == 0 {
		return
	}
	_ = syscall.Kill(d.pid, syscall.SIGTERM)
	for i := 0; i < 100; i++ {
		if err := syscall.Kill(d.pid, 0); err != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(-d.pid, syscall.SIGKILL)
}

// Output runs a docker CLI command against this engine.
func (d *Docker) Output(ctx context.Context, args ...string) (string, error) {
	return d.run(ctx, nil, args...)
}

// Input runs a docker CLI command with stdin.
func (d *Docker) Input(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	return d.run(ctx, stdin, args...)
}

func (d *Docker) run(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.Host)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(out.String()), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// lacksSysResource reads the bounding set: bit 24 is CAP_SYS_RESOURCE.
func lacksSysResource() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && n&(1<<24) == 0
		}
	}
	return false
}

// buildRuncWrap compiles the runtime wrapper into the cache.
func buildRuncWrap(ctx context.Context, cache string) (string, error) {
	out := filepath.Join(cache, "bin", "runcwrap")
	src, err := sourceDir("runcwrap")
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-o", out, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build runcwrap: %w: %s", err, b)
	}
	return out, nil
}

func aptInstall(ctx context.Context, pkgs ...string) error {
	upd := exec.CommandContext(ctx, "apt-get", "update", "-qq")
	if b, err := upd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get update: %w: %s", err, lastLines(string(b), 5))
	}
	cmd := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "-qq", "--no-install-recommends"}, pkgs...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get install %s: %w: %s", strings.Join(pkgs, " "), err, lastLines(string(b), 5))
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ErrNotRoot is returned where the bed needs root (dockerd, debootstrap).
var ErrNotRoot = errors.New("the test bed needs root")

// stopStale stops a daemon of the bed's left behind by a run that was
// killed before it could stop it (its pid file names it), so that the new
// daemon can take the data root.
func stopStale(pidfile string, log func(string, ...any)) {
	b, err := os.ReadFile(pidfile)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), pidfile) {
		_ = os.Remove(pidfile)
		return
	}
	log("docker: stopping the bed's daemon pid %d left by an earlier run", pid)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 150; i++ {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	time.Sleep(500 * time.Millisecond)
}
