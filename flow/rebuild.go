package flow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
)

// Errors that stop a rebuild before it changes anything.
var (
	// ErrQuorum: etcd lacks quorum now, or would after the removal.
	ErrQuorum = errors.New("etcd quorum does not allow the rebuild")
	// ErrNodeHealthy: the node still works; only a confirmed rebuild
	// replaces it.
	ErrNodeHealthy = errors.New("node is healthy")
	// ErrNoHealthyServer: no other server runs K3s to work through.
	ErrNoHealthyServer = errors.New("no healthy server")
)

// Rebuild builds the plan that replaces node name after a failure:
// observe the cluster through the healthy servers (never through the
// node), refuse when etcd would lose its quorum, take an etcd snapshot
// into local state, drain the node if it still runs, remove its Node and
// etcd member, recreate the machine (a new VM, or the given host cleaned
// of its old K3s), install the prerequisites and rejoin K3s through a
// healthy server (never cluster-init, the first server included), and
// merge the kubeconfig through a server that answers. A journal in local
// state makes every stage resumable after an interruption.
func Rebuild(p *profiles.Profile, name string, b Backends, o Options) (*plan.Plan, error) {
	s := &p.Spec
	if s.K3d != nil {
		return rebuildK3d(p, name, b, o)
	}
	t, err := RebuildTarget(p, name)
	if err != nil {
		return nil, err
	}
	f := newBuilder(p, b, o, "rebuild "+name)
	if err := f.need(s.Proxmox != nil, true, true, false, false); err != nil {
		return nil, err
	}
	if b.Ops == nil || b.Local == nil {
		return nil, fmt.Errorf("%w for the cluster's etcd and API, or the local journal", ErrNoBackend)
	}
	r := &rebuild{builder: f, t: t}
	last := r.observe()
	if t.Role == profiles.RoleServer {
		last = r.snapshot(last)
	}
	last = r.drain(last)
	last = r.removeMember(last)
	if s.Proxmox != nil {
		last = f.vm(t, []string{r.destroyVM(last)})
	} else {
		last = r.cleanHost(last)
	}
	if hostWants(s, t) {
		last = f.prerequisites(t, []string{last})
	}
	title := "Rejoin K3s server"
	if t.Role == profiles.RoleAgent {
		title = "Rejoin K3s agent"
	}
	last = f.installK3s("k3s-rejoin/"+t.Name, title, t, []string{last}, "", r.joinHealthy)
	last = f.kubeconfig([]string{last}, "https://<first server that answers>:6443", b.K3s)
	r.finish(last)
	return f.plan, nil
}

// RebuildTarget returns the profile's node that a rebuild of name would
// replace, or why there is none.
func RebuildTarget(p *profiles.Profile, name string) (profiles.Node, error) {
	s := &p.Spec
	if s.K3d != nil {
		return profiles.Node{Name: k3dNodeName(s.K3d, name), Role: profiles.RoleAgent}, nil
	}
	t, ok := s.Node(name)
	if !ok {
		var names []string
		for _, n := range s.Nodes {
			names = append(names, n.Name)
		}
		return t, fmt.Errorf("profile %s has no node %q (its nodes: %v)", p.Metadata.Name, name, names)
	}
	return t, nil
}

// rebuild is the rebuild flow's own state: the target node.
type rebuild struct {
	*builder
	t profiles.Node
}

// via is the healthy server the rebuild works through, as observed.
func (r *rebuild) via() (profiles.Node, error) {
	if v := r.runningServer(r.t.Name); v != nil {
		return *v, nil
	}
	return profiles.Node{}, fmt.Errorf("%w: no server other than %s runs K3s", ErrNoHealthyServer, r.t.Name)
}

// journal returns the rebuild's journal: the one found in local state,
// or a new one.
func (r *rebuild) journal() facts.Rebuild {
	if j, ok := r.facts.Rebuild(); ok {
		return j
	}
	return facts.Rebuild{Node: r.t.Name}
}

