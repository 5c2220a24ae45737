package flow

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
)

// ErrNoSnapshot: the snapshot to restore is nowhere labctl can find it.
var ErrNoSnapshot = errors.New("no such snapshot")

// Restore builds the plan that restores the cluster's etcd from a
// snapshot, the way K3s documents it for embedded etcd: K3s stopped on
// every server, the snapshot put on one server (uploaded if it is
// local), K3s's cluster-reset run there with the snapshot and K3s
// started again, then every other server's etcd data moved aside and the
// server rejoined through it, one at a time. It works with servers
// gone: those that do not answer are left out (rebuild them afterwards).
// A journal in local state lets an interrupted restore continue.
//
// snapshot is a local file, the name of one in local state, or the name
// of one on a server.
func Restore(p *profiles.Profile, snapshot string, b Backends, o Options) (*plan.Plan, error) {
	s := &p.Spec
	if s.K3d != nil {
		return nil, fmt.Errorf("profile %s is a k3d cluster: labctl restores the embedded etcd of SSH nodes only", p.Metadata.Name)
	}
	f := newBuilder(p, b, o, "restore "+p.Metadata.Name)
	if err := f.need(false, true, true, false, false); err != nil {
		return nil, err
	}
	if b.Ops == nil || b.Local == nil {
		return nil, fmt.Errorf("%w for the cluster's etcd, or local state", ErrNoBackend)
	}
	r := &restore{builder: f, snapshot: snapshot}
	last := r.observe()
	var stops []string
	for _, n := range s.Servers() {
		stops = append(stops, r.stop(n, last))
	}
	last = r.reset(stops)
	for _, n := range s.Servers() {
		last = r.rejoin(n, last)
	}
	last = r.cleanNodes(last)
	last = f.kubeconfig([]string{last}, "https://<first server that answers>:6443", b.K3s)
	r.finish(last)
	return f.plan, nil
}

type restore struct {
	*builder
	snapshot string
}

// journal is the restore's journal, as observed (or begun).
func (r *restore) journal() facts.Restore {
	j, _ := r.facts.Restore()
	return j
}

func (r *restore) record(x *plan.Exec, fn func(j *facts.Restore)) error {
	j := r.journal()
	fn(&j)
	if x.DryRun() {
		j.Planned = true
		r.facts.SetRestore(&j)
		return nil
	}
	r.facts.SetRestore(&j)
	return r.b.Local.SaveRestore(j)
}

// answers: the server could be asked (its K3s observed).
func (r *restore) answers(n profiles.Node) bool {
	return r.facts.Node(n.Name).K3s != nil
}

func (r *restore) target() (profiles.Node, bool) {
	n, ok := r.s.Node(r.journal().Server)
	return n, ok
}

// observe finds the servers that answer, the snapshot and the server it
// is restored on.
func (r *restore) observe() string {
	id := "restore-observe"
	r.plan.Add(plan.Step{
		ID: id, Title: "Observe the servers and find the snapshot",
		Check: func(ctx context.Context, log func(string)) (plan.Verdict, error) {
			rj, resumed, err := r.b.Local.Restore()
			if err != nil {
				return plan.Verdict{}, err
			}
			errs := r.observeK3s(ctx, r.s.Servers())
			var up []profiles.Node
			for _, n := range r.s.Servers() {
				if err := errs[n.Name]; err != nil {
					log(fmt.Sprintf("%s does not answer (%v): left out; rebuild it afterwards (labctl rebuild %s %s)", n.Name, err, r.p.Metadata.Name, n.Name))
					continue
				}
				up = append(up, n)
			}
			if len(up) == 0 {
				return plan.Verdict{}, fmt.Errorf("no server answers: a restore needs one (a machine with the cluster's certificates, or a new one created first with labctl create)")
			}
			if resumed {
				r.facts.SetRestore(&rj)
				return plan.InPlace("continuing the restore of %s on %s begun %s", rj.Snapshot.Name, rj.Server, rj.Started.Format(time.RFC3339)), nil
			}
			snap, on, err := r.find(ctx, up)
			if err != nil {
				return plan.Verdict{}, err
			}
			rj = facts.Restore{Snapshot: snap, Started: r.o.Now(), Server: on.Name}
			r.facts.SetRestore(&rj)
			where := "local state"
			if snap.Node != "" {
				where = snap.Node
			}
			return plan.InPlace("%d of %d servers answer; %s (%s) is restored on %s", len(up), len(r.s.Servers()), snap.Name, where, on.Name), nil
		},
		Run: func(context.Context, *plan.Exec) error { return nil },
	})
	return id
}

