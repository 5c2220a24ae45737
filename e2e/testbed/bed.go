package testbed

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Label marks everything the bed creates, so a crashed run's leftovers
// can be found and removed.
const Label = "labctl-testbed"

// Options shape a bed.
type Options struct {
	// Name prefixes the bed's network and containers.
	Name string
	// Subnet is the node network, e.g. 172.30.10.0/24 (a test range, never a
	// real site's).
	Subnet string
	// Cache holds images, tarballs and built binaries between runs;
	// default $LABCTL_TESTBED_CACHE or ~/.cache/labctl/testbed.
	Cache string
	// Log receives progress lines.
	Log func(format string, args ...any)
}

// Bed is a set of node containers on a private network, reachable over
// SSH from the host with a key the bed generated.
type Bed struct {
	Docker  *Docker
	Image   string
	Network string
	Subnet  netip.Prefix
	// KeyFile is the private key that logs in as root, SudoUser and
	// PasswordUser on every node.
	KeyFile string
	Signer  ssh.Signer

	opts  Options
	dir   string
	ca    *ca
	mu    sync.Mutex // guards nodes: VMs start in parallel
	nodes map[string]*Node

	proxy    *pullProxy // the own dockerd's HTTP(S)_PROXY
	bridgeGW string     // the own dockerd's default bridge address
	regMu    sync.Mutex
	registry *Registry // started by the first real-images PrepareK3d
}

// Node is one node container.
type Node struct {
	Name string
	IP   string
	// HostKey is the node's own ed25519 host key, generated at first boot.
	HostKey ssh.PublicKey
}

// CacheDir is where the bed keeps what survives between runs.
func CacheDir() string {
	if d := os.Getenv("LABCTL_TESTBED_CACHE"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "labctl", "testbed")
}

// New starts (or finds) Docker, builds or reuses the node image, removes
// leftovers of an earlier run of the same name and creates the network.
func New(ctx context.Context, o Options) (*Bed, error) {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if o.Cache == "" {
		o.Cache = CacheDir()
	}
	subnet, err := netip.ParsePrefix(o.Subnet)
	if err != nil {
		return nil, fmt.Errorf("bed subnet: %w", err)
	}
	if err := os.MkdirAll(o.Cache, 0o755); err != nil {
		return nil, err
	}
	b := &Bed{Network: o.Name, Subnet: subnet, opts: o, nodes: map[string]*Node{}}
	// The CA and the pull proxy come first: a dockerd of the bed's own
	// trusts the CA (SSL_CERT_FILE) and pulls through the proxy.
	if b.ca, err = cachedCA(o.Cache); err != nil {
		return nil, err
	}
	if b.proxy, err = startPullProxy(); err != nil {
		return nil, err
	}
	fail := func(err error) (*Bed, error) { b.Close(); return nil, err }
	b.bridgeGW = "172.29.0.1"
	d, err := StartDocker(ctx, DockerOptions{Cache: o.Cache, BridgeIP: b.bridgeGW + "/24", AddressPool: "172.29.128.0/17", Proxy: b.proxy.URL(), CAFile: caFile(o.Cache), Log: o.Log})
	if err != nil {
		return fail(err)
	}
	b.Docker = d
	if !d.Own {
		b.proxy.close()
		b.proxy = nil
	}
	if b.Image, err = NodeImage(ctx, d, o.Cache, o.Log); err != nil {
		return fail(err)
	}
	b.removeLeftovers(ctx)
	gw := subnet.Addr().Next()
	if _, err := d.Output(ctx, "network", "create", "--label", Label+"="+o.Name,
		"--subnet", subnet.String(), "--gateway", gw.String(), o.Name); err != nil {
		return fail(err)
	}
	if b.dir, err = os.MkdirTemp("", o.Name+"-"); err != nil {
		return fail(err)
	}
	if err := b.makeKey(); err != nil {
		return fail(err)
	}
	return b, nil
}

