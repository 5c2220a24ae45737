package flow

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3s"
)

// The step library: each function adds one step (or two) for one node
// or for the cluster and returns the ID of the step that comes last, for
// the next step to wait on. Checks record what they observe in f.facts;
// Runs read it there and record what they changed, so a later step (or a
// dry run's later step) sees the cluster as it will be.

// vm adds the clone and start steps of n's VM.
func (f *builder) vm(n profiles.Node, after []string) string {
	clone, start := "vm-clone/"+n.Name, "vm-start/"+n.Name
	f.plan.Add(plan.Step{
		ID: clone, Title: "Clone and configure VM", Host: n.Name, After: after,
		Check: func(ctx context.Context, log func(string)) (plan.Verdict, error) {
			if vm := f.facts.Node(n.Name).VM; vm != nil && vm.Planned && !vm.Exists {
				return plan.ToDo("no VM once the dry run's earlier step destroyed it"), nil
			}
			vm, err := f.b.VMs.ObserveVM(ctx, n)
			if err != nil {
				return plan.Verdict{}, err
			}
			f.facts.Update(n.Name, func(fn *facts.Node) { fn.VM = &vm })
			for _, note := range vm.Notes {
				log(note)
			}
			return plan.Verdict{Done: vm.AsPlanned(), Reason: vm.Reason()}, nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error { return f.cloneVM(x, n) },
	})
	f.plan.Add(plan.Step{
		ID: start, Title: "Start VM and wait for SSH", Host: n.Name, After: []string{clone},
		Check: func(context.Context, func(string)) (plan.Verdict, error) {
			vm := f.facts.Node(n.Name).VM
			if vm != nil && vm.Running {
				return plan.InPlace("VM %d running", vm.VMID), nil
			}
			return plan.ToDo("VM %s is stopped", vmRef(n)), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			if err := x.Wet("start VM "+vmRef(n), func(ctx context.Context) error { return f.b.VMs.StartVM(ctx, n) }); err != nil {
				return err
			}
			f.facts.Update(n.Name, func(fn *facts.Node) {
				if fn.VM != nil {
					fn.VM.Running = true
				}
			})
			return x.Wait(fmt.Sprintf("SSH on %s:%d", n.Address, f.s.SSH.Port), func(ctx context.Context) error { return f.b.Hosts.WaitSSH(ctx, n) })
		},
	})
	return start
}

// cloneVM clones and configures the node's VM from what its Check
// observed.
func (f *builder) cloneVM(x *plan.Exec, n profiles.Node) error {
	vm := f.facts.Node(n.Name).VM
	configure := func(what string) error {
		err := x.Wet(what, func(ctx context.Context) error { return f.b.VMs.ConfigureVM(ctx, n) })
		if err == nil {
			f.facts.Update(n.Name, func(fn *facts.Node) {
				// A VM a dry run only plans to clone cannot be read yet.
				v := facts.VM{Exists: true, Managed: true, Configured: true, VMID: n.VMID, Planned: x.DryRun()}
				if fn.VM != nil && fn.VM.Exists {
					v.VMID, v.Running, v.Planned = fn.VM.VMID, fn.VM.Running, fn.VM.Planned
				}
				fn.VM = &v
			})
		}
		return err
	}
	switch {
	case vm == nil || !vm.Exists:
		if err := x.Wet(cloneChange(f.s, n), func(ctx context.Context) error { return f.b.VMs.CloneVM(ctx, n) }); err != nil {
			return err
		}
		return configure(configureChange(f.s, n))
	case vm.Lock != "":
		return vm.Problem(n.Name, f.s.Proxmox.Node)
	case !vm.Managed:
		return configure(fmt.Sprintf("take over VM %d %q, which labctl did not create (needs --apply-drift): %s", vm.VMID, n.Name, facts.Changes(vm.Drift)))
	case !vm.Configured:
		x.Log(fmt.Sprintf("VM %d was cloned by an interrupted run: adopting it", vm.VMID))
		return configure(configureChange(f.s, profiles.Node{Name: n.Name, Address: n.Address, Role: n.Role, VMID: vm.VMID}))
	}
	return configure(fmt.Sprintf("change VM %d %q to match the profile (drift; needs --apply-drift): %s", vm.VMID, n.Name, facts.Changes(vm.Drift)))
}

// machineMissing: n's VM is known not to exist yet (a plan of a machine
// still to be made), so nothing on it can be observed.
func (f *builder) machineMissing(n profiles.Node) bool {
	vm := f.facts.Node(n.Name).VM
	return vm != nil && (!vm.Exists || vm.Planned)
}

// prerequisites adds the step installing n's host prerequisites.
func (f *builder) prerequisites(n profiles.Node, after []string) string {
	id, title := "prerequisites/"+n.Name, "Install host prerequisites"
	if n.Role == profiles.RoleDockerHost {
		title = "Tune the Docker host"
	}
	f.plan.Add(plan.Step{
		ID: id, Title: title, Host: n.Name, After: after,
		Check: func(ctx context.Context, log func(string)) (plan.Verdict, error) {
			var pr facts.Prerequisites
			if f.machineMissing(n) {
				pr = f.b.Hosts.AssumeFresh(n)
			} else {
				var err error
				if pr, err = f.b.Hosts.ObservePrerequisites(ctx, n); err != nil {
					return plan.Verdict{}, err
				}
			}
			f.facts.Update(n.Name, func(fn *facts.Node) { fn.Prereq = &pr })
			for _, w := range pr.Warnings {
				log("warning: " + w)
			}
			if len(pr.Refused) > 0 {
				return plan.Verdict{}, fmt.Errorf("%w on %s, nothing was changed there: %s", ErrPrerequisiteRefused, n.Name, strings.Join(pr.Refused, "; "))
			}
			if len(pr.Fixes) == 0 {
				return plan.InPlace("prerequisites in place"), nil
			}
			if pr.Assumed {
				return plan.ToDo("a fresh machine: everything to install"), nil
			}
			return plan.ToDo("missing: %s", fixItems(pr.Fixes)), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			pr := f.facts.Node(n.Name).Prereq
			if pr == nil {
				return fmt.Errorf("%s: prerequisites not observed", n.Name)
			}
			for _, fix := range pr.Fixes {
				var warning string
				err := x.Wet(fix.Desc, func(ctx context.Context) error {
					var err error
					warning, err = f.b.Hosts.ApplyPrerequisite(ctx, n, fix)
					return err
				})
				if err != nil {
					return err
				}
				if warning != "" {
					x.Log("warning: " + warning)
				}
			}
			f.facts.Update(n.Name, func(fn *facts.Node) { fn.Prereq = &facts.Prerequisites{} })
			return nil
		},
	})
	return id
}

func fixItems(fs []facts.Fix) string {
	items := make([]string, len(fs))
	for i, x := range fs {
		items[i] = x.Item
	}
	return strings.Join(items, ", ")
}

// observeK3s reads K3s on every node of ns in parallel into the facts; a
// node whose machine is not made yet is assumed to run nothing. It
// returns each node's error.
func (f *builder) observeK3s(ctx context.Context, ns []profiles.Node) map[string]error {
	errs := map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range ns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := facts.K3s{}
			var err error
			if !f.machineMissing(n) {
				k, err = f.b.K3s.ObserveK3s(ctx, n)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[n.Name] = err
				return
			}
			f.facts.Update(n.Name, func(fn *facts.Node) { fn.K3s = &k })
		}()
	}
	wg.Wait()
	return errs
}

