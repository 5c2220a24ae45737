package commands

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/remote"

	"github.com/labctl/labctl/provision/k3d"
	"github.com/labctl/labctl/provision/kubeconfig"
)

// DestroyOptions shape `labctl destroy`.
type DestroyOptions struct {
	// Yes skips the confirmation; without it the cluster's name must be
	// typed on Confirm.
	Yes     bool
	Confirm io.Reader
	// Kubeconfig is the file whose context is removed.
	Kubeconfig string
	// Proxmox shapes the VM provider of a profile with spec.proxmox.
	Proxmox ProxmoxOptions
}

// ErrNotConfirmed is returned when destroy was not confirmed.
var ErrNotConfirmed = errors.New("not confirmed")

// Destroy deletes a profile's k3d cluster (containers, network, volumes)
// or its Proxmox VMs (stopped and purged with their disks; only VMs that
// labctl created), and removes its context from the kubeconfig. labctl
// does not uninstall K3s from hosts it was given.
func Destroy(ctx context.Context, e Env, a ProfileArg, o DestroyOptions) error {
	l, err := e.Load(a)
	if err != nil {
		return err
	}
	s := &l.Spec
	if o.Kubeconfig == "" {
		o.Kubeconfig = kubeconfig.DefaultPath()
	}
	switch {
	case s.Proxmox != nil:
		return destroyProxmox(ctx, e, l, o)
	case s.K3d == nil:
		return fmt.Errorf("profile %s: its hosts were given, not created by labctl: nothing to destroy", l.Metadata.Name)
	}
	name := s.K3d.ClusterName
	where := "the local Docker"
	switch {
	case s.K3d.DockerHost != "":
		where = s.K3d.DockerHost
	case s.K3d.DockerContext != "":
		where = "Docker context " + s.K3d.DockerContext
	}
	if !o.Yes {
		if err := confirm(e, o, name, fmt.Sprintf("This deletes k3d cluster %q on %s with its volumes, and context %q from %s.", name, where, l.Metadata.Name, o.Kubeconfig)); err != nil {
			return fmt.Errorf("destroy %s: %w", l.Metadata.Name, err)
		}
	}
	b := &k3d.Backend{Spec: s, Profile: l.Metadata.Name, Kubeconfig: o.Kubeconfig}
	exists, err := b.Observe(ctx)
	if err != nil && !errors.Is(err, k3d.ErrShape) {
		return err
	}
	if exists {
		if err := b.Delete(ctx); err != nil {
			return fmt.Errorf("delete k3d cluster %s: %w", name, err)
		}
		fmt.Fprintf(e.Stdout, "deleted k3d cluster %q on %s\n", name, where)
	} else {
		fmt.Fprintf(e.Stdout, "k3d cluster %q does not exist on %s\n", name, where)
	}
	return removeContext(e, l.Metadata.Name, o.Kubeconfig)
}

func removeContext(e Env, name, file string) error {
	removed, err := kubeconfig.Remove(file, name)
	if err != nil {
		return err
	}
	if removed {
		fmt.Fprintf(e.Stdout, "removed context %q from %s\n", name, file)
	}
	return nil
}

// confirm asks for word to be typed on o.Confirm.
func confirm(e Env, o DestroyOptions, word, what string) error {
	fmt.Fprintf(e.Stderr, "%s\nType %q to confirm: ", what, word)
	line := ""
	if o.Confirm != nil {
		line, _ = bufio.NewReader(o.Confirm).ReadString('\n')
	}
	if strings.TrimSpace(line) != word {
		return fmt.Errorf("%w (type %q, or pass --yes)", ErrNotConfirmed, word)
	}
	return nil
}

// destroyProxmox stops and purges the profile's VMs (only those labctl
// created), forgets their host keys, and removes the kubeconfig context.
func destroyProxmox(ctx context.Context, e Env, l *profiles.Loaded, o DestroyOptions) error {
	s := &l.Spec
	var names []string
	for _, n := range s.Nodes {
		names = append(names, fmt.Sprintf("%s (%s)", n.Name, n.Address))
	}
	if !o.Yes {
		what := fmt.Sprintf("This stops and purges, with their disks, the VMs %s on Proxmox node %s, forgets their host keys and removes context %q from %s.",
			strings.Join(names, ", "), s.Proxmox.Node, l.Metadata.Name, o.Kubeconfig)
		if err := confirm(e, o, l.Metadata.Name, what); err != nil {
			return fmt.Errorf("destroy %s: %w", l.Metadata.Name, err)
		}
	}
	b, err := proxmoxBackend(l, o.Proxmox, e.Stderr)
	if err != nil {
		return err
	}
	if err := destroyVMs(ctx, e, l, b); err != nil {
		return err
	}
	if s.SSH != nil && s.SSH.KnownHostsFile != "" {
		var hosts []string
		for _, n := range s.Nodes {
			hosts = append(hosts, knownhosts.Normalize(net.JoinHostPort(n.Address, strconv.Itoa(max(s.SSH.Port, 22)))))
		}
		removed, err := remote.ForgetHostKeys(s.SSH.KnownHostsFile, hosts)
		if err != nil {
			return fmt.Errorf("forget the VMs' host keys: %w", err)
		}
		if removed > 0 {
			fmt.Fprintf(e.Stdout, "forgot %d host key line(s) of the VMs in %s\n", removed, s.SSH.KnownHostsFile)
		}
	}
	return removeContext(e, l.Metadata.Name, o.Kubeconfig)
}