// find resolves the snapshot: a local file, a name in local state, or a
// name on a server (which is then the one restored on); otherwise the
// first server that answers is.
func (r *restore) find(ctx context.Context, up []profiles.Node) (facts.Snapshot, profiles.Node, error) {
	for _, p := range []string{r.snapshot, r.b.Local.SnapshotPath(r.snapshot)} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && !strings.HasSuffix(p, ".json") {
			return facts.Snapshot{Name: filepath.Base(p), Path: p, Size: st.Size()}, up[0], nil
		}
	}
	var seen []string
	for _, n := range up {
		snaps, err := r.b.Ops.ListSnapshots(ctx, n)
		if err != nil {
			return facts.Snapshot{}, n, err
		}
		for _, s := range snaps {
			if s.Name == r.snapshot {
				return s, n, nil
			}
			seen = append(seen, s.Name+" ("+n.Name+")")
		}
	}
	slices.Sort(seen)
	return facts.Snapshot{}, profiles.Node{}, fmt.Errorf("%w %q: not a file, not in local state (labctl snapshot list %s), not on any server that answers (there: %s)", ErrNoSnapshot, r.snapshot, r.p.Metadata.Name, strings.Join(seen, ", "))
}

// stop adds the step stopping K3s on server n.
func (r *restore) stop(n profiles.Node, after string) string {
	id := "stop/" + n.Name
	r.plan.Add(plan.Step{
		ID: id, Title: "Stop K3s on every server", Host: n.Name, After: []string{after},
		Check: func(context.Context, func(string)) (plan.Verdict, error) {
			k := r.facts.Node(n.Name).K3s
			switch {
			case r.journal().Reset:
				return plan.InPlace("the reset is done: %s rejoins below", n.Name), nil
			case k == nil:
				return plan.InPlace("%s does not answer: left out", n.Name), nil
			case !k.Active:
				return plan.InPlace("%s", k.Reason()), nil
			}
			return plan.ToDo("%s", k.Reason()), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			return x.Wet("stop k3s (systemctl stop k3s)", func(ctx context.Context) error { return r.b.K3s.Stop(ctx, n) })
		},
	})
	return id
}

// reset adds the step restoring the snapshot on the target server.
func (r *restore) reset(after []string) string {
	id := "cluster-reset"
	r.plan.Add(plan.Step{
		ID: id, Title: "Restore the snapshot on one server", After: after,
		Check: func(context.Context, func(string)) (plan.Verdict, error) {
			j := r.journal()
			if j.Reset {
				return plan.InPlace("%s was restored on %s earlier in this restore", j.Snapshot.Name, j.Server), nil
			}
			return plan.ToDo("restore %s on %s", j.Snapshot.Name, j.Server), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			t, ok := r.target()
			if !ok {
				return fmt.Errorf("restore: no target server observed")
			}
			snap := r.journal().Snapshot
			if snap.Node == "" {
				if err := x.Wet(fmt.Sprintf("upload %s to %s's snapshot directory (0600)", snap.Path, t.Name), func(ctx context.Context) error {
					up, err := r.b.Ops.UploadSnapshot(ctx, t, snap.Path)
					if err == nil {
						snap = up
					}
					return err
				}); err != nil {
					return err
				}
				if x.DryRun() {
					snap.Path = "/var/lib/rancher/k3s/server/db/snapshots/" + snap.Name
				}
			}
			if err := x.Wet(fmt.Sprintf("run k3s server --cluster-reset --cluster-reset-restore-path=%s on %s: etcd restored, its membership reset to %s alone", snap.Path, t.Name, t.Name), func(ctx context.Context) error {
				return r.b.K3s.ClusterReset(ctx, t, snap.Path)
			}); err != nil {
				return err
			}
			if err := x.Wet("start k3s on "+t.Name, func(ctx context.Context) error { return r.b.K3s.Start(ctx, t) }); err != nil {
				return err
			}
			if err := x.Wait(t.Name+" to be a started etcd member with a Ready Node", func(ctx context.Context) error { return r.b.K3s.WaitMember(ctx, t) }); err != nil {
				return err
			}
			r.facts.Update(t.Name, func(fn *facts.Node) {
				fn.K3s = &facts.K3s{Installed: true, Unit: "k3s", Active: true, HasData: true, TokenMatches: true, Version: r.s.K3s.Version}
			})
			return r.record(x, func(j *facts.Restore) { j.Reset, j.Rejoined = true, append(j.Rejoined, t.Name) })
		},
	})
	return id
}