// inspectK3s adds the step that observes K3s on every node, refuses
// drift, and decides where the cluster comes from: a new cluster only
// when no server has cluster data, so a re-run never cluster-inits beside
// existing members.
func (f *builder) inspectK3s(after []string) string {
	id := "k3s-inspect"
	f.plan.Add(plan.Step{
		ID: id, Title: "Inspect K3s", After: after,
		Check: func(ctx context.Context, log func(string)) (plan.Verdict, error) {
			errs := f.observeK3s(ctx, f.s.Nodes)
			var states []k3s.ServerState
			for _, n := range f.s.Servers() {
				st := k3s.ServerState{Node: n, Err: errs[n.Name]}
				if k := f.facts.Node(n.Name).K3s; k != nil {
					st.HasData, st.Active, st.CAHash = k.HasData, k.Active, k.CAHash
				}
				states = append(states, st)
			}
			d, err := k3s.Decide(states)
			if err != nil {
				return plan.Verdict{}, err
			}
			for _, n := range f.s.Agents() {
				if err := errs[n.Name]; err != nil {
					return plan.Verdict{}, err
				}
			}
			if err := f.drift(f.s.Nodes, log); err != nil {
				return plan.Verdict{}, err
			}
			if d.Init != nil {
				return plan.InPlace("no server has cluster data: %s initialises a new cluster", d.Init.Name), nil
			}
			return plan.InPlace("a cluster exists: the others join it through %s", d.Via.Name), nil
		},
		Run: func(context.Context, *plan.Exec) error { return nil },
	})
	return id
}