func (b *Bed) removeLeftovers(ctx context.Context) {
	ids, _ := b.Docker.Output(ctx, "ps", "-aq", "--filter", "label="+Label+"="+b.opts.Name)
	if ids != "" {
		_, _ = b.Docker.Output(ctx, append([]string{"rm", "-f", "-v"}, strings.Fields(ids)...)...)
	}
	_, _ = b.Docker.Output(ctx, "network", "rm", b.opts.Name)
}

func (b *Bed) makeKey() error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "labctl test bed")
	if err != nil {
		return err
	}
	b.KeyFile = filepath.Join(b.dir, "id_ed25519")
	if err := os.WriteFile(b.KeyFile, pem.EncodeToMemory(blk), 0o600); err != nil {
		return err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return err
	}
	if err := os.WriteFile(b.KeyFile+".pub", ssh.MarshalAuthorizedKey(sshPub), 0o644); err != nil {
		return err
	}
	b.Signer, err = ssh.NewSignerFromKey(priv)
	return err
}

// StartNode runs a node container with a static IP on the bed's network,
// waits for systemd and sshd, installs the bed's key for root, SudoUser
// and PasswordUser, and reads the node's host key.
func (b *Bed) StartNode(ctx context.Context, name, ip string) (*Node, error) {
	pub, err := os.ReadFile(b.KeyFile + ".pub")
	if err != nil {
		return nil, err
	}
	return b.startNode(ctx, name, ip, string(pub), authorizeScript("root", SudoUser, PasswordUser))
}

// authorizeScript installs /tmp/key (the bed's public key) as the
// authorized keys of users, then removes it.
func authorizeScript(users ...string) string {
	return fmt.Sprintf(`set -e
for u in %s; do
  h=$(getent passwd "$u" | cut -d: -f6)
  install -d -m 700 -o "$u" -g "$u" "$h/.ssh"
  install -m 600 -o "$u" -g "$u" /dev/stdin "$h/.ssh/authorized_keys" < /tmp/key
done
rm /tmp/key`, strings.Join(users, " "))
}

// StartCloudInitNode starts a node as a cloud-init VM boots: user is
// created if missing, with sudo without a password (cloud-init's default
// user), and gets keys as its only authorized keys; root gets none.
func (b *Bed) StartCloudInitNode(ctx context.Context, name, ip, user string, keys []string) (*Node, error) {
	install := fmt.Sprintf(`set -e
id -u %[1]q >/dev/null 2>&1 || useradd -m -s /bin/bash %[1]q
echo %[1]q' ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud-init-users
chmod 0440 /etc/sudoers.d/90-cloud-init-users
h=$(getent passwd %[1]q | cut -d: -f6)
install -d -m 700 -o %[1]q -g %[1]q "$h/.ssh"
install -m 600 -o %[1]q -g %[1]q /tmp/key "$h/.ssh/authorized_keys"
rm -f /tmp/key /root/.ssh/authorized_keys`, user)
	return b.startNode(ctx, name, ip, strings.Join(keys, "\n")+"\n", install)
}

// EtcdDisk is where every node has a filesystem of its own (a tmpfs
// standing in for an SSD) for spec.k3s.etcdMount.
const EtcdDisk = "/mnt/etcd-disk"

// startNode runs the container, waits for systemd, writes keys to /tmp/key
// and runs install, then reads the host key and waits for sshd.
func (b *Bed) startNode(ctx context.Context, name, ip, keys, install string) (*Node, error) {
	return b.startNodeFrom(ctx, b.Image, name, ip, keys, install)
}

