// Command k3s is the test bed's stand-in for the K3s binary, for machines
// where K3s cannot be downloaded. It keeps K3s's command line, config file,
// token format, paths and ports, and runs a real control plane: an
// embedded etcd (go.etcd.io/etcd/server/v3, real Raft), and upstream
// kube-apiserver, kube-controller-manager and kube-scheduler v1.34 as child
// processes.
//
// Modelled: `server` with --cluster-init (new cluster, etcd member 1),
// `server --server https://X:6443` (fetches the CA through the supervisor
// with the token, adds itself as an etcd learner and is promoted: a real
// member, quorum 2 of 3 with three servers), a server with neither (a
// separate cluster: the first-server trap); tokens K10<ca-hash>::server:
// <secret> or the bare secret, a CA-hash or secret mismatch refused; the
// critical settings (cluster/service CIDR, disabled components) compared
// on join and a mismatch refused; /etc/rancher/k3s/config.yaml and
// token-file honoured (with disable-helm-controller, a critical setting, and
// kubelet-arg, node-label and node-taint passed to the kubelet), other
// keys refused; /etc/rancher/k3s/k3s.yaml
// written 0600 with server https://127.0.0.1:6443; server/token and
// server/node-token; "k3s is up and running" logged when the API answers.
// Joining from an address that is still an etcd member fails with etcd's
// own error until the member is removed.
//
// Each server is also a node, as in K3s: containerd (Debian's, started
// by the stand-in with K3s's socket /run/k3s/containerd/containerd.sock
// and config under agent/etc; K3s's CONTAINERD_-prefixed variables
// given to it without the prefix, e.g. CONTAINERD_HTTPS_PROXY for pulls;
// registries.yaml is not read), the air-gap images in agent/images/*.tar
// imported into the k8s.io namespace, upstream kubelet and kube-proxy
// (iptables mode), a bridge + host-local CNI config for the node's pod
// CIDR and routes to the other nodes' pod CIDRs (what flannel's host-gw
// would do). Nodes get K3s's role labels (control-plane, etcd, master)
// and etcd annotations (etcd.k3s.cattle.io/node-name, node-address). The
// node password (/etc/rancher/node/password, its hash in the Secret
// kube-system/<node>.node-password.k3s) is checked: a host re-registering
// a name with another password is refused, logged and retried, until the
// old Node is deleted. Deleting a Node removes its etcd member and its
// password Secret. In place of CoreDNS each node answers cluster DNS
// itself (Service A records; other names forwarded to the node's
// resolver) and its kubelet gives pods the node's IP as nameserver;
// server/manifests/coredns.yaml holds the coredns ConfigMap only (k3d
// rewrites its NodeHosts), and "Cluster dns configmap" is logged as K3s
// does. Without node-ip the node's first IPv4 address is used; with
// K3S_KUBECONFIG_OUTPUT (k3d) the kubeconfig is written there too.
//
// Day 2: `k3s --version` reports the release the install script put in
// place (INSTALL_K3S_VERSION, noted in /usr/local/lib/k3s-standin/version:
// one stand-in binary plays every release, no binary is swapped);
// `k3s etcd-snapshot save [--name N]` asks the running server's etcd for
// a snapshot and writes server/db/snapshots/<N>-<node>-<unix time>, `ls`
// lists that directory and `delete` removes files from it; `k3s server
// --cluster-reset [--cluster-reset-restore-path P]` on a stopped server
// restores P into a new data directory (the old one kept aside) or
// forces a new single-member cluster on the data in place, writes
// server/db/reset-flag and exits asking for a restart, which removes the
// flag; the etcd member name is kept in server/db/etcd/name, as K3s
// keeps it. The K3s binary's bundled binaries and images are unpacked at
// start from the test bed's bundle directory (a real binary carries
// them inside), so an uninstall followed by an install finds them again.
// Leaf certificates are valid for a year, as K3s's, or for the Go
// duration in /usr/local/lib/k3s-standin/leaf-validity (issued at each
// start: the bed's certificates about to expire); etcd serves its
// metrics on http://127.0.0.1:2381, as K3s's does.
//
// `k3s agent --server https://X:6443 --token T` fetches the CA (checked
// against the token's hash), then its kubelet and kube-proxy certificates
// from the server's supervisor, which checks the token and the node
// password first (a mismatch is logged and retried, as K3s does), and
// runs the same node half. It talks to the given server directly.
//
// Not modelled (yet or at all): the agent's client-side load balancer;
// agent tokens distinct from the server token; flannel's VXLAN; CoreDNS
// itself (see above); Traefik, ServiceLB, local-path, metrics-server,
// Longhorn; the deploy controller for server/manifests; sqlite/kine (a
// server without --cluster-init uses etcd too); the supervisor shares no
// port with the API: it listens on 9345 (as RKE2 does) rather than
// multiplexing 6443; several CAs (one CA signs everything); certificate
// rotation; etcd snapshot schedules, retention, compression, S3 and the
// ETCDSnapshotFile objects; bootstrap data (the CA, keys) kept in etcd and
// encrypted with the token: the stand-in keeps them in server/tls only,
// so a restore onto a new host without them is refused; secrets
// encryption; kubelet-arg and the other
// pass-through flags; the overlayfs snapshotter on a node whose disk is
// itself overlayfs (a container): there it uses "native".
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: k3s server|agent|--version [flags]")
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "--version", "-v", "version":
		fmt.Printf("k3s version %s (labctl test bed stand-in)\n", version())
		return
	case "etcd-snapshot":
		err = runSnapshot(ctx, os.Args[2:])
	case "server":
		var c *config
		if c, err = loadConfig(os.Args[2:]); err == nil {
			if err = unpackBundle(c.DataDir); err == nil {
				err = runServer(ctx, c)
			}
		}
	case "agent":
		var c *config
		if c, err = loadConfig(os.Args[2:]); err == nil {
			if err = unpackBundle(c.DataDir); err == nil {
				err = runAgent(ctx, c)
			}
		}
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil && ctx.Err() == nil {
		logf("level=fatal msg=%q", err.Error())
		os.Exit(1)
	}
}