// drift refuses nodes whose K3s differs from the profile, listing every
// difference of every node.
func (f *builder) drift(ns []profiles.Node, log func(string)) error {
	d := &DriftError{}
	for _, n := range ns {
		k := f.facts.Node(n.Name).K3s
		if k == nil {
			continue
		}
		if cs := k3s.Drift(f.s, n, *k); len(cs) > 0 {
			d.Nodes = append(d.Nodes, NodeDrift{Node: n.Name, Changes: cs})
			log(fmt.Sprintf("drift on %s: %s", n.Name, driftLine(cs)))
		}
	}
	if len(d.Nodes) > 0 {
		return d
	}
	return nil
}

// joinRule says which server n joins when it is installed: nil for the
// node that initialises the cluster.
type joinRule func(n profiles.Node) (*profiles.Node, error)

// joinRunning joins the first server, in profile order, that runs a
// cluster member; with none, n initialises the cluster (create's rule,
// safe because the inspect step refused any server with data but no
// running K3s).
func (f *builder) joinRunning(n profiles.Node) (*profiles.Node, error) {
	return f.runningServer(n.Name), nil
}

// runningServer is the first server other than except that runs K3s with
// cluster data, as observed (or as the plan will have made it).
func (f *builder) runningServer(except ...string) *profiles.Node {
	for _, s := range f.s.Servers() {
		if slices.Contains(except, s.Name) {
			continue
		}
		if k := f.facts.Node(s.Name).K3s; k != nil && k.HasData && k.Active {
			return &s
		}
	}
	return nil
}

// installK3s adds the step that installs K3s on n (token, config.yaml,
// the installer) and waits until n is in the cluster.
func (f *builder) installK3s(id, title string, n profiles.Node, after []string, serial string, join joinRule) string {
	f.plan.Add(plan.Step{
		ID: id, Title: title, Host: n.Name, After: after, Serial: serial,
		Check: func(ctx context.Context, _ func(string)) (plan.Verdict, error) {
			k := f.facts.Node(n.Name).K3s
			if k == nil && !f.machineMissing(n) {
				// Not observed by an earlier step (a rebuild resumed
				// after its machine was replaced): ask the node.
				obs, err := f.b.K3s.ObserveK3s(ctx, n)
				if err != nil {
					return plan.Verdict{}, err
				}
				f.facts.Update(n.Name, func(fn *facts.Node) { fn.K3s = &obs })
				k = &obs
			}
			switch {
			case k == nil || !k.Installed:
				return plan.ToDo("k3s not installed"), nil
			case !k.Active:
				return plan.ToDo("%s", k.Reason()), nil
			case !k.TokenMatches:
				return plan.ToDo("%s, but its token file is not the profile's cluster token", k.Reason()), nil
			case len(k3s.Drift(f.s, n, *k)) > 0:
				return plan.ToDo("%s, differing from the profile: %s", k.Reason(), driftLine(k3s.Drift(f.s, n, *k))), nil
			}
			if err := f.b.K3s.CheckMember(ctx, n, k.Member); err != nil {
				return plan.ToDo("%s, not in the cluster yet: %v", k.Reason(), err), nil
			}
			what := "a started etcd member with a Ready Node"
			if n.Role == profiles.RoleAgent {
				what = "its Node Ready"
			}
			return plan.InPlace("%s, config.yaml as rendered, %s", k.Reason(), what), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			via, err := join(n)
			if err != nil {
				return err
			}
			return f.runInstall(x, n, via)
		},
	})
	return id
}