// startNodeFrom is startNode from image, with extra docker run arguments.
func (b *Bed) startNodeFrom(ctx context.Context, image, name, ip, keys, install string, extra ...string) (*Node, error) {
	addr, err := netip.ParseAddr(ip)
	if err != nil || !b.Subnet.Contains(addr) {
		return nil, fmt.Errorf("node %s: address %q is not in the bed subnet %s", name, ip, b.Subnet)
	}
	mirror, err := b.mirror(ctx)
	if err != nil {
		return nil, err
	}
	cname := b.opts.Name + "-" + name
	if _, err := b.Docker.Output(ctx, append(append([]string{"run", "-d", "--privileged",
		"--name", cname, "--hostname", name,
		"--label", Label + "=" + b.opts.Name,
		"--network", b.Network, "--ip", ip,
		"--add-host", "deb.debian.org:" + mirror,
		"--tmpfs", "/run", "--tmpfs", "/run/lock",
		// A disk of its own for etcd, as a node's SSD beside the SD
		// card it boots from (spec.k3s.etcdMount).
		"--tmpfs", EtcdDisk + ":size=1g,mode=0755",
		"--stop-signal", "SIGRTMIN+3", // systemd's clean shutdown
	}, extra...), image)...); err != nil {
		return nil, err
	}
	n := &Node{Name: name, IP: ip}
	b.mu.Lock()
	b.nodes[name] = n
	b.mu.Unlock()
	if err := b.waitSystemd(ctx, n); err != nil {
		return nil, err
	}
	if _, err := b.Docker.Input(ctx, strings.NewReader(keys), "exec", "-i", cname, "sh", "-c", "cat > /tmp/key"); err != nil {
		return nil, err
	}
	if _, err := b.Exec(ctx, name, "sh", "-c", install); err != nil {
		return nil, err
	}
	// The bed's CA is one the node trusts, as a real machine trusts the
	// public CAs of get.k3s.io and GitHub.
	if _, err := b.Docker.Input(ctx, strings.NewReader(string(b.ca.pem)), "exec", "-i", cname, "sh", "-c", "cat >> /etc/ssl/certs/ca-certificates.crt"); err != nil {
		return nil, err
	}
	hk, err := b.Exec(ctx, name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub")
	if err != nil {
		return nil, err
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hk))
	if err != nil {
		return nil, fmt.Errorf("node %s host key: %w", name, err)
	}
	// Under the lock: KnownHosts reads it while other nodes boot (the
	// production scenario and TestGivenHosts run in parallel).
	b.mu.Lock()
	n.HostKey = key
	b.mu.Unlock()
	return n, waitTCP(ctx, net.JoinHostPort(ip, "22"), 30*time.Second)
}

func (b *Bed) waitSystemd(ctx context.Context, n *Node) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		state, _ := b.Exec(ctx, n.Name, "systemctl", "is-system-running")
		switch state {
		case "running":
			return nil
		case "degraded":
			failed, _ := b.Exec(ctx, n.Name, "systemctl", "--failed", "--no-legend", "--plain")
			return fmt.Errorf("node %s: systemd degraded: %s", n.Name, failed)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: systemd is %q after 60s", n.Name, state)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func waitTCP(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not reachable after %s: %w", addr, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Exec runs a command in a node as root (bypassing SSH: for set-up and
// assertions, never for what labctl itself must do).
func (b *Bed) Exec(ctx context.Context, node string, args ...string) (string, error) {
	return b.Docker.Output(ctx, append([]string{"exec", b.opts.Name + "-" + node}, args...)...)
}

// Kill stops a node container hard, like pulling a VM's power.
func (b *Bed) Kill(ctx context.Context, node string) error {
	_, err := b.Docker.Output(ctx, "kill", b.opts.Name+"-"+node)
	return err
}

// RemoveNode deletes a node container.
func (b *Bed) RemoveNode(ctx context.Context, node string) error {
	b.mu.Lock()
	delete(b.nodes, node)
	b.mu.Unlock()
	_, err := b.Docker.Output(ctx, "rm", "-f", "-v", b.opts.Name+"-"+node)
	return err
}

// KnownHosts renders a known_hosts file for the nodes that have booted.
func (b *Bed) KnownHosts() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []byte
	for _, n := range b.nodes {
		if n.HostKey == nil { // still booting
			continue
		}
		line := n.IP + " " + string(ssh.MarshalAuthorizedKey(n.HostKey))
		out = append(out, line...)
	}
	return out
}

// Close removes the nodes and the network and stops a daemon the bed
// started. The cache stays.
func (b *Bed) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if b.opts.Name != "" && b.Docker != nil {
		b.removeLeftovers(ctx)
	}
	b.registry.stop()
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
	if b.Docker != nil {
		b.Docker.Stop()
	}
	if b.proxy != nil {
		b.proxy.close()
	}
}
