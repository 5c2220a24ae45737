package testbed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Users of a Docker host node.
const (
	DockerUser   = "dockerop" // in the docker group: may use Docker
	NoDockerUser = "nodocker" // a login without it
)

// dockerHostImage is the node image with Debian's docker.io, its
// daemon configured as the bed's own (the runtime wrapper where the
// machine lacks CAP_SYS_RESOURCE, pulls failing fast through a dead
// proxy, address pools apart from the bed's), built once.
func (b *Bed) dockerHostImage(ctx context.Context, log func(string, ...any)) (string, error) {
	id, err := b.Docker.Output(ctx, "image", "inspect", "--format", "{{.Id}}", b.Image)
	if err != nil {
		return "", err
	}
	cfg := map[string]any{"storage-driver": "overlay2", "bip": "10.213.0.1/24",
		"default-address-pools": []map[string]any{{"base": "10.214.0.0/16", "size": 24}}}
	var wrap string
	if lacksSysResource() {
		if wrap, err = buildRuncWrap(ctx, CacheDir()); err != nil {
			return "", err
		}
		cfg["runtimes"] = map[string]any{"runcwrap": map[string]any{"path": "/usr/local/bin/runcwrap"}}
		cfg["default-runtime"] = "runcwrap"
	}
	daemon, _ := json.Marshal(cfg)
	script := fmt.Sprintf(`set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends docker.io >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/*
# The node image masks containerd (K3s runs its own); Docker needs it.
rm -f /etc/systemd/system/containerd.service
systemctl enable containerd docker >/dev/null 2>&1
mkdir -p /etc/docker /etc/systemd/system/docker.service.d
echo '%s' > /etc/docker/daemon.json
printf '[Service]\nEnvironment=HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY=\n' > /etc/systemd/system/docker.service.d/proxy.conf
useradd -m -s /bin/bash -G docker %[2]s
# The operator's login on a Docker host VM: labctl tunes the host with sudo.
echo '%[2]s ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/%[2]s
chmod 0440 /etc/sudoers.d/%[2]s
useradd -m -s /bin/bash %[3]s`, daemon, DockerUser, NoDockerUser)
	sum := sha256.New()
	fmt.Fprintln(sum, id, script)
	if wrap != "" {
		w, err := os.ReadFile(wrap)
		if err != nil {
			return "", err
		}
		sum.Write(w)
	}
	hash := hex.EncodeToString(sum.Sum(nil))[:16]
	tag := "labctl-testbed/dockerhost:" + hash
	if b.imageHash(ctx, tag) == hash {
		return tag, nil
	}
	start := time.Now()
	mirror, err := b.mirror(ctx)
	if err != nil {
		return "", err
	}
	name := fmt.Sprintf("%s-imagebuild-%d", b.opts.Name, time.Now().UnixNano())
	defer func() { _, _ = b.Docker.Output(context.WithoutCancel(ctx), "rm", "-f", name) }()
	if _, err := b.Docker.Output(ctx, "run", "--name", name, "--network", b.Network, "--add-host", "deb.debian.org:"+mirror, b.Image, "/bin/sh", "-c", script); err != nil {
		return "", fmt.Errorf("docker host image: %w", err)
	}
	if wrap != "" {
		if _, err := b.Docker.Output(ctx, "cp", wrap, name+":/usr/local/bin/runcwrap"); err != nil {
			return "", err
		}
	}
	if _, err := b.Docker.Output(ctx, "commit", "--change", `CMD ["/sbin/init"]`, "--change", "LABEL labctl.hash="+hash, name, tag); err != nil {
		return "", err
	}
	log("docker host: image %s built in %s", tag, time.Since(start).Round(time.Millisecond))
	return tag, nil
}

