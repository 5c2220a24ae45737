package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// The node half of K3s: its embedded containerd, the kubelet and
// kube-proxy, the CNI configuration for the node's pod CIDR, and the
// node password. Paths are K3s's.
const (
	containerdSock = "/run/k3s/containerd/containerd.sock"
	// PauseImage is the sandbox image; the bed imports a locally built one
	// from the air-gap images directory, as K3s imports its own.
	pauseImage    = "docker.io/rancher/mirrored-pause:3.6"
	nodePassword  = "/etc/rancher/node/password"
	cniBinDir     = "/usr/lib/cni"
	passwordError = "Node password rejected, duplicate hostname or contents of '/etc/rancher/node/password' may not match server node-passwd entry, try enabling a unique node name with the --with-node-id flag"
)

// nodeAgent runs one node's container runtime, kubelet and kube-proxy.
type nodeAgent struct {
	c        *config
	dir      string // <data-dir>/agent
	server   bool
	kubelet  string // kubeconfig of the kubelet (system:node:<name>)
	proxy    string // kubeconfig of kube-proxy
	caFile   string
	snap     string // containerd snapshotter
	servCert string // kubelet serving certificate and key
	servKey  string
}

func (a *nodeAgent) logs() string { return filepath.Join(a.dir, "logs") }

// spawn starts a child whose output goes to <dir>/logs/<name>.log; its exit
// is sent on exits.
func spawn(ctx context.Context, logDir, name, bin string, args, env []string, exits chan<- error) error {
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	lf, err := os.OpenFile(filepath.Join(logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		_ = lf.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		err := cmd.Wait()
		_ = lf.Close()
		exits <- fmt.Errorf("%s exited: %v (log: %s)", name, err, filepath.Join(logDir, name+".log"))
	}()
	return nil
}

// binPath is PATH with K3s's bundled-binaries directory first: containerd
// finds runc there (the bed puts its runtime wrapper there when needed).
func (a *nodeAgent) binPath() string {
	return "PATH=" + filepath.Join(a.c.DataDir, "data", "current", "bin") + ":" + os.Getenv("PATH")
}

// containerdEnv is what K3s adds to containerd's environment: each
// CONTAINERD_-prefixed variable without its prefix (CONTAINERD_HTTPS_PROXY
// becomes containerd's HTTPS_PROXY, so pulls go through a proxy while
// K3s and the kubelet do not).
func containerdEnv(environ []string) []string {
	var out []string
	for _, e := range environ {
		if rest, ok := strings.CutPrefix(e, "CONTAINERD_"); ok && strings.Contains(rest, "=") && !strings.HasPrefix(rest, "=") {
			out = append(out, rest)
		}
	}
	return out
}

// startContainerd writes K3s's containerd config and starts containerd.
func (a *nodeAgent) startContainerd(ctx context.Context, exits chan<- error) error {
	root := filepath.Join(a.dir, "containerd")
	if err := os.MkdirAll(root, 0o711); err != nil {
		return err
	}
	// Overlay upper directories cannot live on overlayfs: on a node whose
	// disk is a container's overlay root, use the native snapshotter.
	snap := "overlayfs"
	var st syscall.Statfs_t
	if err := syscall.Statfs(root, &st); err == nil && st.Type == 0x794c7630 {
		snap = "native"
	}
	a.snap = snap
	cfg := fmt.Sprintf(`version = 2
root = %q
state = "/run/k3s/containerd"
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = %q
    default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
`, root, containerdSock, pauseImage, snap, cniBinDir, a.cniConfDir())
	etc := filepath.Join(a.dir, "etc", "containerd")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(etc, "config.toml"), []byte(cfg), 0o644); err != nil {
		return err
	}
	bin, err := findBinary(a.c.DataDir, "containerd")
	if err != nil {
		return err
	}
	if err := spawn(ctx, a.logs(), "containerd", bin, []string{"--config", filepath.Join(etc, "config.toml")}, append([]string{a.binPath()}, containerdEnv(os.Environ())...), exits); err != nil {
		return err
	}
	for i := 0; ; i++ {
		if _, err := os.Stat(containerdSock); err == nil {
			break
		}
		if i > 120 {
			return fmt.Errorf("containerd socket %s did not appear (log: %s)", containerdSock, filepath.Join(a.logs(), "containerd.log"))
		}
		time.Sleep(250 * time.Millisecond)
	}
	logf("level=info msg=%q", "Containerd is now running")
	return a.importImages(ctx)
}