// runInstall writes n's K3s config, runs the installer and waits until
// the node (and, for a server, its etcd member) is in the cluster.
func (f *builder) runInstall(x *plan.Exec, n profiles.Node, join *profiles.Node) error {
	s := f.s
	token := "from local state, generated once"
	if s.K3s.TokenRef != nil {
		token = "from " + s.K3s.TokenRef.String()
	}
	if err := x.Wet(fmt.Sprintf("write the cluster token to %s (0600, %s)", k3s.TokenPath, token), func(ctx context.Context) error { return f.b.K3s.WriteToken(ctx, n) }); err != nil {
		return err
	}
	cfg := k3s.NodeConfig(s, n, join)
	if err := x.Wet(fmt.Sprintf("write %s (%s)", k3s.ConfigPath, cfg.Summary()), func(ctx context.Context) error { return f.b.K3s.WriteConfig(ctx, n, join) }); err != nil {
		return err
	}
	in := k3s.InstallFor(s, n)
	what := "run " + in.Command
	for _, u := range in.Uploads {
		what += fmt.Sprintf("\nafter uploading %s to %s", u.Local, u.Remote)
	}
	if err := x.Wet(what, func(ctx context.Context) error { return f.b.K3s.Install(ctx, n) }); err != nil {
		return err
	}
	wait := fmt.Sprintf("%s to be a started etcd member with a Ready Node", n.Name)
	if n.Role == profiles.RoleAgent {
		wait = fmt.Sprintf("k3s-agent on %s to run and its Node to be Ready", n.Name)
	}
	if err := x.Wait(wait, func(ctx context.Context) error { return f.b.K3s.WaitMember(ctx, n) }); err != nil {
		return err
	}
	unit := "k3s"
	if n.Role == profiles.RoleAgent {
		unit = "k3s-agent"
	}
	f.facts.Update(n.Name, func(fn *facts.Node) {
		fn.K3s = &facts.K3s{Installed: true, Unit: unit, Active: true, Version: s.K3s.Version, HasData: n.Role == profiles.RoleServer,
			TokenMatches: true, Config: cfg.Render()}
	})
	return nil
}

// kubeconfig adds the step merging the cluster's context.
func (f *builder) kubeconfig(after []string, server string, kc Kubeconfig) string {
	name := f.p.Metadata.Name
	f.plan.Add(plan.Step{
		ID: "kubeconfig", Title: "Merge kubeconfig", After: after,
		Check: func(ctx context.Context, _ func(string)) (plan.Verdict, error) {
			c, err := kc.KubeconfigCurrent(ctx)
			if err != nil {
				return plan.Verdict{}, err
			}
			if c.Current {
				return plan.InPlace("context %q current (server %s)", name, c.Server), nil
			}
			return plan.ToDo("context %q missing or not current in %s", name, f.o.Kubeconfig), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			return x.Wet(fmt.Sprintf("merge context %q (server %s) into %s, other contexts untouched", name, server, f.o.Kubeconfig), kc.WriteKubeconfig)
		},
	})
	return "kubeconfig"
}

// flux adds the Flux bootstrap step.
func (f *builder) flux(after []string) string {
	s := f.s
	fx := s.Flux
	f.plan.Add(plan.Step{
		ID: "flux", Title: "Bootstrap Flux", After: after,
		Check: func(ctx context.Context, _ func(string)) (plan.Verdict, error) {
			st, err := f.b.Flux.Observe(ctx)
			return plan.Verdict{Done: st.InPlace, Reason: st.Reason}, err
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			seed := func(ns, name string, ref profiles.SecretRef) error {
				return x.Wet(fmt.Sprintf("seed secret %s/%s from %s", ns, name, ref), func(ctx context.Context) error { return f.b.Flux.SeedSecret(ctx, ns, name, ref) })
			}
			if c := s.Certificates; c != nil {
				if err := seed(c.DNS01.SecretNamespace, c.DNS01.SecretName, c.DNS01.APITokenRef); err != nil {
					return err
				}
			}
			if fx.SOPSAgeKeyRef != nil {
				if err := seed("flux-system", "sops-age", *fx.SOPSAgeKeyRef); err != nil {
					return err
				}
			}
			auth := "a generated SSH deploy key"
			switch {
			case fx.DeployKeyRef != nil:
				auth = "the SSH key from " + fx.DeployKeyRef.String()
			case fx.TokenRef != nil:
				auth = "user " + fx.Username + " with the token from " + fx.TokenRef.String()
			}
			install := fmt.Sprintf("install Flux and commit %s/flux-system to %s (branch %s, %s)", strings.TrimPrefix(fx.Path, "./"), fx.URL, fx.Branch, auth)
			if err := x.Wet(install, func(ctx context.Context) error { return f.b.Flux.Install(ctx) }); err != nil {
				return err
			}
			return x.Wait("Kustomizations Ready in order: "+kustomizationOrder(fx.Kustomizations), func(ctx context.Context) error { return f.b.Flux.WaitKustomizations(ctx) })
		},
	})
	return "flux"
}

