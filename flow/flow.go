// Package flow turns a profile into the plan of steps that creates its
// cluster: VMs (Proxmox) → host prerequisites → K3s init → joins one at a
// time → kubeconfig → Flux for SSH nodes, or k3d cluster → kubeconfig →
// Flux for a k3d profile. Each step routes its changes through
// plan.Exec.Wet, so `labctl plan` prints what `create` would do.
//
// The providers behind the steps are small interfaces defined here, where
// they are consumed; provision/ and bootstrap/ implement them.
package flow

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3s"
	"github.com/labctl/labctl/provision/prereq"
	"github.com/labctl/labctl/provision/proxmox"
)

// VMs creates the nodes' virtual machines (provision/proxmox).
type VMs interface {
	// ObserveVM reports the node's VM as Proxmox has it.
	ObserveVM(ctx context.Context, n profiles.Node) (proxmox.State, error)
	CloneVM(ctx context.Context, n profiles.Node) error
	ConfigureVM(ctx context.Context, n profiles.Node) error
	StartVM(ctx context.Context, n profiles.Node) error
}

// Hosts prepares machines reached over SSH (provision/nodes).
type Hosts interface {
	WaitSSH(ctx context.Context, n profiles.Node) error
	// PrerequisiteFixes observes the host and returns what is missing and
	// what labctl cannot fix (the kernel's limits), as warnings.
	PrerequisiteFixes(ctx context.Context, n profiles.Node) (fixes []prereq.Fix, warnings []string, err error)
	ApplyPrerequisite(ctx context.Context, n profiles.Node, fix prereq.Fix) error
}

// K3s installs and joins K3s over SSH (provision/k3s). join is the server
// a node joins, nil for the node that initialises the cluster.
type K3s interface {
	// Decide observes the servers and says where the cluster comes from.
	Decide(ctx context.Context) (k3s.Decision, error)
	// Installed reports whether n already runs K3s as a cluster member.
	Installed(ctx context.Context, n profiles.Node) (bool, error)
	WriteToken(ctx context.Context, n profiles.Node) error
	WriteConfig(ctx context.Context, n profiles.Node, join *profiles.Node) error
	Install(ctx context.Context, n profiles.Node) error
	WaitMember(ctx context.Context, n profiles.Node) error
	WriteKubeconfig(ctx context.Context) error
	// KubeconfigCurrent reports whether the merged kubeconfig is current.
	KubeconfigCurrent(ctx context.Context) (bool, error)
}

// K3d creates a k3d cluster (provision/k3d).
type K3d interface {
	// Observe reports whether the cluster exists; one of another shape is
	// an error (labctl does not reshape clusters).
	Observe(ctx context.Context) (bool, error)
	CreateCluster(ctx context.Context) error
	WaitNodes(ctx context.Context) error
	WriteKubeconfig(ctx context.Context) error
	KubeconfigCurrent(ctx context.Context) (bool, error)
}

// Flux bootstraps GitOps (bootstrap/).
type Flux interface {
	// Observe reports whether Flux already syncs the profile's repository
	// and path with every Kustomization Ready; a flux-system syncing
	// another path is an error unless forced.
	Observe(ctx context.Context) (bool, error)
	SeedSecret(ctx context.Context, namespace, name string, ref profiles.SecretRef) error
	Install(ctx context.Context) error
	WaitKustomizations(ctx context.Context) error
}

// Backends are the providers a real run needs. A dry run needs none: its
// steps record their changes and never call a provider.
type Backends struct {
	VMs   VMs
	Hosts Hosts
	K3s   K3s
	K3d   K3d
	Flux  Flux
	// NoFlux is set by Cluster, whose plan has no Flux step.
	NoFlux bool
}

// Options shape the flow.
type Options struct {
	// DryRun builds the plan for `labctl plan`, which needs no providers.
	DryRun bool
	// Kubeconfig is the file the cluster's context is merged into.
	Kubeconfig string
}

// ErrNoBackend is returned when a real run lacks a provider it needs.
var ErrNoBackend = errors.New("no provider")

// Create builds the create plan for a validated profile.
func Create(p *profiles.Profile, b Backends, o Options) (*plan.Plan, error) {
	return build(p, b, o, true)
}

