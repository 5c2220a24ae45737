package flow

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3s"
)

// ErrUpgradeRefused: the profile asks for a change an upgrade cannot
// make (a downgrade, a skipped minor release, a setting every server
// must share, a k3d cluster).
var ErrUpgradeRefused = errors.New("upgrade refused")

// Upgrade builds the plan that brings running nodes to the profile's K3s
// version and config.yaml: observed and checked first (no downgrade, one
// minor release at a time, critical settings unchanged, every server a
// healthy etcd member), an etcd snapshot saved into local state before
// the first change, then the servers one at a time and the agents after
// them: cordon, drain, install the new version (or write the new config
// and restart), wait until the node reports the version and is back in
// the cluster, uncordon. Every node already as the profile says is left
// alone, so an interrupted upgrade continues where it stopped.
func Upgrade(p *profiles.Profile, b Backends, o Options) (*plan.Plan, error) {
	s := &p.Spec
	if s.K3d != nil {
		return nil, fmt.Errorf("%w: profile %s is a k3d cluster, which k3d cannot upgrade in place; destroy and create it with the new version (labctl destroy %s; labctl create %s)", ErrUpgradeRefused, p.Metadata.Name, p.Metadata.Name, p.Metadata.Name)
	}
	f := newBuilder(p, b, o, "upgrade "+p.Metadata.Name)
	if err := f.need(false, true, true, false, false); err != nil {
		return nil, err
	}
	if b.Ops == nil || b.Local == nil {
		return nil, fmt.Errorf("%w for the cluster's etcd and API, or local state", ErrNoBackend)
	}
	u := &upgrade{builder: f}
	last := u.observe()
	last = u.snapshotFirst(last)
	for _, n := range s.Servers() {
		last = u.node(n, []string{last}, "upgrade-servers")
	}
	// Agents after every server, in parallel (the engine bounds it).
	for _, n := range s.Agents() {
		u.node(n, []string{last}, "")
	}
	return f.plan, nil
}

type upgrade struct{ *builder }

// versionPending: some node still runs another version.
func (u *upgrade) versionPending() bool {
	for _, n := range u.s.Nodes {
		if k := u.facts.Node(n.Name).K3s; k != nil && k.Version != u.s.K3s.Version {
			return true
		}
	}
	return false
}

// pending lists what differs on n from the profile, as observed.
func (u *upgrade) pending(n profiles.Node) []facts.Change {
	k := u.facts.Node(n.Name).K3s
	if k == nil {
		return nil
	}
	return k3s.Drift(u.s, n, *k)
}

func (u *upgrade) observe() string {
	id := "upgrade-observe"
	u.plan.Add(plan.Step{
		ID: id, Title: "Observe every node and check the upgrade",
		Check: func(ctx context.Context, log func(string)) (plan.Verdict, error) {
			errs := u.observeK3s(ctx, u.s.Nodes)
			var problems []string
			for _, n := range u.s.Nodes {
				if err := errs[n.Name]; err != nil {
					problems = append(problems, fmt.Sprintf("%s cannot be asked: %v", n.Name, err))
					continue
				}
				k := u.facts.Node(n.Name).K3s
				if !k.Installed || !k.Active {
					problems = append(problems, fmt.Sprintf("%s: %s (an upgrade needs every node running; labctl create or rebuild it first)", n.Name, k.Reason()))
					continue
				}
				if k.Version != "" && k.Version != u.s.K3s.Version {
					if err := k3s.UpgradePath(k.Version, u.s.K3s.Version); err != nil {
						problems = append(problems, n.Name+": "+err.Error())
					}
				}
				for _, c := range u.pending(n) {
					if slices.Contains(k3s.Critical, c.Key) {
						problems = append(problems, fmt.Sprintf("%s: config.yaml %s: every server must share it; changing it needs a new cluster (labctl destroy, then create)", n.Name, c))
					}
				}
			}
			if len(problems) > 0 {
				return plan.Verdict{}, fmt.Errorf("%w, nothing was changed:\n  %s", ErrUpgradeRefused, strings.Join(problems, "\n  "))
			}
			via := u.runningServer()
			if via == nil {
				return plan.Verdict{}, fmt.Errorf("%w: no server runs K3s", ErrNoHealthyServer)
			}
			e, err := u.b.Ops.ObserveEtcd(ctx, *via)
			if err != nil {
				return plan.Verdict{}, err
			}
			u.facts.SetEtcd(e)
			if err := u.allHealthy(e); err != nil {
				return plan.Verdict{}, err
			}
			kns, err := u.b.Ops.ObserveKubeNodes(ctx, *via)
			if err != nil {
				return plan.Verdict{}, err
			}
			u.facts.SetKubeNodes(kns)
			var todo []string
			for _, n := range u.s.Nodes {
				if cs := u.pending(n); len(cs) > 0 {
					todo = append(todo, n.Name+": "+driftLine(cs))
					log(n.Name + ": " + driftLine(cs))
				}
			}
			if len(todo) == 0 {
				return plan.InPlace("every node runs %s with config.yaml as rendered; etcd %s", u.s.K3s.Version, e.Summary()), nil
			}
			return plan.InPlace("%s to change; etcd %s", plural(len(todo), "node"), e.Summary()), nil
		},
		Run: func(context.Context, *plan.Exec) error { return nil },
	})
	return id
}