// version is K3s's version string; set with -ldflags -X main.k3sVersion.
var k3sVersion = "v1.34.4+k3s1"

// versionFile is where the stand-in's install script notes the release
// it installed (INSTALL_K3S_VERSION): the one binary stands in for every
// release, and reports the one installed, as an upgraded K3s would.
const versionFile = "/usr/local/lib/k3s-standin/version"

func version() string {
	if b, err := os.ReadFile(versionFile); err == nil {
		if v := strings.TrimSpace(string(b)); v != "" {
			return v
		}
	}
	return k3sVersion
}

// bundleDir holds what a real K3s binary carries inside itself (the
// stand-in is small): bin/ (containerd's runc wrapper, the Kubernetes
// binaries) and images/ (the sandbox image). The test bed puts it on a
// node beside the binary.
const bundleDir = "/opt/k3s-standin-bundle"

// unpackBundle does what K3s does at start with its embedded data: the
// binaries go to <data-dir>/data/current/bin (symlinked here), the images
// to agent/images; what is there already stays.
func unpackBundle(dataDir string) error {
	for _, d := range []struct{ from, to string }{
		{filepath.Join(bundleDir, "bin"), filepath.Join(dataDir, "data", "current", "bin")},
		{filepath.Join(bundleDir, "images"), filepath.Join(dataDir, "agent", "images")},
	} {
		entries, err := os.ReadDir(d.from)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := os.MkdirAll(d.to, 0o755); err != nil {
			return err
		}
		for _, e := range entries {
			dst := filepath.Join(d.to, e.Name())
			if _, err := os.Lstat(dst); err == nil {
				continue
			}
			if err := os.Symlink(filepath.Join(d.from, e.Name()), dst); err != nil {
				return err
			}
		}
	}
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "time=%q "+format+"\n", append([]any{nowString()}, args...)...)
}