// record saves the journal after a change (not in a dry run: a plan
// leaves no trace).
func (r *rebuild) record(x *plan.Exec, fn func(j *facts.Rebuild)) error {
	j := r.journal()
	fn(&j)
	r.facts.SetRebuild(&j)
	if x.DryRun() {
		return nil
	}
	return r.b.Local.SaveRebuild(j)
}

// healthy: the target's etcd member answers and its Node is Ready, as
// the healthy servers see it.
func (r *rebuild) healthy() (bool, string) {
	kn, hasNode := r.facts.KubeNode(r.t.Name)
	e, _ := r.facts.Etcd()
	m, hasMember := e.At(r.t.Address)
	nodeOK := hasNode && kn.Ready
	memberOK := r.t.Role == profiles.RoleAgent || (hasMember && m.Started() && !m.Learner && m.Healthy)
	var why []string
	switch {
	case !hasNode:
		why = append(why, "no Node "+r.t.Name)
	default:
		why = append(why, kn.Reason())
	}
	if r.t.Role == profiles.RoleServer {
		if hasMember {
			why = append(why, "etcd member "+m.String())
		} else {
			why = append(why, "no etcd member at "+r.t.Address)
		}
	}
	return nodeOK && memberOK, fmt.Sprint(joinWords(why))
}

func joinWords(ws []string) string {
	out := ""
	for i, w := range ws {
		if i > 0 {
			out += "; "
		}
		out += w
	}
	return out
}

// observe adds the step that reads the cluster through the other servers
// and applies the guards: quorum now and after the removal, a healthy
// node only when confirmed, a journal continued.
func (r *rebuild) observe() string {
	id := "rebuild-observe"
	r.plan.Add(plan.Step{
		ID: id, Title: "Observe the cluster through the healthy servers",
		Check: func(ctx context.Context, log func(string)) (plan.Verdict, error) {
			j, inProgress, err := r.b.Local.Rebuild(r.t.Name)
			if err != nil {
				return plan.Verdict{}, err
			}
			var others []profiles.Node
			for _, s := range r.s.Servers() {
				if s.Name != r.t.Name {
					others = append(others, s)
				}
			}
			errs := r.observeK3s(ctx, others)
			for _, s := range others {
				if err := errs[s.Name]; err != nil {
					log(fmt.Sprintf("%s cannot be asked: %v", s.Name, err))
				}
			}
			via, err := r.via()
			if err != nil {
				return plan.Verdict{}, fmt.Errorf("%w; with no server left, the cluster can only be restored from a snapshot: labctl restore %s --snapshot NAME (labctl snapshot list %s)", err, r.p.Metadata.Name, r.p.Metadata.Name)
			}
			e, err := r.observeEtcd(ctx, via, log)
			if err != nil {
				return plan.Verdict{}, err
			}
			r.facts.SetEtcd(e)
			if inProgress {
				r.facts.SetRebuild(&j)
				log(fmt.Sprintf("continuing the rebuild of %s begun %s", r.t.Name, j.Started.Format(time.RFC3339)))
			} else {
				j = facts.Rebuild{Node: r.t.Name, Started: r.o.Now()}
				if m, ok := e.At(r.t.Address); ok && r.t.Role == profiles.RoleServer {
					j.Member = &m
				}
				r.facts.SetRebuild(&j)
			}
			if r.t.Role == profiles.RoleServer {
				// First: without quorum the API cannot answer either.
				if err := r.quorum(e, j); err != nil {
					return plan.Verdict{}, err
				}
			}
			kns, err := r.b.Ops.ObserveKubeNodes(ctx, via)
			if err != nil {
				return plan.Verdict{}, err
			}
			r.facts.SetKubeNodes(kns)
			healthy, why := r.healthy()
			if healthy && !inProgress && !r.o.Confirmed {
				return plan.Verdict{}, fmt.Errorf("%w: %s (%s); it is rebuilt only with --yes or the typed confirmation, after a drain", ErrNodeHealthy, r.t.Name, why)
			}
			if r.s.Proxmox == nil && !j.MachineReplaced {
				// A given host is rebuilt where it is: the machine must be
				// back (reinstalled) and its host key known or replaced,
				// before anything in the cluster changes.
				k, err := r.b.K3s.ObserveK3s(ctx, r.t)
				if err != nil {
					return plan.Verdict{}, fmt.Errorf("%s must answer SSH before its rebuild begins (a given host is rebuilt in place: reinstall it, then run the rebuild): %w", r.t.Name, err)
				}
				r.facts.Update(r.t.Name, func(fn *facts.Node) { fn.K3s = &k })
			}
			state := "down"
			if healthy {
				state = "healthy, rebuilt as confirmed"
			}
			return plan.InPlace("through %s: etcd %s; %s is %s (%s)", via.Name, e.Summary(), r.t.Name, state, why), nil
		},
		Run: func(context.Context, *plan.Exec) error { return nil },
	})
	return id
}

