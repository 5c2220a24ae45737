package commands

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/labctl/labctl/profiles"
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
	hosts := &nodes.Backend{Pool: pool, SSH: s.SSH, AcceptNewHostKeys: o.AcceptNewHostKeys}
	var tried []string
	for _, n := range s.Servers() {
		raw, err := fetchKubeconfig(ctx, hosts, n)
		if err != nil {
			tried = append(tried, err.Error())
			continue
		}
		server := k3s.ServerURL(n)
		cfg, err := kubeconfig.Rename(raw, l.Metadata.Name, server)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", n.Name, k3s.KubeconfigPath, err)
		}
		changed, err := kubeconfig.Merge(o.Path, cfg, o.SwitchContext)
		if err != nil {
			return err
		}
		verb := "merged"
		if !changed {
			verb = "already up to date:"
		}
		fmt.Fprintf(e.Stdout, "%s context %q (server %s, from %s) in %s\n", verb, l.Metadata.Name, server, n.Name, o.Path)
		return nil
	}
	return fmt.Errorf("no server gave its kubeconfig:\n  %s", strings.Join(tried, "\n  "))
}

// ErrNoCluster is returned when a server has no kubeconfig (K3s not installed).
var ErrNoCluster = errors.New("no K3s kubeconfig on the server")

func fetchKubeconfig(ctx context.Context, hosts *nodes.Backend, n profiles.Node) ([]byte, error) {
	h, err := hosts.Host(ctx, n)
	if err != nil {
		return nil, err
	}
	// The file holds the admin client key: it goes straight into the
	// merge, never to the output.
	res, err := h.Run(ctx, remote.Cmd{Script: "test -f " + k3s.KubeconfigPath + " || exit 3; cat " + k3s.KubeconfigPath, Sudo: true})
	var ee *remote.ExitError
	if errors.As(err, &ee) && ee.Status == 3 {
		return nil, fmt.Errorf("%s: %w (%s is missing)", n.Name, ErrNoCluster, k3s.KubeconfigPath)
	}
	if err != nil {
		return nil, err
	}
	return []byte(res.Stdout), nil
}
