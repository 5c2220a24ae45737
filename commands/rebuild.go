package commands

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/labctl/labctl/flow"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/provision/kubeconfig"
)

// RebuildOptions shape `labctl rebuild`.
type RebuildOptions struct {
	// Node is the profile node to rebuild.
	Node string
	// Yes rebuilds a node that is still healthy without asking; without
	// it the node's name must be typed on Confirm.
	Yes     bool
	Confirm io.Reader
	// DryRun prints the plan from what exists and changes nothing.
	DryRun bool
	// ReplaceHostKey: the node's machine was reinstalled, so its new host
	// key replaces the known_hosts line (given hosts).
	ReplaceHostKey bool
	// Kubeconfig is the file the context is merged into; StateDir holds
	// the cluster token, the snapshot and the rebuild's journal.
	Kubeconfig, StateDir string
	Proxmox              ProxmoxOptions
	// DrainTimeout bounds each drain (default 5 minutes).
	DrainTimeout time.Duration
}

// Rebuild replaces a failed node of the profile: observed through the
// healthy servers, refused when etcd would lose its quorum, an etcd
// snapshot saved into local state first, the dead Node and member
// removed, the machine recreated and rejoined through a healthy server.
// A node that is still healthy is rebuilt only when confirmed. Re-running
// it after an interruption continues where it stopped.
func Rebuild(ctx context.Context, e Env, a ProfileArg, o RebuildOptions) error {
	l, err := e.Load(a)
	if err != nil {
		return err
	}
	if _, err := flow.RebuildTarget(&l.Profile, o.Node); err != nil {
		return err
	}
	// A rebuilt VM is a new machine with a new host key (learnt through
	// the guest agent); a given host's new key replaces the old one only
	// when the operator says the machine was reinstalled.
	var replace []string
	if o.ReplaceHostKey || l.Spec.Proxmox != nil {
		replace = []string{o.Node}
	}
	w, err := e.backends(l, wiring{Kubeconfig: o.Kubeconfig, StateDir: o.StateDir, Proxmox: o.Proxmox, ReplaceHostKeys: replace, DrainTimeout: o.DrainTimeout})
	if err != nil {
		return err
	}
	defer w.Close()
	build := func(confirmed bool) (*plan.Plan, error) {
		return flow.Rebuild(&l.Profile, o.Node, w.Backends, flow.Options{Kubeconfig: w.Kubeconfig, Confirmed: confirmed, Now: e.Now})
	}
	if o.DryRun {
		p, err := build(true)
		if err != nil {
			return err
		}
		return e.dryRun(ctx, p, "Dry run: nothing was changed. A node that is still healthy is rebuilt only with --yes or the typed confirmation.")
	}
	// Learnt before the first change, not after every host was changed.
	if err := kubeconfig.CheckWritable(w.Kubeconfig); err != nil {
		return err
	}
	p, err := build(o.Yes)
	if err != nil {
		return err
	}
	rep, err := plan.Run(ctx, p, plan.Options{Sink: e.sink(), Now: e.Now})
	if errors.Is(err, flow.ErrNodeHealthy) && !o.Yes {
		what := fmt.Sprintf("%v.\nThis drains %s, removes it from the cluster and replaces its machine.", err, o.Node)
		if cerr := confirm(e, DestroyOptions{Confirm: o.Confirm}, o.Node, what); cerr != nil {
			return fmt.Errorf("rebuild %s: %w", o.Node, cerr)
		}
		if p, err = build(true); err != nil {
			return err
		}
		rep, err = plan.Run(ctx, p, plan.Options{Sink: e.sink(), Now: e.Now})
	}
	if err != nil {
		return err
	}
	if e.Output != OutputJSON {
		fmt.Fprintf(e.Stdout, "rebuilt %s: wall %s, critical path %s", o.Node, rep.Wall().Round(time.Millisecond), rep.CriticalPath().Round(time.Millisecond))
		if c := w.connections(); c != "" {
			fmt.Fprintf(e.Stdout, "; SSH connections and commands per host:%s", c)
		}
		fmt.Fprintln(e.Stdout)
	}
	return nil
}