// ElectionWait is how long a rebuild asks etcd again while enough
// members answer for a quorum but some know no leader: the election
// after the loss of the leader (the dead node may have been it) takes
// an election timeout and more on a loaded or slow-disk machine, and a
// rebuild begun in that window must not be refused as if quorum were
// lost (Options can shorten it).
const ElectionWait = 30 * time.Second

// observeEtcd reads etcd through via; while a quorum of members answers
// and some of them know no leader it asks again every 2 s, up to ElectionWait, and then
// returns what it saw, for the quorum guard to judge.
func (r *rebuild) observeEtcd(ctx context.Context, via profiles.Node, log func(string)) (facts.Etcd, error) {
	wait := r.o.ElectionWait
	if wait == 0 {
		wait = ElectionWait
	}
	var e facts.Etcd
	start, waited := time.Now(), false
	_, err := poll(ctx, wait, func() (bool, error) {
		var err error
		e, err = r.b.Ops.ObserveEtcd(ctx, via)
		if err != nil {
			return false, err
		}
		electing := r.t.Role == profiles.RoleServer && e.Answering() >= facts.Quorum(len(e.Members)) && (e.Leader == "" || e.Leaderless() > 0)
		if electing && !waited {
			log(fmt.Sprintf("etcd: %d of %d members answer, %d of them knowing no leader (an election after a member's loss?); asking again for up to %s", e.Answering(), len(e.Members), e.Leaderless(), wait))
		}
		waited = waited || electing
		return !electing, nil
	})
	if err != nil {
		return facts.Etcd{Via: via.Name}, err
	}
	if waited && e.Leader != "" {
		log(fmt.Sprintf("etcd: a leader is elected, seen after %s", time.Since(start).Round(time.Second)))
	}
	return e, nil
}

// quorum refuses unless etcd has quorum now and the members left after
// the target's removal are a majority of the new membership.
func (r *rebuild) quorum(e facts.Etcd, j facts.Rebuild) error {
	var rest []facts.Member
	healthyRest := 0
	for _, m := range e.Members {
		if m.Host() == r.t.Address || (j.Member != nil && m.ID == j.Member.ID) {
			continue
		}
		rest = append(rest, m)
		if m.Started() && !m.Learner && m.Healthy {
			healthyRest++
		}
	}
	members := e.Summary()
	switch {
	case !e.HasQuorum():
		return fmt.Errorf("%w: etcd has no quorum now (%d of %d members answer, %d healthy with a leader, a quorum needs %d): %s; nothing was changed: a rebuild needs the other servers healthy; with quorum lost, restore from a snapshot: labctl restore %s --snapshot NAME (labctl snapshot list %s)",
			ErrQuorum, e.Answering(), len(e.Members), e.HealthyVoters(), facts.Quorum(len(e.Members)), members, r.p.Metadata.Name, r.p.Metadata.Name)
	case healthyRest < facts.Quorum(len(rest)):
		return fmt.Errorf("%w: removing %s's member leaves %d healthy of %d members, less than the %d a quorum needs: %s; nothing was changed: bring the other servers back first",
			ErrQuorum, r.t.Name, healthyRest, len(rest), facts.Quorum(len(rest)), members)
	}
	return nil
}