// importImages imports <data-dir>/agent/images/*.tar into the CRI
// namespace, as K3s does with its air-gap images.
func (a *nodeAgent) importImages(ctx context.Context) error {
	files, _ := filepath.Glob(filepath.Join(a.dir, "images", "*.tar"))
	ctr, err := findBinary(a.c.DataDir, "ctr")
	if err != nil && len(files) > 0 {
		return err
	}
	for _, f := range files {
		start := time.Now()
		var out []byte
		for i := 0; i < 20; i++ {
			out, err = exec.CommandContext(ctx, ctr, "--address", containerdSock, "--namespace", "k8s.io", "images", "import", "--snapshotter", a.snap, f).CombinedOutput()
			if err == nil {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("import images from %s: %v: %s", f, err, out)
		}
		logf("level=info msg=%q", fmt.Sprintf("Imported images from %s in %s", f, time.Since(start).Round(time.Millisecond)))
	}
	return nil
}

func (a *nodeAgent) cniConfDir() string { return filepath.Join(a.dir, "etc", "cni", "net.d") }

// cgroupRoot is where the kubelet puts kubepods: the root of the
// machine's own cgroup tree. On a VM that is "/"; in a node container
// that sees the host's whole hierarchy (cgroup v1, host cgroup
// namespace), it is the container's cgroup, so that nodes sharing a
// kernel do not share kubepods.
func cgroupRoot() string {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "/"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 || (parts[1] != "memory" && parts[1] != "") {
			continue
		}
		p := parts[2]
		if i := strings.Index(p, "/system.slice"); i >= 0 {
			p = p[:i]
		}
		if p == "" {
			p = "/"
		}
		if parts[1] == "memory" {
			// Docker mounts a container's own cgroup as the hierarchy's
			// root even when /proc shows the host's path: then the
			// container's root is "/".
			if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", p)); err != nil {
				return "/"
			}
			return p
		}
	}
	return "/"
}

// startKubelet writes the kubelet's configuration and starts it.
func (a *nodeAgent) startKubelet(ctx context.Context, exits chan<- error) error {
	// Pods ask the node's own cluster DNS (see clusterDNS).
	dns := a.c.NodeIP
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupRoot: %q
containerRuntimeEndpoint: unix://%s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %q}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [%q]
tlsCertFile: %q
tlsPrivateKeyFile: %q
failSwapOn: false
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
serializeImagePulls: false
staticPodPath: %q
evictionHard: {"imagefs.available": "1%%", "nodefs.available": "1%%", "memory.available": "50Mi"}
`, cgroupRoot(), containerdSock, a.caFile, dns, a.servCert, a.servKey, filepath.Join(a.dir, "pod-manifests"))
	etc := filepath.Join(a.dir, "etc")
	if err := os.MkdirAll(filepath.Join(a.dir, "pod-manifests"), 0o755); err != nil {
		return err
	}
	path := filepath.Join(etc, "kubelet.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	labels := append([]string{"node.kubernetes.io/instance-type=k3s"}, a.c.NodeLabels...)
	bin, err := findBinary(a.c.DataDir, "kubelet")
	if err != nil {
		return err
	}
	args := []string{"--config=" + path, "--kubeconfig=" + a.kubelet, "--hostname-override=" + a.c.NodeName,
		"--node-ip=" + a.c.NodeIP, "--node-labels=" + strings.Join(labels, ",")}
	if len(a.c.NodeTaints) > 0 {
		args = append(args, "--register-with-taints="+strings.Join(a.c.NodeTaints, ","))
	}
	// K3s passes each kubelet-arg as --name=value, after its own flags.
	for _, ka := range a.c.KubeletArgs {
		args = append(args, "--"+ka)
	}
	logf("level=info msg=%q", "Running kubelet "+strings.Join(args, " "))
	return spawn(ctx, a.logs(), "kubelet", bin, args, []string{a.binPath()}, exits)
}

// startKubeProxy runs kube-proxy in iptables mode, sysctls left alone.
func (a *nodeAgent) startKubeProxy(ctx context.Context, exits chan<- error) error {
	cfg := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %q}
clusterCIDR: %q
hostnameOverride: %q
mode: iptables
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
`, a.proxy, a.c.ClusterCIDR, a.c.NodeName)
	path := filepath.Join(a.dir, "etc", "kube-proxy.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	bin, err := findBinary(a.c.DataDir, "kube-proxy")
	if err != nil {
		return err
	}
	logf("level=info msg=%q", "Running kube-proxy --config="+path)
	return spawn(ctx, a.logs(), "kube-proxy", bin, []string{"--config=" + path}, []string{a.binPath()}, exits)
}

