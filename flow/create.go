package flow

import (
	"fmt"
	"net"
	"strconv"

	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3s"
)

// Create builds the create plan for a validated profile: VMs (Proxmox) →
// host prerequisites → K3s init → joins one at a time → kubeconfig → Flux
// for SSH nodes, or k3d cluster → kubeconfig → Flux for a k3d profile.
func Create(p *profiles.Profile, b Backends, o Options) (*plan.Plan, error) {
	return buildCreate(p, b, o, true)
}

// Cluster builds Create without Flux.
func Cluster(p *profiles.Profile, b Backends, o Options) (*plan.Plan, error) {
	if len(p.Spec.Nodes) == 0 && p.Spec.K3d == nil {
		return nil, fmt.Errorf("profile %s has neither SSH nodes nor a k3d cluster", p.Metadata.Name)
	}
	return buildCreate(p, b, o, false)
}

func buildCreate(p *profiles.Profile, b Backends, o Options, withFlux bool) (*plan.Plan, error) {
	f := newBuilder(p, b, o, p.Metadata.Name)
	s := f.s
	dockerHost, _, tuned := s.DockerHostMachine()
	tuned = tuned && s.Hosts != nil
	if err := f.need(s.Proxmox != nil, len(s.Nodes) > 0 || tuned, len(s.Nodes) > 0, s.K3d != nil, withFlux); err != nil {
		return nil, err
	}
	var last string
	if s.K3d != nil {
		k := s.K3d
		var after []string
		if tuned {
			// The Docker host's kernel limits are every node
			// container's: tuned before the first container starts.
			after = []string{f.prerequisites(dockerHost, nil)}
		}
		last = f.kubeconfig([]string{f.k3dCluster(after)}, "https://"+net.JoinHostPort(k.APIHost, strconv.Itoa(k.APIPort)), b.K3d)
	} else {
		last = f.cluster(f.machines())
	}
	if withFlux {
		f.flux([]string{last})
	}
	return f.plan, nil
}

// Prepare builds the first part of Create for SSH nodes: the machines (VMs
// when the profile has Proxmox) and their host prerequisites, without K3s.
func Prepare(p *profiles.Profile, b Backends, o Options) (*plan.Plan, error) {
	if len(p.Spec.Nodes) == 0 {
		return nil, fmt.Errorf("profile %s has no SSH nodes to prepare", p.Metadata.Name)
	}
	f := newBuilder(p, b, o, p.Metadata.Name+" (prepare)")
	if err := f.need(p.Spec.Proxmox != nil, true, false, false, false); err != nil {
		return nil, err
	}
	f.machines()
	return f.plan, nil
}

// machines adds the VM and prerequisite steps per node and returns, per
// node, the last of them (the step K3s on that node waits for), if any.
func (f *builder) machines() map[string]string {
	ready := map[string]string{}
	for _, n := range f.s.Nodes {
		if f.s.Proxmox != nil {
			ready[n.Name] = f.vm(n, nil)
		}
		if hostWants(f.s, n) {
			ready[n.Name] = f.prerequisites(n, nonEmpty(ready[n.Name]))
		}
	}
	return ready
}

// hostWants: node n has prerequisites to install (Longhorn's, the
// profile's host tuning, or, on a server, the etcd disk's mount).
func hostWants(s *profiles.Spec, n profiles.Node) bool {
	return s.Storage.Longhorn != nil || s.Hosts != nil || n.Role == profiles.RoleServer && s.K3s.EtcdMount != ""
}

// cluster adds K3s (inspect, init, joins one server at a time, agents)
// and the kubeconfig, after each node's machine steps; it returns the
// kubeconfig step.
func (f *builder) cluster(ready map[string]string) string {
	first := f.s.Servers()[0]
	var all []string
	for _, n := range f.s.Nodes {
		all = append(all, nonEmpty(ready[n.Name])...)
	}
	inspect := f.inspectK3s(all)
	initID := f.installK3s("k3s-init/"+first.Name, "Initialise K3s cluster", first, []string{inspect}, "", f.joinRunning)
	tail := []string{initID}
	for _, n := range f.s.Nodes {
		if n.Name == first.Name {
			continue
		}
		id, title, serial := "k3s-join/"+n.Name, "Join K3s agent", ""
		if n.Role == profiles.RoleServer {
			// etcd changes membership one member at a time: a second join
			// while the first is still catching up can cost the quorum.
			title, serial = "Join K3s server", "etcd-join"
		}
		tail = append(tail, f.installK3s(id, title, n, []string{initID}, serial, f.joinRunning))
	}
	return f.kubeconfig(tail, k3s.ServerURL(first), f.b.K3s)
}