// snapshot adds the step saving an etcd snapshot on a healthy server and
// copying it into local state: no snapshot, no removal.
func (r *rebuild) snapshot(after string) string {
	id := "etcd-snapshot"
	r.plan.Add(plan.Step{
		ID: id, Title: "Save an etcd snapshot first", After: []string{after},
		Check: func(context.Context, func(string)) (plan.Verdict, error) {
			j := r.journal()
			switch {
			case j.Snapshot != nil:
				return plan.InPlace("snapshot %s taken for this rebuild, kept at %s", j.Snapshot.Name, j.Snapshot.Path), nil
			case j.MemberRemoved || j.Member == nil:
				return plan.InPlace("no etcd member of %s to remove: nothing to snapshot for", r.t.Name), nil
			}
			return plan.ToDo("no snapshot taken for this rebuild yet"), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			via, err := r.via()
			if err != nil {
				return err
			}
			snap, err := r.saveSnapshot(x, via, "labctl-pre-rebuild-"+r.t.Name, "before the rebuild of "+r.t.Name)
			if err != nil {
				return err
			}
			return r.record(x, func(j *facts.Rebuild) { j.Snapshot = &snap })
		},
	})
	return id
}

// drain adds the step cordoning and draining the target when it still
// runs.
func (r *rebuild) drain(after string) string {
	id := "drain/" + r.t.Name
	r.plan.Add(plan.Step{
		ID: id, Title: "Drain the node", Host: r.t.Name, After: []string{after},
		Check: func(context.Context, func(string)) (plan.Verdict, error) {
			j := r.journal()
			if j.MemberRemoved {
				return plan.InPlace("its Node was removed earlier in this rebuild"), nil
			}
			if ok, why := r.healthy(); !ok {
				return plan.InPlace("%s is down (%s): nothing to drain", r.t.Name, why), nil
			}
			return plan.ToDo("%s still runs: its pods move first", r.t.Name), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			via, err := r.via()
			if err != nil {
				return err
			}
			if err := x.Wet("cordon Node "+r.t.Name+" (through the API on "+via.Name+")", func(ctx context.Context) error { return r.b.Ops.Cordon(ctx, via, r.t.Name) }); err != nil {
				return err
			}
			return x.Wet("drain Node "+r.t.Name+": evict its pods, PodDisruptionBudgets respected (DaemonSet pods stay)", func(ctx context.Context) error { return r.b.Ops.Drain(ctx, via, r.t.Name) })
		},
	})
	return id
}

// MemberRemovalWait is how long K3s gets to remove a deleted Node's etcd
// member before labctl removes it through etcd's API (Options can
// shorten it).
const MemberRemovalWait = 60 * time.Second

