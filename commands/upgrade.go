package commands

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/labctl/labctl/flow"
	"github.com/labctl/labctl/plan"
)

// UpgradeOptions shape `labctl upgrade`.
type UpgradeOptions struct {
	// Yes upgrades without asking; without it the profile's name must be
	// typed on Confirm (every node is drained and restarted in turn).
	Yes     bool
	Confirm io.Reader
	// DryRun prints the plan from what exists and changes nothing.
	DryRun bool
	// Kubeconfig and StateDir as for create (the snapshot goes to state).
	Kubeconfig, StateDir string
	Parallel             int
	// DrainTimeout bounds each drain (default 5 minutes).
	DrainTimeout time.Duration
}

// Upgrade rolls the profile's K3s version and config.yaml out to the
// running nodes, servers one at a time, then agents: refused for a
// downgrade, a skipped minor release or a setting every server must
// share; an etcd snapshot first; each node cordoned, drained, upgraded,
// waited for, uncordoned. Re-running it after an interruption continues.
func Upgrade(ctx context.Context, e Env, a ProfileArg, o UpgradeOptions) error {
	l, err := e.Load(a)
	if err != nil {
		return err
	}
	if l.Spec.K3d != nil {
		_, err := flow.Upgrade(&l.Profile, flow.Backends{}, flow.Options{})
		return err
	}
	w, err := e.backends(l, wiring{Kubeconfig: o.Kubeconfig, StateDir: o.StateDir, HostsOnly: true, DrainTimeout: o.DrainTimeout})
	if err != nil {
		return err
	}
	defer w.Close()
	build := func() (*plan.Plan, error) {
		return flow.Upgrade(&l.Profile, w.Backends, flow.Options{Kubeconfig: w.Kubeconfig, Now: e.Now})
	}
	p, err := build()
	if err != nil {
		return err
	}
	if err := e.dryRun(ctx, p, ""); err != nil || o.DryRun {
		return err
	}
	if !o.Yes {
		what := fmt.Sprintf("This upgrades profile %s as planned above: each node is cordoned, drained, upgraded and restarted, one server at a time.", l.Metadata.Name)
		if err := confirm(e, DestroyOptions{Confirm: o.Confirm}, l.Metadata.Name, what); err != nil {
			return fmt.Errorf("upgrade %s: %w", l.Metadata.Name, err)
		}
	}
	if p, err = build(); err != nil {
		return err
	}
	rep, err := plan.Run(ctx, p, plan.Options{Sink: e.sink(), Parallel: o.Parallel, Now: e.Now})
	if err != nil {
		return err
	}
	if e.Output != OutputJSON {
		fmt.Fprintf(e.Stdout, "upgraded %s: wall %s, critical path %s", l.Metadata.Name, rep.Wall().Round(time.Millisecond), rep.CriticalPath().Round(time.Millisecond))
		if c := w.connections(); c != "" {
			fmt.Fprintf(e.Stdout, "; SSH connections and commands per host:%s", c)
		}
		fmt.Fprintln(e.Stdout)
	}
	return nil
}
