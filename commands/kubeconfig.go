package commands

import (
	"context"
	"fmt"

	"github.com/labctl/labctl/provision/k3s"
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
	w, err := e.backends(l, wiring{AcceptNewHostKeys: o.AcceptNewHostKeys, Kubeconfig: o.Path, HostsOnly: true})
	if err != nil {
		return err
	}
	defer w.Close()
	n, changed, err := w.k3s.MergeKubeconfig(ctx, o.SwitchContext)
	if err != nil {
		return err
	}
	verb := "merged"
	if !changed {
		verb = "already up to date:"
	}
	fmt.Fprintf(e.Stdout, "%s context %q (server %s, from %s) in %s\n", verb, l.Metadata.Name, k3s.ServerURL(n), n.Name, w.Kubeconfig)
	return nil
}