// k3dCluster adds the step creating the k3d cluster.
func (f *builder) k3dCluster(after []string) string {
	k := f.s.K3d
	f.plan.Add(plan.Step{
		ID: "k3d-cluster", Title: "Create k3d cluster", Host: dockerHostLabel(k), After: after,
		Check: func(ctx context.Context, _ func(string)) (plan.Verdict, error) {
			c, err := f.b.K3d.Observe(ctx)
			if err != nil {
				return plan.Verdict{}, err
			}
			if c.Exists {
				return plan.InPlace("k3d cluster %q exists: %s", k.ClusterName, c.Shape), nil
			}
			return plan.ToDo("no k3d cluster %q on %s", k.ClusterName, dockerName(k)), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			if err := x.Wet(k3dChange(f.s), func(ctx context.Context) error { return f.b.K3d.CreateCluster(ctx) }); err != nil {
				return err
			}
			return x.Wait(fmt.Sprintf("%d nodes Ready", k.Servers+k.Agents), func(ctx context.Context) error { return f.b.K3d.WaitNodes(ctx) })
		},
	})
	return "k3d-cluster"
}

// removeContext adds the step removing the profile's kubeconfig context.
func (f *builder) removeContext(after []string, kc Kubeconfig) string {
	name := f.p.Metadata.Name
	f.plan.Add(plan.Step{
		ID: "kubeconfig-remove", Title: "Remove kubeconfig context", After: after,
		Check: func(ctx context.Context, _ func(string)) (plan.Verdict, error) {
			has, err := kc.HasContext(ctx)
			if err != nil {
				return plan.Verdict{}, err
			}
			if !has {
				return plan.InPlace("no context %q in %s", name, f.o.Kubeconfig), nil
			}
			return plan.ToDo("context %q in %s", name, f.o.Kubeconfig), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			return x.Wet(fmt.Sprintf("remove context %q from %s, other contexts untouched", name, f.o.Kubeconfig), func(ctx context.Context) error {
				_, err := kc.RemoveContext(ctx)
				return err
			})
		},
	})
	return "kubeconfig-remove"
}

// saveSnapshot saves an etcd snapshot on server on, named name and the
// time (K3s appends the node and the time again to the file), copies it
// into local state (0600) with a note of why and where its cluster token
// is, and returns the local copy. No snapshot, no change after it: its
// failure stops the flow.
func (f *builder) saveSnapshot(x *plan.Exec, on profiles.Node, name, reason string) (facts.Snapshot, error) {
	taken := f.o.Now()
	name = fmt.Sprintf("%s-%s", name, taken.UTC().Format("20060102-150405"))
	var snap facts.Snapshot
	if err := x.Wet(fmt.Sprintf("save etcd snapshot %s on %s (k3s etcd-snapshot save)", name, on.Name), func(ctx context.Context) error {
		var err error
		snap, err = f.b.Ops.SaveSnapshot(ctx, on, name)
		return err
	}); err != nil {
		return snap, err
	}
	if snap.Name == "" {
		snap.Name = name // a dry run: K3s appends the node and the time
	}
	local := f.b.Local.SnapshotPath(snap.Name)
	kept := facts.Snapshot{Name: snap.Name, Node: on.Name, Path: local, Size: snap.Size}
	token := "the cluster token kept in local state beside the snapshots (cluster-token)"
	if ref := f.s.K3s.TokenRef; ref != nil {
		token = "spec.k3s.tokenRef (" + ref.String() + ")"
	}
	if err := x.Wet(fmt.Sprintf("copy it into local state: %s (0600)", local), func(ctx context.Context) error {
		if err := f.b.Ops.FetchSnapshot(ctx, on, snap, local); err != nil {
			return err
		}
		return f.b.Local.RecordSnapshot(kept, reason, token, taken)
	}); err != nil {
		return snap, err
	}
	x.Log("snapshot kept at " + local)
	return kept, nil
}
