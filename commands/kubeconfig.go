package commands

import (
	"context"
	"fmt"

	"github.com/labctl/labctl/provision/k3s"
	"github.com/labctl/labctl/provision/kubeconfig"
	"github.com/labctl/labctl/provision/nodes"
	"github.com/labctl/labctl/provision/remote"
)

// KubeconfigOptions shape `labctl kubeconfig`.
type KubeconfigOptions struct {
	// Path is the kubeconfig to merge into; default $KUBECONFIG or ~/.kube/config.
	Path string
	// SwitchContext makes the profile's context the current one.
	SwitchContext     bool
	AcceptNewHostKeys bool
}

// Kubeconfig fetches the cluster's kubeconfig from the first server that
// answers over SSH and merges it as context <profile>, with that
// server's address, leaving every other context alone.
func Kubeconfig(ctx context.Context, e Env, a ProfileArg, o KubeconfigOptions) error {
	l, err := e.loadNodes(a, "kubeconfig")
	if err != nil {
		return err
	}
	s := &l.Spec
	if o.Path == "" {
		o.Path = kubeconfig.DefaultPath()
	}
	pool := remote.NewPool(nil)
	defer pool.Close()
	b := &k3s.Backend{
		Hosts: &nodes.Backend{Pool: pool, SSH: s.SSH, AcceptNewHostKeys: o.AcceptNewHostKeys},
		Spec:  s, Profile: l.Metadata.Name, Kubeconfig: o.Path,
	}
	n, changed, err := b.MergeKubeconfig(ctx, o.SwitchContext)
	if err != nil {
		return err
	}
	verb := "merged"
	if !changed {
		verb = "already up to date:"
	}
	fmt.Fprintf(e.Stdout, "%s context %q (server %s, from %s) in %s\n", verb, l.Metadata.Name, k3s.ServerURL(n), n.Name, o.Path)
	return nil
}