// allHealthy refuses unless every server is a started, healthy voting
// member: an upgrade takes one server away at a time, which only a
// complete membership survives.
func (u *upgrade) allHealthy(e facts.Etcd) error {
	var bad []string
	for _, n := range u.s.Servers() {
		m, ok := e.At(n.Address)
		switch {
		case !ok:
			bad = append(bad, n.Name+" has no etcd member")
		case !m.Started() || m.Learner || !m.Healthy:
			bad = append(bad, m.String())
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: etcd is not whole (%s): an upgrade restarts one server at a time, which needs every other one healthy; rebuild or repair them first (labctl rebuild)", ErrQuorum, strings.Join(bad, "; "))
	}
	return nil
}

// snapshotFirst saves an etcd snapshot before the first change.
func (u *upgrade) snapshotFirst(after string) string {
	id := "etcd-snapshot"
	u.plan.Add(plan.Step{
		ID: id, Title: "Save an etcd snapshot first", After: []string{after},
		Check: func(context.Context, func(string)) (plan.Verdict, error) {
			var pending, done []string
			for _, n := range u.s.Nodes {
				if k := u.facts.Node(n.Name).K3s; len(u.pending(n)) > 0 {
					pending = append(pending, n.Name)
				} else if k != nil && k.Version == u.s.K3s.Version {
					done = append(done, n.Name)
				}
			}
			switch {
			case len(pending) == 0:
				return plan.InPlace("nothing to change: no snapshot needed"), nil
			case len(done) > 0 && len(done) < len(u.s.Nodes) && u.versionPending():
				// An interrupted upgrade: its snapshot was taken before its
				// first change.
				return plan.InPlace("the upgrade began earlier (%s already run %s): its snapshot was taken then", strings.Join(done, ", "), u.s.K3s.Version), nil
			}
			return plan.ToDo("the upgrade changes %s", strings.Join(pending, ", ")), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			via := u.runningServer()
			if via == nil {
				return fmt.Errorf("%w: no server runs K3s", ErrNoHealthyServer)
			}
			_, err := u.saveSnapshot(x, *via, fmt.Sprintf("labctl-pre-upgrade-%s", strings.NewReplacer("+", "-").Replace(u.s.K3s.Version)), "before the upgrade to "+u.s.K3s.Version)
			return err
		},
	})
	return id
}

// node adds the step upgrading one node.
func (u *upgrade) node(n profiles.Node, after []string, serial string) string {
	id := "upgrade/" + n.Name
	title := "Upgrade K3s server"
	if n.Role == profiles.RoleAgent {
		title = "Upgrade K3s agent"
	}
	u.plan.Add(plan.Step{
		ID: id, Title: title, Host: n.Name, After: after, Serial: serial,
		Check: func(context.Context, func(string)) (plan.Verdict, error) {
			k := u.facts.Node(n.Name).K3s
			cs := u.pending(n)
			kn, _ := u.facts.KubeNode(n.Name)
			switch {
			case len(cs) > 0:
				return plan.ToDo("%s", driftLine(cs)), nil
			case kn.CordonedBy != "":
				return plan.ToDo("%s, but still cordoned by an interrupted upgrade", k.Reason()), nil
			}
			return plan.InPlace("%s, config.yaml as rendered", k.Reason()), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error { return u.upgradeNode(x, n) },
	})
	return id
}

func (u *upgrade) upgradeNode(x *plan.Exec, n profiles.Node) error {
	cs := u.pending(n)
	via := u.runningServer(n.Name)
	if via == nil {
		via = u.runningServer()
	}
	if via == nil {
		return fmt.Errorf("%w: no server to work through", ErrNoHealthyServer)
	}
	if n.Role == profiles.RoleServer {
		if err := x.Wait("etcd healthy with every other server started", func(ctx context.Context) error {
			e, err := u.b.Ops.ObserveEtcd(ctx, *via)
			if err != nil {
				return err
			}
			return u.allHealthy(e)
		}); err != nil {
			return err
		}
	}
	if len(cs) > 0 {
		if err := x.Wet(fmt.Sprintf("cordon Node %s (through the API on %s)", n.Name, via.Name), func(ctx context.Context) error { return u.b.Ops.Cordon(ctx, *via, n.Name) }); err != nil {
			return err
		}
		if err := x.Wet("drain Node "+n.Name+": evict its pods, PodDisruptionBudgets respected (DaemonSet pods stay)", func(ctx context.Context) error {
			err := u.b.Ops.Drain(ctx, *via, n.Name)
			if err != nil {
				// Nothing of K3s changed: the node takes pods again.
				_ = u.b.Ops.Uncordon(context.WithoutCancel(ctx), *via, n.Name)
			}
			return err
		}); err != nil {
			return err
		}
		k := u.facts.Node(n.Name).K3s
		join := u.joinOnDisk(k)
		cfg := k3s.NodeConfig(u.s, n, join)
		if err := x.Wet(fmt.Sprintf("write %s (%s)", k3s.ConfigPath, cfg.Summary()), func(ctx context.Context) error { return u.b.K3s.WriteConfig(ctx, n, join) }); err != nil {
			return err
		}
		if k.Version != u.s.K3s.Version {
			in := k3s.InstallFor(u.s, n)
			from := k.Version
			if from == "" {
				from = "(not observed)"
			}
			if err := x.Wet(fmt.Sprintf("upgrade %s → %s: run %s", from, u.s.K3s.Version, in.Command), func(ctx context.Context) error { return u.b.K3s.Install(ctx, n) }); err != nil {
				return err
			}
		} else {
			if err := x.Wet("restart "+k.Unit+" to apply the new config.yaml", func(ctx context.Context) error { return u.b.K3s.Restart(ctx, n) }); err != nil {
				return err
			}
		}
		if err := x.Wait(fmt.Sprintf("%s to run %s and be back in the cluster", n.Name, u.s.K3s.Version), func(ctx context.Context) error {
			if err := u.b.K3s.WaitMember(ctx, n); err != nil {
				return err
			}
			obs, err := u.b.K3s.ObserveK3s(ctx, n)
			if err != nil {
				return err
			}
			if obs.Version != u.s.K3s.Version {
				return fmt.Errorf("%s reports %s after the upgrade, not %s", n.Name, obs.Version, u.s.K3s.Version)
			}
			u.facts.Update(n.Name, func(fn *facts.Node) { fn.K3s = &obs })
			return nil
		}); err != nil {
			return err
		}
		if x.DryRun() {
			u.facts.Update(n.Name, func(fn *facts.Node) {
				k := *fn.K3s
				k.Version, k.Config = u.s.K3s.Version, cfg.Render()
				fn.K3s = &k
			})
		}
	}
	return x.Wet(fmt.Sprintf("uncordon Node %s", n.Name), func(ctx context.Context) error { return u.b.Ops.Uncordon(ctx, *via, n.Name) })
}

// joinOnDisk is the server a node's config.yaml joined through (nil
// for cluster-init): an upgrade keeps it as it is.
func (u *upgrade) joinOnDisk(k *facts.K3s) *profiles.Node {
	if k == nil {
		return nil
	}
	initial, server := k3s.JoinOf(k.Config)
	if initial || server == "" {
		return nil
	}
	host := server
	if su, err := url.Parse(server); err == nil && su.Hostname() != "" {
		host = su.Hostname()
	}
	for _, s := range u.s.Servers() {
		if s.Address == host {
			return &s
		}
	}
	return &profiles.Node{Name: host, Address: host}
}
