package commands

import (
	"context"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/labctl/labctl/bootstrap"
	"github.com/labctl/labctl/flow"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3d"
	"github.com/labctl/labctl/provision/k3s"
	"github.com/labctl/labctl/provision/kubeconfig"
	"github.com/labctl/labctl/provision/nodes"
	"github.com/labctl/labctl/provision/remote"
)

// CreateOptions shape `labctl create`.
type CreateOptions struct {
	// NoFlux creates the cluster without bootstrapping Flux.
	NoFlux bool
	// Force lets Flux's bootstrap replace a flux-system that syncs
	// another path.
	Force             bool
	AcceptNewHostKeys bool
	// Kubeconfig is the file the context is merged into.
	Kubeconfig string
	// StateDir holds the cluster token and a generated Flux deploy key;
	// default k3s.StateDir().
	StateDir string
	// Parallel bounds the steps running at once.
	Parallel int
	// Proxmox shapes the VM provider of a profile with spec.proxmox.
	Proxmox ProxmoxOptions
}

// Create runs the create flow: the VMs on Proxmox VE when the profile has
// spec.proxmox (else the hosts are taken as given), host prerequisites,
// K3s (initialise or join, one server at a time), the kubeconfig, Flux.
// Re-running it converges: finished steps are skipped.
func Create(ctx context.Context, e Env, a ProfileArg, o CreateOptions) error {
	l, err := e.Load(a)
	if err != nil {
		return err
	}
	if l.Spec.K3d != nil {
		return createK3d(ctx, e, l, o)
	}
	s := &l.Spec
	var backends flow.Backends
	if s.Proxmox != nil {
		vms, err := proxmoxBackend(l, o.Proxmox, e.Stderr)
		if err != nil {
			return err
		}
		backends.VMs = vms
	}
	if o.StateDir == "" {
		if o.StateDir, err = k3s.StateDir(); err != nil {
			return err
		}
	}
	if o.Kubeconfig == "" {
		o.Kubeconfig = kubeconfig.DefaultPath()
	}
	token, created, err := k3s.ClusterToken(o.StateDir, l.Metadata.Name, s.K3s.TokenRef, os.LookupEnv)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(e.Stderr, "generated a cluster token for %s in %s\n", l.Metadata.Name, o.StateDir)
	}
	pool := remote.NewPool(nil)
	defer pool.Close()
	pool.Redact.Add(token)
	hosts := &nodes.Backend{Pool: pool, SSH: s.SSH, AcceptNewHostKeys: o.AcceptNewHostKeys}
	if s.Storage.Longhorn != nil {
		hosts.DataPath = s.Storage.Longhorn.DataPath
	}
	kb := &k3s.Backend{Hosts: hosts, Spec: s, Profile: l.Metadata.Name, Token: token, Kubeconfig: o.Kubeconfig}
	backends.Hosts, backends.K3s = hosts, kb
	rep, err := e.runCluster(ctx, l, backends, o)
	if err != nil {
		return err
	}
	if e.Output != OutputJSON {
		fmt.Fprintf(e.Stdout, "wall %s, critical path %s; SSH connections and commands per host:", rep.Wall().Round(time.Millisecond), rep.CriticalPath().Round(time.Millisecond))
		conns, cmds := pool.Connections(), pool.Commands()
		keys := make([]string, 0, len(conns))
		for k := range conns {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(e.Stdout, " %s %d/%d", k, conns[k], cmds[k])
		}
		fmt.Fprintln(e.Stdout)
	}
	return nil
}

// runCluster builds the cluster plan (no Flux) and runs it with the
// output format's sink.
func (e Env) runCluster(ctx context.Context, l *profiles.Loaded, b flow.Backends, o CreateOptions) (*plan.Report, error) {
	build := flow.Cluster
	if !o.NoFlux {
		build = flow.Create
		keyDir := o.StateDir
		if keyDir == "" {
			var err error
			if keyDir, err = k3s.StateDir(); err != nil {
				return nil, err
			}
		}
		b.Flux = &bootstrap.Backend{Spec: &l.Spec, Kubeconfig: o.Kubeconfig, Context: l.Metadata.Name, Lookup: os.LookupEnv, Force: o.Force, Log: e.Stderr, KeyDir: keyDir}
	}
	p, err := build(&l.Profile, b, flow.Options{Kubeconfig: o.Kubeconfig})
	if err != nil {
		return nil, err
	}
	var sink plan.Sink = plan.NewProgress(e.Stdout)
	if e.Output == OutputJSON {
		sink = plan.NewJSONLines(e.Stdout)
	}
	return plan.Run(ctx, p, plan.Options{Sink: sink, Parallel: o.Parallel, Now: e.Now})
}

// createK3d runs the k3d flow: the cluster (left alone when it exists with
// the profile's shape, refused when its shape differs), then the
// kubeconfig.
func createK3d(ctx context.Context, e Env, l *profiles.Loaded, o CreateOptions) error {
	if o.Kubeconfig == "" {
		o.Kubeconfig = kubeconfig.DefaultPath()
	}
	kb := &k3d.Backend{Spec: &l.Spec, Profile: l.Metadata.Name, Kubeconfig: o.Kubeconfig}
	rep, err := e.runCluster(ctx, l, flow.Backends{K3d: kb}, o)
	if err != nil {
		return err
	}
	if e.Output != OutputJSON {
		fmt.Fprintf(e.Stdout, "wall %s, critical path %s\n", rep.Wall().Round(time.Millisecond), rep.CriticalPath().Round(time.Millisecond))
	}
	return nil
}
