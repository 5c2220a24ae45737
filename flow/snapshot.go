package flow

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
)

// SnapshotSave builds the plan that saves an etcd snapshot on a server
// that runs K3s and copies it into local state with its reason.
func SnapshotSave(p *profiles.Profile, reason string, b Backends, o Options) (*plan.Plan, error) {
	f, err := snapshotBuilder(p, b, o, "snapshot "+p.Metadata.Name)
	if err != nil {
		return nil, err
	}
	f.plan.Add(plan.Step{
		ID: "snapshot-observe", Title: "Find a server that runs K3s",
		Check: func(ctx context.Context, log func(string)) (plan.Verdict, error) {
			errs := f.observeK3s(ctx, f.s.Servers())
			for n, err := range errs {
				log(fmt.Sprintf("%s does not answer: %v", n, err))
			}
			via := f.runningServer()
			if via == nil {
				return plan.Verdict{}, fmt.Errorf("%w: no server runs K3s to take the snapshot", ErrNoHealthyServer)
			}
			return plan.InPlace("%s runs K3s", via.Name), nil
		},
		Run: func(context.Context, *plan.Exec) error { return nil },
	})
	f.plan.Add(plan.Step{
		ID: "etcd-snapshot", Title: "Save an etcd snapshot", After: []string{"snapshot-observe"},
		Run: func(ctx context.Context, x *plan.Exec) error {
			via := f.runningServer()
			if via == nil {
				return fmt.Errorf("%w", ErrNoHealthyServer)
			}
			_, err := f.saveSnapshot(x, *via, "labctl-manual", reason)
			return err
		},
	})
	return f.plan, nil
}

func snapshotBuilder(p *profiles.Profile, b Backends, o Options, name string) (*builder, error) {
	if p.Spec.K3d != nil {
		return nil, fmt.Errorf("profile %s is a k3d cluster: labctl snapshots the embedded etcd of SSH nodes only", p.Metadata.Name)
	}
	f := newBuilder(p, b, o, name)
	if err := f.need(false, true, true, false, false); err != nil {
		return nil, err
	}
	if b.Ops == nil || b.Local == nil {
		return nil, fmt.Errorf("%w for the cluster's etcd, or local state", ErrNoBackend)
	}
	return f, nil
}

// SnapshotPrune builds the plan that keeps the keep newest snapshots
// labctl took (named labctl-…) and deletes the older ones, locally and
// on the servers; snapshots K3s or the operator took stay.
func SnapshotPrune(p *profiles.Profile, keep int, local []facts.Snapshot, forget func(name string) error, b Backends, o Options) (*plan.Plan, error) {
	f, err := snapshotBuilder(p, b, o, "snapshot prune "+p.Metadata.Name)
	if err != nil {
		return nil, err
	}
	var remote []facts.Snapshot
	f.plan.Add(plan.Step{
		ID: "snapshot-list", Title: "List the snapshots",
		Check: func(ctx context.Context, log func(string)) (plan.Verdict, error) {
			remote = nil
			for _, n := range f.s.Servers() {
				snaps, err := b.Ops.ListSnapshots(ctx, n)
				if err != nil {
					log(fmt.Sprintf("%s does not answer: %v (its snapshots stay)", n.Name, err))
					continue
				}
				remote = append(remote, snaps...)
			}
			return plan.InPlace("%s locally, %s on the servers", plural(len(local), "snapshot"), plural(len(remote), "snapshot")), nil
		},
		Run: func(context.Context, *plan.Exec) error { return nil },
	})
	f.plan.Add(plan.Step{
		ID: "snapshot-prune", Title: fmt.Sprintf("Keep the %d newest snapshots labctl took", keep), After: []string{"snapshot-list"},
		Run: func(ctx context.Context, x *plan.Exec) error {
			for _, s := range pruned(local, keep) {
				if err := x.Wet("delete local snapshot "+s.Path, func(context.Context) error { return forget(s.Name) }); err != nil {
					return err
				}
			}
			for _, s := range pruned(remote, keep) {
				node, _ := f.s.Node(s.Node)
				if err := x.Wet(fmt.Sprintf("delete snapshot %s on %s (k3s etcd-snapshot delete)", s.Name, s.Node), func(ctx context.Context) error { return b.Ops.DeleteSnapshot(ctx, node, s.Name) }); err != nil {
					return err
				}
			}
			return nil
		},
	})
	return f.plan, nil
}

// pruned is what keeping the keep newest labctl snapshots (per node, for
// remote ones) leaves to delete.
func pruned(snaps []facts.Snapshot, keep int) []facts.Snapshot {
	by := map[string][]facts.Snapshot{}
	for _, s := range snaps {
		if strings.HasPrefix(s.Name, "labctl-") {
			by[s.Node] = append(by[s.Node], s)
		}
	}
	var out []facts.Snapshot
	nodes := make([]string, 0, len(by))
	for n := range by {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	for _, n := range nodes {
		list := by[n]
		sort.Slice(list, func(i, j int) bool { return list[i].Taken.After(list[j].Taken) })
		if len(list) > keep {
			out = append(out, list[keep:]...)
		}
	}
	return out
}