// network writes the CNI configuration once the Node has its pod CIDR and
// keeps routes to the other nodes' pod CIDRs (flannel's host-gw, in
// effect), until ctx ends.
func (a *nodeAgent) network(ctx context.Context, cs kubernetes.Interface) {
	_ = os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	_ = os.WriteFile("/proc/sys/net/bridge/bridge-nf-call-iptables", []byte("1"), 0o644)
	written := ""
	routes := map[string]string{}
	for {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, n := range nodes.Items {
				ip := internalIP(&n)
				if n.Spec.PodCIDR == "" || ip == "" {
					continue
				}
				if n.Name == a.c.NodeName {
					if written == "" {
						logf("level=info msg=%q", "Successfully registered node "+n.Name)
					}
					if written != n.Spec.PodCIDR {
						if err := a.writeCNI(n.Spec.PodCIDR); err != nil {
							logf("level=error msg=%q", "CNI config: "+err.Error())
						} else {
							written = n.Spec.PodCIDR
							logf("level=info msg=%q", "Wrote CNI config for pod CIDR "+written)
						}
					}
					continue
				}
				if routes[n.Spec.PodCIDR] == ip {
					continue
				}
				if out, err := exec.CommandContext(ctx, "ip", "route", "replace", n.Spec.PodCIDR, "via", ip).CombinedOutput(); err != nil {
					logf("level=error msg=%q", fmt.Sprintf("route to %s via %s: %v: %s", n.Spec.PodCIDR, ip, err, out))
					continue
				}
				routes[n.Spec.PodCIDR] = ip
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

func (a *nodeAgent) writeCNI(podCIDR string) error {
	conf := fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "cbr0",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, podCIDR)
	if err := os.MkdirAll(a.cniConfDir(), 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(a.cniConfDir(), ".10-bridge.conflist")
	if err := os.WriteFile(tmp, []byte(conf), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(a.cniConfDir(), "10-bridge.conflist"))
}

func internalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// localPassword is the node's password, created on first use.
func localPassword() (string, error) {
	if b, err := os.ReadFile(nodePassword); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	raw := make([]byte, 16)
	_, _ = rand.Read(raw)
	pw := hex.EncodeToString(raw)
	if err := os.MkdirAll(filepath.Dir(nodePassword), 0o700); err != nil {
		return "", err
	}
	return pw, os.WriteFile(nodePassword, []byte(pw+"\n"), 0o600)
}

func passwordSecret(node string) string { return node + ".node-password.k3s" }

// verifyNodePassword is K3s's node-password check: the first node to
// register a name stores its password's hash in kube-system; a node of
// the same name with another password is refused until that Secret is
// gone (K3s deletes it with the Node).
func verifyNodePassword(ctx context.Context, cs kubernetes.Interface, node, password string) error {
	sum := sha256.Sum256([]byte(password))
	hash := hex.EncodeToString(sum[:])
	sec, err := cs.CoreV1().Secrets("kube-system").Get(ctx, passwordSecret(node), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = cs.CoreV1().Secrets("kube-system").Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: passwordSecret(node), Namespace: "kube-system"},
			Immutable:  ptr(true),
			Type:       "k3s.cattle.io/node-password",
			Data:       map[string][]byte{"hash": []byte(hash)},
		}, metav1.CreateOptions{})
		return err
	case err != nil:
		return err
	case string(sec.Data["hash"]) != hash:
		return errors.New(passwordError)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// labelServer gives a server's Node K3s's role labels and etcd
// annotations once it has registered (the kubelet may not set
// node-role labels itself).
func labelServer(ctx context.Context, cs kubernetes.Interface, c *config, member string) {
	roles := map[string]string{
		"node-role.kubernetes.io/control-plane": "true",
		"node-role.kubernetes.io/master":        "true",
		"node-role.kubernetes.io/etcd":          "true",
	}
	ann := map[string]string{
		"etcd.k3s.cattle.io/node-name":    member,
		"etcd.k3s.cattle.io/node-address": c.NodeIP,
		"k3s.io/hostname":                 c.NodeName,
		"k3s.io/internal-ip":              c.NodeIP,
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":%s,"annotations":%s}}`, jsonMap(roles), jsonMap(ann))
	for {
		_, err := cs.CoreV1().Nodes().Patch(ctx, c.NodeName, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		if err == nil {
			logf("level=info msg=%q", "Labelled node "+c.NodeName+" as control-plane, etcd member "+member)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func jsonMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%q:%q", k, m[k]))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// watchNodeDeletions is K3s's cleanup when a Node is deleted: a server's
// etcd member (named by its etcd annotation) is removed from the cluster
// and the node's password Secret is deleted, so that a rebuilt host of the
// same name can join. Every server runs it; a second removal finds nothing
// to do.
func watchNodeDeletions(ctx context.Context, cs kubernetes.Interface, removeMember func(context.Context, string) error) {
	known := map[string]corev1.Node{}
	for {
		list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err == nil {
			seen := map[string]bool{}
			for _, n := range list.Items {
				seen[n.Name] = true
				known[n.Name] = n
			}
			for name, n := range known {
				if seen[name] {
					continue
				}
				delete(known, name)
				if member := n.Annotations["etcd.k3s.cattle.io/node-name"]; member != "" {
					if err := removeMember(ctx, member); err != nil {
						logf("level=error msg=%q", "remove etcd member "+member+" of deleted node "+name+": "+err.Error())
					} else {
						logf("level=info msg=%q", "Removed etcd member "+member+" of deleted node "+name)
					}
				}
				err := cs.CoreV1().Secrets("kube-system").Delete(ctx, passwordSecret(name), metav1.DeleteOptions{})
				if err != nil && !apierrors.IsNotFound(err) {
					logf("level=error msg=%q", "delete node password of "+name+": "+err.Error())
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// start brings the node up: the password check (retried while refused),
// containerd with the air-gap images, kubelet, kube-proxy and the network
// loop.
func (a *nodeAgent) start(ctx context.Context, cs kubernetes.Interface, exits chan<- error) error {
	pw, err := localPassword()
	if err != nil {
		return err
	}
	for a.server {
		err := verifyNodePassword(ctx, cs, a.c.NodeName, pw)
		if err == nil {
			break
		}
		logf("level=error msg=%q", "Waiting to retrieve agent configuration; server is not ready: "+err.Error())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
	if err := serveDNS(ctx, cs, a.c.NodeIP); err != nil {
		return err
	}
	if err := a.startContainerd(ctx, exits); err != nil {
		return err
	}
	if err := a.startKubelet(ctx, exits); err != nil {
		return err
	}
	if err := a.startKubeProxy(ctx, exits); err != nil {
		return err
	}
	go a.network(ctx, cs)
	return nil
}
