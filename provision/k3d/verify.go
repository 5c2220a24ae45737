package k3d

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/docker/go-connections/nat"
	k3dclient "github.com/k3d-io/k3d/v5/pkg/client"
	"github.com/k3d-io/k3d/v5/pkg/runtimes"
	"github.com/k3d-io/k3d/v5/pkg/runtimes/docker"
	k3dtypes "github.com/k3d-io/k3d/v5/pkg/types"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/provision/kube"
)

// API is the cluster's API through the profile's address (verify).
func (b *Backend) API(ctx context.Context) (*kube.Client, error) { return b.api(ctx) }

// DockerHost reads the cluster's Docker host: the ports its load
// balancer publishes and, when that Docker is this machine's (a local
// socket) or reached over SSH, the data root's free space and the
// kernel's inotify limits, which k3d's node containers share.
func (b *Backend) DockerHost(ctx context.Context) (*facts.DockerHost, error) {
	d := &facts.DockerHost{}
	var local bool
	err := b.withDocker(func() error {
		cli, err := docker.GetDockerClient()
		if err != nil {
			return err
		}
		defer func() { _ = cli.Close() }()
		info, err := cli.Info(ctx)
		if err != nil {
			return err
		}
		d.DataRoot = info.DockerRootDir
		local = strings.HasPrefix(cli.DaemonHost(), "unix://")
		c, err := k3dclient.ClusterGet(ctx, runtimes.Docker, &k3dtypes.Cluster{Name: b.Spec.K3d.ClusterName})
		if err != nil {
			return err
		}
		for _, n := range c.Nodes {
			if n.Role == k3dtypes.LoadBalancerRole {
				d.Ports = append(d.Ports, ports(n.Ports)...)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("k3d cluster %s: Docker host: %w", b.Spec.K3d.ClusterName, err)
	}
	if strings.HasPrefix(b.Spec.K3d.DockerHost, "ssh://") {
		if err := remoteHostFacts(ctx, b.Spec, d.DataRoot, d); err != nil {
			return nil, fmt.Errorf("k3d cluster %s: Docker host: %w", b.Spec.K3d.ClusterName, err)
		}
		return d, nil
	}
	if !local {
		return d, nil
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.DataRoot, &st); err == nil {
		d.SizeKB = int64(st.Blocks) * st.Bsize / 1024
		d.FreeKB = int64(st.Bavail) * st.Bsize / 1024
	}
	d.InotifyWatches = readInt("/proc/sys/fs/inotify/max_user_watches")
	d.InotifyInstances = readInt("/proc/sys/fs/inotify/max_user_instances")
	return d, nil
}

func ports(pm nat.PortMap) []string {
	var out []string
	for port, bindings := range pm {
		for _, b := range bindings {
			out = append(out, fmt.Sprintf("%s:%s->%s", b.HostIP, b.HostPort, port.Port()))
		}
	}
	slices.Sort(out)
	return out
}

func readInt(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}