// StartDockerHost starts a node that is a Docker host reached over SSH,
// as the staging VM is: its own dockerd (its data on a volume of its
// own), DockerUser in the docker group and NoDockerUser not, both with
// the bed's key, and images (from the bed's engine) loaded into it.
func (b *Bed) StartDockerHost(ctx context.Context, name, ip string, images []string, log func(string, ...any)) (*Node, error) {
	tag, err := b.dockerHostImage(ctx, log)
	if err != nil {
		return nil, err
	}
	pub, err := os.ReadFile(b.KeyFile + ".pub")
	if err != nil {
		return nil, err
	}
	start := time.Now()
	n, err := b.startNodeFrom(ctx, tag, name, ip, string(pub), authorizeScript("root", DockerUser, NoDockerUser), "-v", "/var/lib/docker")
	if err != nil {
		return nil, err
	}
	for {
		if _, err := b.Exec(ctx, name, "docker", "version", "--format", "{{.Server.Version}}"); err == nil {
			break
		}
		if time.Since(start) > time.Minute {
			st, _ := b.Exec(ctx, name, "sh", "-c", "systemctl status docker --no-pager -l | tail -n 15")
			return nil, fmt.Errorf("docker host %s: Docker not up within a minute: %s", name, st)
		}
		time.Sleep(500 * time.Millisecond)
	}
	log("docker host %s: dockerd up %s after start", name, time.Since(start).Round(time.Millisecond))
	if b.registry != nil {
		// Real-images mode: the host pulls what k3d asks for from the
		// bed's registry, through the bed's proxy on the node network
		// (the node trusts the bed's CA), as the staging VM pulls from
		// docker.io and ghcr.io.
		u, err := b.proxy.listenOn(b.Subnet.Addr().Next().String())
		if err != nil {
			return nil, err
		}
		script := "printf '[Service]\nEnvironment=HTTP_PROXY=" + u + " HTTPS_PROXY=" + u + " NO_PROXY=\n' > /etc/systemd/system/docker.service.d/proxy.conf && systemctl daemon-reload && systemctl restart docker && docker version --format '{{.Server.Version}}' >/dev/null"
		if out, err := b.Exec(ctx, name, "sh", "-c", script); err != nil {
			return nil, fmt.Errorf("docker host %s: pulls through the bed's proxy: %w: %s", name, err, out)
		}
		log("docker host %s: pulls through %s from the bed's registry", name, u)
		return n, nil
	}
	if len(images) > 0 {
		t := time.Now()
		save := exec.CommandContext(ctx, "docker", append([]string{"save"}, images...)...)
		save.Env = append(os.Environ(), "DOCKER_HOST="+b.Docker.Host)
		load := exec.CommandContext(ctx, "docker", "exec", "-i", b.opts.Name+"-"+name, "docker", "load", "-q")
		load.Env = save.Env
		pipe, err := save.StdoutPipe()
		if err != nil {
			return nil, err
		}
		load.Stdin = pipe
		var loadOut, saveErr strings.Builder
		load.Stdout, load.Stderr, save.Stderr = &loadOut, &loadOut, &saveErr
		if err := save.Start(); err != nil {
			return nil, err
		}
		if err := load.Run(); err != nil {
			_ = save.Wait()
			return nil, fmt.Errorf("docker host %s: load images: %w: %s %s", name, err, loadOut.String(), saveErr.String())
		}
		if err := save.Wait(); err != nil {
			return nil, fmt.Errorf("docker host %s: save images: %w: %s", name, err, saveErr.String())
		}
		log("docker host %s: %d images loaded in %s", name, len(images), time.Since(t).Round(time.Millisecond))
	}
	return n, nil
}

// mirror is the Debian mirror's address, which nodes' apt reaches.
func (b *Bed) mirror(ctx context.Context) (string, error) {
	addrs, err := net.DefaultResolver.LookupHost(ctx, "deb.debian.org")
	if err != nil || len(addrs) == 0 {
		return "", fmt.Errorf("resolve the Debian mirror for the nodes' apt: %w", err)
	}
	return addrs[0], nil
}
