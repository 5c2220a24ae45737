package commands

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/flow"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/provision/state"
)

// SnapshotOptions shape `labctl snapshot`.
type SnapshotOptions struct {
	// StateDir holds the local copies (default k3s.StateDir()).
	StateDir string
	// Reason is noted with a saved snapshot; Keep is how many labctl
	// snapshots prune keeps; DryRun prints prune's plan only.
	Reason string
	Keep   int
	DryRun bool
}

// SnapshotSave saves an etcd snapshot on a server and copies it into
// local state (0600) with its reason and where its cluster token is.
func SnapshotSave(ctx context.Context, e Env, a ProfileArg, o SnapshotOptions) error {
	l, err := e.Load(a)
	if err != nil {
		return err
	}
	w, err := e.backends(l, wiring{StateDir: o.StateDir, HostsOnly: true})
	if err != nil {
		return err
	}
	defer w.Close()
	reason := o.Reason
	if reason == "" {
		reason = "labctl snapshot save"
	}
	p, err := flow.SnapshotSave(&l.Profile, reason, w.Backends, flow.Options{Now: e.Now})
	if err != nil {
		return err
	}
	_, err = plan.Run(ctx, p, plan.Options{Sink: e.sink(), Now: e.Now})
	return err
}

// SnapshotList lists the snapshots kept locally and those on the
// servers that answer.
func SnapshotList(ctx context.Context, e Env, a ProfileArg, o SnapshotOptions) error {
	l, err := e.Load(a)
	if err != nil {
		return err
	}
	w, err := e.backends(l, wiring{StateDir: o.StateDir, HostsOnly: true})
	if err != nil {
		return err
	}
	defer w.Close()
	local, err := w.state.Snapshots()
	if err != nil {
		return err
	}
	type row struct {
		Where    string `json:"where"`
		Snapshot state.SnapshotMeta
		Error    string `json:"error,omitempty"`
	}
	var rows []row
	for _, m := range local {
		rows = append(rows, row{Where: "local", Snapshot: m})
	}
	for _, n := range l.Spec.Servers() {
		snaps, err := w.Ops.ListSnapshots(ctx, n)
		if err != nil {
			rows = append(rows, row{Where: n.Name, Error: err.Error()})
			continue
		}
		for _, s := range snaps {
			rows = append(rows, row{Where: n.Name, Snapshot: state.SnapshotMeta{Snapshot: s}})
		}
	}
	if e.Output == OutputJSON {
		return writeJSON(e.Stdout, rows)
	}
	tw := tabwriter.NewWriter(e.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WHERE\tNAME\tTAKEN\tSIZE\tFROM\tREASON")
	for _, r := range rows {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t(does not answer: %s)\t\t\t\t\n", r.Where, r.Error)
			continue
		}
		s := r.Snapshot
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Where, s.Name, s.Taken.Format(time.RFC3339), size(s.Size), s.Node, s.Reason)
	}
	return tw.Flush()
}

func size(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// SnapshotPrune keeps the newest labctl snapshots (locally and per
// server) and deletes the older ones.
func SnapshotPrune(ctx context.Context, e Env, a ProfileArg, o SnapshotOptions) error {
	l, err := e.Load(a)
	if err != nil {
		return err
	}
	w, err := e.backends(l, wiring{StateDir: o.StateDir, HostsOnly: true})
	if err != nil {
		return err
	}
	defer w.Close()
	metas, err := w.state.Snapshots()
	if err != nil {
		return err
	}
	var local []facts.Snapshot
	for _, m := range metas {
		local = append(local, m.Snapshot)
	}
	keep := o.Keep
	if keep < 1 {
		keep = 5
	}
	p, err := flow.SnapshotPrune(&l.Profile, keep, local, w.state.ForgetSnapshot, w.Backends, flow.Options{Now: e.Now})
	if err != nil {
		return err
	}
	if o.DryRun {
		return e.dryRun(ctx, p, "Dry run: nothing was deleted.")
	}
	_, err = plan.Run(ctx, p, plan.Options{Sink: e.sink(), Now: e.Now})
	return err
}

// RestoreOptions shape `labctl restore`.
type RestoreOptions struct {
	// Snapshot is a local file, a name in local state, or a name on a
	// server.
	Snapshot string
	Yes      bool
	Confirm  io.Reader
	DryRun   bool
	// Kubeconfig and StateDir as for create.
	Kubeconfig, StateDir string
}

// Restore restores the cluster's etcd from a snapshot (after a typed
// confirmation: everything written since the snapshot is lost).
func Restore(ctx context.Context, e Env, a ProfileArg, o RestoreOptions) error {
	l, err := e.Load(a)
	if err != nil {
		return err
	}
	if o.Snapshot == "" {
		return fmt.Errorf("which snapshot? --snapshot NAME|FILE (labctl snapshot list %s)", l.Metadata.Name)
	}
	w, err := e.backends(l, wiring{Kubeconfig: o.Kubeconfig, StateDir: o.StateDir, HostsOnly: true})
	if err != nil {
		return err
	}
	defer w.Close()
	build := func() (*plan.Plan, error) {
		return flow.Restore(&l.Profile, o.Snapshot, w.Backends, flow.Options{Kubeconfig: w.Kubeconfig, Now: e.Now})
	}
	p, err := build()
	if err != nil {
		return err
	}
	if err := e.dryRun(ctx, p, ""); err != nil || o.DryRun {
		return err
	}
	if !o.Yes {
		what := fmt.Sprintf("This stops K3s on every server of %s and restores etcd from %s: everything written to the cluster since the snapshot is lost.", l.Metadata.Name, o.Snapshot)
		if err := confirm(e, DestroyOptions{Confirm: o.Confirm}, l.Metadata.Name, what); err != nil {
			return fmt.Errorf("restore %s: %w", l.Metadata.Name, err)
		}
	}
	if p, err = build(); err != nil {
		return err
	}
	rep, err := plan.Run(ctx, p, plan.Options{Sink: e.sink(), Now: e.Now})
	if err != nil {
		return err
	}
	if e.Output != OutputJSON {
		fmt.Fprintf(e.Stdout, "restored %s: wall %s, critical path %s\n", l.Metadata.Name, rep.Wall().Round(time.Millisecond), rep.CriticalPath().Round(time.Millisecond))
	}
	return nil
}