// rejoin adds the step bringing server n back through the target.
func (r *restore) rejoin(n profiles.Node, after string) string {
	id := "rejoin/" + n.Name
	r.plan.Add(plan.Step{
		ID: id, Title: "Rejoin the other servers, one at a time", Host: n.Name, After: []string{after},
		Check: func(context.Context, func(string)) (plan.Verdict, error) {
			j := r.journal()
			switch {
			case n.Name == j.Server:
				return plan.InPlace("the snapshot was restored here"), nil
			case slices.Contains(j.Rejoined, n.Name):
				return plan.InPlace("rejoined earlier in this restore"), nil
			case !r.answers(n):
				return plan.InPlace("%s does not answer: left out; rebuild it afterwards (labctl rebuild %s %s)", n.Name, r.p.Metadata.Name, n.Name), nil
			}
			return plan.ToDo("its etcd data belongs to the cluster before the restore"), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			t, ok := r.target()
			if !ok {
				return fmt.Errorf("restore: no target server observed")
			}
			if err := x.Wet("move "+"/var/lib/rancher/k3s/server/db aside (kept as db-before-restore-<time>)", func(ctx context.Context) error { return r.b.K3s.MoveServerDB(ctx, n) }); err != nil {
				return err
			}
			if err := r.runJoin(x, n, t); err != nil {
				return err
			}
			return r.record(x, func(j *facts.Restore) { j.Rejoined = append(j.Rejoined, n.Name) })
		},
	})
	return id
}

// runJoin points n's config.yaml at server t and starts K3s: it joins
// as a new member.
func (r *restore) runJoin(x *plan.Exec, n, t profiles.Node) error {
	if err := x.Wet(fmt.Sprintf("write /etc/rancher/k3s/config.yaml joining %s (server https://%s:6443)", t.Name, t.Address), func(ctx context.Context) error { return r.b.K3s.WriteConfig(ctx, n, &t) }); err != nil {
		return err
	}
	if err := x.Wet("start k3s", func(ctx context.Context) error { return r.b.K3s.Start(ctx, n) }); err != nil {
		return err
	}
	return x.Wait(n.Name+" to be a started etcd member with a Ready Node", func(ctx context.Context) error { return r.b.K3s.WaitMember(ctx, n) })
}

// cleanNodes deletes the Node objects the snapshot brought back that are
// not nodes of the profile (machines since retired); the profile's nodes
// that did not rejoin are left for their rebuild.
func (r *restore) cleanNodes(after string) string {
	id := "clean-nodes"
	var stale []string
	r.plan.Add(plan.Step{
		ID: id, Title: "Remove Nodes the profile no longer has", After: []string{after},
		Check: func(ctx context.Context, _ func(string)) (plan.Verdict, error) {
			t, ok := r.target()
			if !ok {
				return plan.Verdict{}, fmt.Errorf("restore: no target server observed")
			}
			kns, err := r.b.Ops.ObserveKubeNodes(ctx, t)
			if err != nil {
				if j := r.journal(); j.Reset && !j.Planned {
					return plan.Verdict{}, err
				}
				return plan.ToDo("the Nodes are known once the snapshot is restored"), nil // a dry run before the reset
			}
			stale = nil
			for _, kn := range kns {
				if _, ok := r.s.Node(kn.Name); !ok {
					stale = append(stale, kn.Name)
				}
			}
			if len(stale) == 0 {
				return plan.InPlace("every Node is a node of the profile"), nil
			}
			return plan.ToDo("not in the profile: %s", strings.Join(stale, ", ")), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			t, _ := r.target()
			for _, name := range stale {
				if err := x.Wet(fmt.Sprintf("delete Node %s and its node-password Secret", name), func(ctx context.Context) error {
					if err := r.b.Ops.DeleteNode(ctx, t, name); err != nil {
						return err
					}
					return r.b.Ops.DeleteNodePassword(ctx, t, name)
				}); err != nil {
					return err
				}
			}
			return nil
		},
	})
	return id
}

func (r *restore) finish(after string) {
	r.plan.Add(plan.Step{
		ID: "restore-done", Title: "Close the restore", After: []string{after},
		Check: func(context.Context, func(string)) (plan.Verdict, error) {
			return plan.ToDo("the restore is done"), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			return x.Wet("forget the restore journal", func(context.Context) error { return r.b.Local.ForgetRestore() })
		},
	})
}