// removeMember adds the step deleting the target's Node (K3s then
// removes its etcd member and node-password Secret), confirmed from the
// member list, with etcd's API as the fallback.
func (r *rebuild) removeMember(after string) string {
	id := "remove-member/" + r.t.Name
	r.plan.Add(plan.Step{
		ID: id, Title: "Remove the node's Node and etcd member", After: []string{after},
		Check: func(ctx context.Context, _ func(string)) (plan.Verdict, error) {
			j := r.journal()
			if j.MemberRemoved {
				return plan.InPlace("%s's Node and member were removed earlier in this rebuild", r.t.Name), nil
			}
			var left []string
			if _, ok := r.facts.KubeNode(r.t.Name); ok {
				left = append(left, "Node "+r.t.Name)
			}
			if j.Member != nil {
				e, _ := r.facts.Etcd()
				if m, ok := e.Named(j.Member.Name); ok {
					left = append(left, "etcd member "+m.String())
				}
			}
			if len(left) == 0 {
				via, err := r.via()
				if err != nil {
					return plan.Verdict{}, err
				}
				if has, err := r.b.Ops.HasNodePassword(ctx, via, r.t.Name); err != nil || has {
					return plan.ToDo("its node-password Secret is left"), err
				}
				return plan.InPlace("no Node, etcd member or node-password Secret of %s left", r.t.Name), nil
			}
			return plan.ToDo("still there: %s", joinWords(left)), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			via, err := r.via()
			if err != nil {
				return err
			}
			j := r.journal()
			_, hadNode := r.facts.KubeNode(r.t.Name)
			if hadNode {
				what := fmt.Sprintf("delete Node %s (through the API on %s): K3s removes its etcd member and its node-password Secret", r.t.Name, via.Name)
				if r.t.Role == profiles.RoleAgent {
					what = fmt.Sprintf("delete Node %s (through the API on %s): K3s removes its node-password Secret", r.t.Name, via.Name)
				}
				if err := x.Wet(what, func(ctx context.Context) error { return r.b.Ops.DeleteNode(ctx, via, r.t.Name) }); err != nil {
					return err
				}
			}
			if m := j.Member; m != nil {
				if err := r.confirmRemoved(x, via, *m); err != nil {
					return err
				}
			}
			// K3s deletes the Secret with the Node; a dry run cannot see
			// what it will leave, a real run looks.
			if !x.DryRun() || !hadNode {
				has, err := r.b.Ops.HasNodePassword(ctx, via, r.t.Name)
				if err != nil {
					return err
				}
				if has {
					if err := x.Wet(fmt.Sprintf("delete the leftover Secret kube-system/%s.node-password.k3s", r.t.Name), func(ctx context.Context) error { return r.b.Ops.DeleteNodePassword(ctx, via, r.t.Name) }); err != nil {
						return err
					}
				}
			}
			return r.record(x, func(j *facts.Rebuild) { j.MemberRemoved = true })
		},
	})
	return id
}

// confirmRemoved waits until no member of that identity remains, and
// removes it through etcd's API if K3s did not within
// memberRemovalWait.
func (r *rebuild) confirmRemoved(x *plan.Exec, via profiles.Node, m facts.Member) error {
	gone := func(ctx context.Context) (bool, error) {
		e, err := r.b.Ops.ObserveEtcd(ctx, via)
		if err != nil {
			return false, err
		}
		r.facts.SetEtcd(e)
		_, there := e.Named(m.Name)
		return !there, nil
	}
	removed := false
	wait := r.o.MemberRemovalWait
	if wait == 0 {
		wait = MemberRemovalWait
	}
	if err := x.Wait(fmt.Sprintf("K3s to remove etcd member %s (up to %s)", m.Name, wait), func(ctx context.Context) error {
		var err error
		removed, err = poll(ctx, wait, func() (bool, error) { return gone(ctx) })
		return err
	}); err != nil {
		return err
	}
	if removed {
		return nil
	}
	if err := x.Wet(fmt.Sprintf("remove etcd member %s (%s) through etcd's API on %s, if K3s left it", m.Name, m.ID, via.Name), func(ctx context.Context) error { return r.b.Ops.RemoveMember(ctx, via, m) }); err != nil {
		return err
	}
	return x.Wait("no etcd member at "+m.Host(), func(ctx context.Context) error {
		ok, err := poll(ctx, 30*time.Second, func() (bool, error) { return gone(ctx) })
		if err == nil && !ok {
			err = fmt.Errorf("etcd member %s still listed", m.Name)
		}
		return err
	})
}