// Cluster builds Create without Flux: the machines, their prerequisites,
// K3s and the kubeconfig for SSH nodes; the k3d cluster and the
// kubeconfig for a k3d profile.
func Cluster(p *profiles.Profile, b Backends, o Options) (*plan.Plan, error) {
	if len(p.Spec.Nodes) == 0 && p.Spec.K3d == nil {
		return nil, fmt.Errorf("profile %s has neither SSH nodes nor a k3d cluster", p.Metadata.Name)
	}
	b.NoFlux = true
	return build(p, b, o, false)
}

func build(p *profiles.Profile, b Backends, o Options, withFlux bool) (*plan.Plan, error) {
	if o.Kubeconfig == "" {
		o.Kubeconfig = "~/.kube/config"
	}
	if !o.DryRun {
		if err := b.check(&p.Spec, true); err != nil {
			return nil, err
		}
	}
	f := &builder{p: p, b: b, o: o, plan: plan.New(p.Metadata.Name)}
	if p.Spec.K3d != nil {
		f.k3d()
	} else {
		f.cluster(f.machines())
	}
	if withFlux {
		f.flux()
	}
	return f.plan, nil
}

// Prepare builds the first part of Create for SSH nodes: the machines (VMs
// when the profile has Proxmox) and their host prerequisites, without K3s.
func Prepare(p *profiles.Profile, b Backends, o Options) (*plan.Plan, error) {
	if len(p.Spec.Nodes) == 0 {
		return nil, fmt.Errorf("profile %s has no SSH nodes to prepare", p.Metadata.Name)
	}
	if !o.DryRun {
		if err := b.check(&p.Spec, false); err != nil {
			return nil, err
		}
	}
	f := &builder{p: p, b: b, o: o, plan: plan.New(p.Metadata.Name + " (prepare)")}
	f.machines()
	return f.plan, nil
}

func (b Backends) check(s *profiles.Spec, cluster bool) error {
	var missing []string
	if s.Proxmox != nil && b.VMs == nil {
		missing = append(missing, "Proxmox VMs")
	}
	if len(s.Nodes) > 0 && b.Hosts == nil {
		missing = append(missing, "SSH hosts")
	}
	if cluster && len(s.Nodes) > 0 && b.K3s == nil {
		missing = append(missing, "K3s")
	}
	if cluster && s.K3d != nil && b.K3d == nil {
		missing = append(missing, "k3d")
	}
	if cluster && b.Flux == nil && !b.NoFlux {
		missing = append(missing, "Flux")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w for %s", ErrNoBackend, strings.Join(missing, ", "))
	}
	return nil
}

type builder struct {
	p    *profiles.Profile
	b    Backends
	o    Options
	plan *plan.Plan
	last string // the step the cluster-wide tail waits for
}

// machines adds the VM and prerequisite steps per node and returns, per
// node, the last of them (the step K3s on that node waits for), if any.
func (f *builder) machines() map[string]string {
	s := &f.p.Spec
	ready := map[string]string{}
	for _, n := range s.Nodes {
		if s.Proxmox != nil {
			clone, start := "vm-clone/"+n.Name, "vm-start/"+n.Name
			var vm *proxmox.State // observed by the clone step's Check
			cloneStep := plan.Step{
				ID: clone, Title: "Clone and configure VM", Host: n.Name,
				Run: func(ctx context.Context, x *plan.Exec) error { return f.cloneVM(ctx, x, n, vm) },
			}
			startStep := plan.Step{
				ID: start, Title: "Start VM and wait for SSH", Host: n.Name, After: []string{clone},
				Run: func(ctx context.Context, x *plan.Exec) error {
					if err := x.Wet("start VM "+vmRef(n), func(ctx context.Context) error { return f.b.VMs.StartVM(ctx, n) }); err != nil {
						return err
					}
					return x.Wait(fmt.Sprintf("SSH on %s:%d", n.Address, s.SSH.Port), func(ctx context.Context) error { return f.b.Hosts.WaitSSH(ctx, n) })
				},
			}
			if f.b.VMs != nil {
				cloneStep.Check = func(ctx context.Context, log func(string)) (bool, error) {
					st, err := f.b.VMs.ObserveVM(ctx, n)
					if err != nil {
						return false, err
					}
					vm = &st
					for _, note := range st.Notes {
						log(note)
					}
					return st.Exists && st.Lock == "" && st.Configured && len(st.Drift) == 0, nil
				}
				startStep.Check = func(ctx context.Context, log func(string)) (bool, error) {
					if x := vm; x != nil && !x.Exists {
						return false, nil // not cloned yet (a plan): it will be started
					}
					st, err := f.b.VMs.ObserveVM(ctx, n)
					return st.Running, err
				}
			}
			f.plan.Add(cloneStep, startStep)
			ready[n.Name] = start
		}
		if s.Storage.Longhorn == nil {
			continue
		}
		pre := "prerequisites/" + n.Name
		var observed []prereq.Fix // what Check found missing, for Run
		dataPath := s.Storage.Longhorn.DataPath
		step := plan.Step{
			ID: pre, Title: "Install host prerequisites", Host: n.Name, After: nonEmpty(ready[n.Name]),
			Run: func(ctx context.Context, x *plan.Exec) error {
				fixes := observed
				if f.b.Hosts == nil {
					fixes = prereq.Fixes(nil, dataPath) // a plan that observed nothing: a fresh host
				}
				for _, fix := range fixes {
					err := x.Wet(fix.Desc, func(ctx context.Context) error { return f.b.Hosts.ApplyPrerequisite(ctx, n, fix) })
					var kw *prereq.KernelWarning
					if errors.As(err, &kw) {
						x.Log("warning: " + kw.Error())
						continue
					}
					if err != nil {
						return err
					}
				}
				return nil
			},
		}
		if f.b.Hosts != nil {
			step.Check = func(ctx context.Context, log func(string)) (bool, error) {
				var warnings []string
				var err error
				observed, warnings, err = f.b.Hosts.PrerequisiteFixes(ctx, n)
				for _, w := range warnings {
					log("warning: " + w)
				}
				return len(observed) == 0, err
			}
		}
		f.plan.Add(step)
		ready[n.Name] = pre
	}
	return ready
}

