package commands

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

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
}

// ErrNotConfirmed is returned when destroy was not confirmed.
var ErrNotConfirmed = errors.New("not confirmed")

// Destroy deletes a profile's k3d cluster (containers, network, volumes)
// and removes its context from the kubeconfig. Proxmox VMs are the
// Proxmox provider's (not in this build); labctl does not uninstall K3s
// from hosts it was given.
func Destroy(ctx context.Context, e Env, a ProfileArg, o DestroyOptions) error {
	l, err := e.Load(a)
	if err != nil {
		return err
	}
	s := &l.Spec
	switch {
	case s.Proxmox != nil:
		return fmt.Errorf("profile %s: destroying Proxmox VMs is not in this build", l.Metadata.Name)
	case s.K3d == nil:
		return fmt.Errorf("profile %s: its hosts were given, not created by labctl: nothing to destroy", l.Metadata.Name)
	}
	if o.Kubeconfig == "" {
		o.Kubeconfig = kubeconfig.DefaultPath()
	}
	name := s.K3d.ClusterName
	where := "the local Docker"
	if s.K3d.DockerHost != "" {
		where = s.K3d.DockerHost
	}
	if !o.Yes {
		fmt.Fprintf(e.Stderr, "This deletes k3d cluster %q on %s with its volumes, and context %q from %s.\nType the cluster name to confirm: ", name, where, l.Metadata.Name, o.Kubeconfig)
		line := ""
		if o.Confirm != nil {
			line, _ = bufio.NewReader(o.Confirm).ReadString('\n')
		}
		if strings.TrimSpace(line) != name {
			return fmt.Errorf("destroy %s: %w (type %q, or pass --yes)", l.Metadata.Name, ErrNotConfirmed, name)
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
	removed, err := kubeconfig.Remove(o.Kubeconfig, l.Metadata.Name)
	if err != nil {
		return err
	}
	if removed {
		fmt.Fprintf(e.Stdout, "removed context %q from %s\n", l.Metadata.Name, o.Kubeconfig)
	}
	return nil
}