// poll asks cond every 2 s until it holds or timeout passes.
func poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) (bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil || ok {
			return ok, err
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// destroyVM adds the step purging the target's old VM (labctl's only).
func (r *rebuild) destroyVM(after string) string {
	id := "vm-destroy/" + r.t.Name
	r.plan.Add(plan.Step{
		ID: id, Title: "Destroy the old VM", Host: r.t.Name, After: []string{after},
		Check: func(ctx context.Context, _ func(string)) (plan.Verdict, error) {
			if r.journal().MachineReplaced {
				return plan.InPlace("the old VM was destroyed earlier in this rebuild"), nil
			}
			vm, err := r.b.VMs.ObserveVM(ctx, r.t)
			switch {
			case err != nil:
				return plan.Verdict{}, err
			case !vm.Exists:
				return plan.InPlace("no VM %q left", r.t.Name), nil
			case !vm.Managed:
				return plan.Verdict{}, fmt.Errorf("node %s: VM %d %q was not created by labctl for profile %s: labctl rebuilds only its own VMs", r.t.Name, vm.VMID, r.t.Name, r.p.Metadata.Name)
			}
			return plan.ToDo("%s", vm.Reason()), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			if err := x.Wet(fmt.Sprintf("stop and purge VM %s with its disks", vmRef(r.t)), func(ctx context.Context) error {
				_, err := r.b.VMs.DestroyVM(ctx, r.t)
				return err
			}); err != nil {
				return err
			}
			r.facts.Update(r.t.Name, func(fn *facts.Node) { fn.VM = &facts.VM{Planned: x.DryRun()}; fn.K3s = &facts.K3s{} })
			return r.record(x, func(j *facts.Rebuild) { j.MachineReplaced = true })
		},
	})
	return id
}

// cleanHost adds the step removing old K3s from a given host: its data
// must not rejoin (etcd refuses a stale member; K3s would reuse it).
func (r *rebuild) cleanHost(after string) string {
	id := "host-clean/" + r.t.Name
	r.plan.Add(plan.Step{
		ID: id, Title: "Remove the old K3s from the host", Host: r.t.Name, After: []string{after},
		Check: func(ctx context.Context, _ func(string)) (plan.Verdict, error) {
			if r.journal().MachineReplaced {
				return plan.InPlace("old K3s removed earlier in this rebuild"), nil
			}
			k, err := r.b.K3s.ObserveK3s(ctx, r.t)
			if err != nil {
				return plan.Verdict{}, err
			}
			r.facts.Update(r.t.Name, func(fn *facts.Node) { fn.K3s = &k })
			if !k.Installed && !k.HasData {
				return plan.InPlace("no K3s on %s: a fresh machine", r.t.Name), nil
			}
			return plan.ToDo("%s", k.Reason()), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			if err := x.Wet("uninstall K3s (k3s-uninstall.sh) and remove its server data: the old member must not rejoin", func(ctx context.Context) error { return r.b.K3s.Uninstall(ctx, r.t) }); err != nil {
				return err
			}
			r.facts.Update(r.t.Name, func(fn *facts.Node) { fn.K3s = &facts.K3s{} })
			return r.record(x, func(j *facts.Rebuild) { j.MachineReplaced = true })
		},
	})
	return id
}

// joinHealthy is the rebuild's join rule: a healthy server, never
// cluster-init, whichever node is rebuilt.
func (r *rebuild) joinHealthy(profiles.Node) (*profiles.Node, error) {
	via, err := r.via()
	if err != nil {
		return nil, err
	}
	return &via, nil
}

// finish adds the step closing the journal.
func (r *rebuild) finish(after string) {
	r.plan.Add(plan.Step{
		ID: "rebuild-done", Title: "Close the rebuild", After: []string{after},
		Check: func(context.Context, func(string)) (plan.Verdict, error) {
			return plan.ToDo("%s is back", r.t.Name), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			j := r.journal()
			what := fmt.Sprintf("forget the rebuild journal of %s", r.t.Name)
			if j.Snapshot != nil {
				what += fmt.Sprintf(" (the snapshot stays: %s)", j.Snapshot.Path)
			}
			return x.Wet(what, func(context.Context) error { return r.b.Local.ForgetRebuild(r.t.Name) })
		},
	})
}