// cluster adds K3s (init, joins one server at a time, agents), the
// kubeconfig, after each node's machine steps.
func (f *builder) cluster(ready map[string]string) {
	s := &f.p.Spec
	first := s.Servers()[0]
	// Where the cluster comes from is decided from observed state: a new
	// cluster only when no server has cluster data (k3s.Decide), so a
	// re-run never cluster-inits beside existing members.
	decision := k3s.Decision{Init: &first, Via: first}
	var inspectAfter []string
	for _, m := range s.Servers() {
		if r := ready[m.Name]; r != "" {
			inspectAfter = append(inspectAfter, r)
		}
	}
	f.plan.Add(plan.Step{
		ID: "k3s-inspect", Title: "Inspect K3s servers", After: inspectAfter,
		Run: func(ctx context.Context, x *plan.Exec) error {
			if f.b.K3s == nil {
				x.Log("not observed: assuming no server runs K3s yet")
				return nil
			}
			d, err := f.b.K3s.Decide(ctx)
			if err != nil {
				return err
			}
			decision = d
			if d.Init != nil {
				x.Log(fmt.Sprintf("no server has cluster data: %s initialises a new cluster", d.Init.Name))
			} else {
				x.Log(fmt.Sprintf("a cluster exists: the others join it through %s", d.Via.Name))
			}
			return nil
		},
	})
	// joinTarget is nil for the node that initialises, else the server to join.
	joinTarget := func(n profiles.Node) *profiles.Node {
		if decision.Init != nil && decision.Init.Name == n.Name {
			return nil
		}
		via := decision.Via
		return &via
	}
	k3sStep := func(id, title string, n profiles.Node, after []string) plan.Step {
		st := plan.Step{
			ID: id, Title: title, Host: n.Name, After: after,
			Run: func(ctx context.Context, x *plan.Exec) error { return f.installK3s(ctx, x, n, joinTarget(n)) },
		}
		if f.b.K3s != nil {
			st.Check = func(ctx context.Context, _ func(string)) (bool, error) { return f.b.K3s.Installed(ctx, n) }
		}
		return st
	}
	initID := "k3s-init/" + first.Name
	f.plan.Add(k3sStep(initID, "Initialise K3s cluster", first, []string{"k3s-inspect"}))
	tail := []string{initID}
	for _, n := range s.Nodes {
		if n.Name == first.Name {
			continue
		}
		step := k3sStep("k3s-join/"+n.Name, "Join K3s agent", n, nonEmpty(initID, ready[n.Name]))
		if n.Role == profiles.RoleServer {
			// etcd changes membership one member at a time: a second join
			// while the first is still catching up can cost the quorum.
			step.Title, step.Serial = "Join K3s server", "etcd-join"
		}
		f.plan.Add(step)
		tail = append(tail, step.ID)
	}
	var current func(context.Context, func(string)) (bool, error)
	if f.b.K3s != nil {
		current = func(ctx context.Context, _ func(string)) (bool, error) { return f.b.K3s.KubeconfigCurrent(ctx) }
	}
	f.kubeconfig(tail, fmt.Sprintf("https://%s:6443", first.Address), func(ctx context.Context) error { return f.b.K3s.WriteKubeconfig(ctx) }, current)
}

