package commands

import (
	"context"
	"fmt"
	"time"

	"github.com/labctl/labctl/flow"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/provision/kubeconfig"
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

// Create runs the create flow: a k3d cluster, or the VMs on Proxmox VE
// when the profile has spec.proxmox (else the hosts are taken as given),
// host prerequisites, K3s (initialise or join, one server at a time),
// then the kubeconfig and Flux. Re-running it converges: finished steps
// are skipped; a node whose K3s differs from the profile stops it.
func Create(ctx context.Context, e Env, a ProfileArg, o CreateOptions) error {
	l, err := e.Load(a)
	if err != nil {
		return err
	}
	w, err := e.backends(l, wiring{Flux: !o.NoFlux, Force: o.Force, AcceptNewHostKeys: o.AcceptNewHostKeys, Kubeconfig: o.Kubeconfig, StateDir: o.StateDir, Proxmox: o.Proxmox})
	if err != nil {
		return err
	}
	defer w.Close()
	build := flow.Create
	if o.NoFlux {
		build = flow.Cluster
	}
	p, err := build(&l.Profile, w.Backends, flow.Options{Kubeconfig: w.Kubeconfig})
	if err != nil {
		return err
	}
	// Learnt before the first change, not after every host was changed.
	if err := kubeconfig.CheckWritable(w.Kubeconfig); err != nil {
		return err
	}
	rep, err := plan.Run(ctx, p, plan.Options{Sink: e.sink(), Parallel: o.Parallel, Now: e.Now})
	if err != nil {
		return err
	}
	if e.Output != OutputJSON {
		fmt.Fprintf(e.Stdout, "wall %s, critical path %s", rep.Wall().Round(time.Millisecond), rep.CriticalPath().Round(time.Millisecond))
		if c := w.connections(); c != "" {
			fmt.Fprintf(e.Stdout, "; SSH connections and commands per host:%s", c)
		}
		fmt.Fprintln(e.Stdout)
	}
	return nil
}