// cloneVM clones and configures the node's VM from what the step's Check
// observed (nil when nothing was: a plan of fresh machines).
func (f *builder) cloneVM(ctx context.Context, x *plan.Exec, n profiles.Node, vm *proxmox.State) error {
	s := &f.p.Spec
	configure := func(what string) error {
		return x.Wet(what, func(ctx context.Context) error { return f.b.VMs.ConfigureVM(ctx, n) })
	}
	switch {
	case vm == nil || !vm.Exists:
		if err := x.Wet(cloneChange(s, n), func(ctx context.Context) error { return f.b.VMs.CloneVM(ctx, n) }); err != nil {
			return err
		}
		return configure(configureChange(s, n))
	case vm.Lock != "":
		return vm.Problem(n, s.Proxmox.Node)
	case !vm.Managed:
		return configure(fmt.Sprintf("take over VM %d %q, which labctl did not create (needs --apply-drift): %s", vm.VMID, n.Name, vm.DriftSummary()))
	case !vm.Configured:
		x.Log(fmt.Sprintf("VM %d was cloned by an interrupted run: adopting it", vm.VMID))
		return configure(configureChange(s, profiles.Node{Name: n.Name, Address: n.Address, Role: n.Role, VMID: vm.VMID}))
	}
	return configure(fmt.Sprintf("change VM %d %q to match the profile (drift; needs --apply-drift): %s", vm.VMID, n.Name, vm.DriftSummary()))
}

// installK3s writes the node's K3s config, runs the installer and waits
// until the node (and, for a server, its etcd member) is in the cluster.
func (f *builder) installK3s(ctx context.Context, x *plan.Exec, n profiles.Node, join *profiles.Node) error {
	s := &f.p.Spec
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
		wait = fmt.Sprintf("k3s-agent on %s to run", n.Name)
	}
	return x.Wait(wait, func(ctx context.Context) error { return f.b.K3s.WaitMember(ctx, n) })
}

func (f *builder) k3d() {
	s := &f.p.Spec
	k := s.K3d
	step := plan.Step{
		ID: "k3d-cluster", Title: "Create k3d cluster", Host: dockerHostLabel(k),
		Run: func(ctx context.Context, x *plan.Exec) error {
			if err := x.Wet(k3dChange(s), func(ctx context.Context) error { return f.b.K3d.CreateCluster(ctx) }); err != nil {
				return err
			}
			return x.Wait(fmt.Sprintf("%d nodes Ready", k.Servers+k.Agents), func(ctx context.Context) error { return f.b.K3d.WaitNodes(ctx) })
		},
	}
	var current func(context.Context, func(string)) (bool, error)
	if f.b.K3d != nil {
		step.Check = func(ctx context.Context, _ func(string)) (bool, error) { return f.b.K3d.Observe(ctx) }
		current = func(ctx context.Context, _ func(string)) (bool, error) { return f.b.K3d.KubeconfigCurrent(ctx) }
	}
	f.plan.Add(step)
	f.kubeconfig([]string{"k3d-cluster"}, fmt.Sprintf("https://%s:%d", k.APIHost, k.APIPort), func(ctx context.Context) error { return f.b.K3d.WriteKubeconfig(ctx) }, current)
}

// kubeconfig adds the step merging the cluster's context; current, when
// given, observes whether the merged file is already up to date.
func (f *builder) kubeconfig(after []string, server string, fn func(context.Context) error, current func(context.Context, func(string)) (bool, error)) {
	name := f.p.Metadata.Name
	f.plan.Add(plan.Step{
		ID: "kubeconfig", Title: "Merge kubeconfig", After: after, Check: current,
		Run: func(ctx context.Context, x *plan.Exec) error {
			return x.Wet(fmt.Sprintf("merge context %q (server %s) into %s, other contexts untouched", name, server, f.o.Kubeconfig), fn)
		},
	})
	f.last = "kubeconfig"
}

func (f *builder) flux() {
	s := &f.p.Spec
	fx := s.Flux
	var check func(context.Context, func(string)) (bool, error)
	if f.b.Flux != nil {
		check = func(ctx context.Context, _ func(string)) (bool, error) { return f.b.Flux.Observe(ctx) }
	}
	f.plan.Add(plan.Step{
		ID: "flux", Title: "Bootstrap Flux", After: []string{f.last}, Check: check,
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
}

// kustomizationOrder renders the dependsOn chains: "a → b → c; d → e".
func kustomizationOrder(ks []profiles.FluxKustomization) string {
	children := map[string][]string{}
	var roots []string
	for _, k := range ks {
		if len(k.DependsOn) == 0 {
			roots = append(roots, k.Name)
		}
		for _, d := range k.DependsOn {
			children[d] = append(children[d], k.Name)
		}
	}
	var chains []string
	var walk func(name, prefix string)
	walk = func(name, prefix string) {
		chain := prefix + name
		if len(children[name]) == 0 {
			chains = append(chains, chain)
			return
		}
		for _, c := range children[name] {
			walk(c, chain+" → ")
		}
	}
	for _, r := range roots {
		walk(r, "")
	}
	return strings.Join(chains, "; ")
}

func nonEmpty(ids ...string) []string {
	var out []string
	for _, id := range ids {
		if id != "" {
			out = append(out, id)
		}
	}
	return out
}

func vmRef(n profiles.Node) string {
	if n.VMID == 0 {
		return fmt.Sprintf("%q (next free id)", n.Name)
	}
	return fmt.Sprintf("%d %q", n.VMID, n.Name)
}

func cloneChange(s *profiles.Spec, n profiles.Node) string {
	px := s.Proxmox
	return fmt.Sprintf("full-clone template %q on Proxmox node %q to VM %s on storage %s", px.Template, px.Node, vmRef(n), px.Storage)
}

func configureChange(s *profiles.Spec, n profiles.Node) string {
	px := s.Proxmox
	bits := 24
	if pfx, err := netip.ParsePrefix(s.Network.Subnet); err == nil {
		bits = pfx.Bits()
	}
	ci := []string{"user " + s.SSH.User, fmt.Sprintf("ipconfig0 ip=%s/%d,gw=%s", n.Address, bits, s.Network.Gateway)}
	if len(s.Network.Nameservers) > 0 {
		ci = append(ci, "nameserver "+strings.Join(s.Network.Nameservers, " "))
	}
	if s.Network.SearchDomain != "" {
		ci = append(ci, "searchdomain "+s.Network.SearchDomain)
	}
	if len(px.SSHKeys) > 0 {
		ci = append(ci, "SSH keys from "+strings.Join(px.SSHKeys, ", "))
	}
	bridge := px.Bridge
	if bridge == "" {
		bridge = "vmbr0"
	}
	return fmt.Sprintf("configure VM %s\n%d cores, %d MiB memory, disk %d GiB, net0 on %s, QEMU guest agent on\ncloud-init: %s",
		vmRef(n), px.VM.Cores, px.VM.MemoryMiB, px.VM.DiskGiB, bridge, strings.Join(ci, ", "))
}

func k3dChange(s *profiles.Spec) string {
	k := s.K3d
	var ports []string
	for _, p := range k.Ports {
		ports = append(ports, fmt.Sprintf("%d:%d@%s", p.HostPort, p.ContainerPort, p.NodeFilter))
	}
	docker := "the local Docker"
	switch {
	case k.DockerHost != "":
		docker = "Docker at " + k.DockerHost
	case k.DockerContext != "":
		docker = "Docker context " + k.DockerContext
	}
	return fmt.Sprintf("create k3d cluster %q on %s: %d server + %d agents, image %s, ports %s, API %s:%d",
		k.ClusterName, docker, k.Servers, k.Agents, k.Image, strings.Join(ports, " "), k.APIHost, k.APIPort)
}

// dockerHostLabel names the machine a k3d cluster runs on.
func dockerHostLabel(k *profiles.K3d) string {
	dockerHost := k.DockerHost
	switch {
	case dockerHost == "" && k.DockerContext != "":
		return "context:" + k.DockerContext
	case dockerHost == "" || strings.HasPrefix(dockerHost, "unix://"):
		return "local-docker"
	}
	if u, err := url.Parse(dockerHost); err == nil && u.Hostname() != "" {
		return u.Hostname()
	}
	return dockerHost
}
