package verify

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/profiles"
)

// DBSizeWarn is etcd's default backend quota (2 GiB) times 0.8: past the
// quota etcd refuses writes.
const DBSizeWarn = 2 << 30 * 8 / 10

// MachineChecks compare each node's VM with the plan.
func MachineChecks(s *profiles.Spec, vms map[string]facts.VM, err error) Report {
	var r Report
	for _, n := range s.Nodes {
		switch v, ok := vms[n.Name]; {
		case err != nil:
			r.add(GroupMachines, "vm", n.Name, Fail, "Proxmox VE did not answer: "+err.Error(), "the VM as planned, running")
		case !ok || !v.Exists:
			r.add(GroupMachines, "vm", n.Name, Fail, "no VM", "the VM as planned, running (labctl rebuild "+n.Name+")")
		case !v.AsPlanned() || !v.Running:
			r.add(GroupMachines, "vm", n.Name, Fail, v.Reason(), "the VM as planned, running")
		default:
			r.ok(GroupMachines, "vm", n.Name, v.Reason())
		}
	}
	return r
}

// SSHCheck is the node's SSH login and host key: err is why it failed.
func SSHCheck(n profiles.Node, err error) Report {
	var r Report
	if err != nil {
		r.add(GroupMachines, "ssh", n.Name, Fail, err.Error(), "a login with the host key in known_hosts")
	} else {
		r.ok(GroupMachines, "ssh", n.Name, "logged in, host key matches known_hosts")
	}
	return r
}

// EtcdChecks are the embedded etcd's membership, leader, failure margin
// and database size, as seen through one server.
func EtcdChecks(s *profiles.Spec, e *facts.Etcd, err error) Report {
	var r Report
	servers := s.Servers()
	if err != nil || e == nil {
		r.add(GroupEtcd, "members", "cluster", Fail, fmt.Sprintf("no server's etcd answered: %v", err), fmt.Sprintf("%d members, the profile's servers", len(servers)))
		return r
	}
	var problems, names []string
	for _, n := range servers {
		m, ok := e.At(n.Address)
		switch {
		case !ok:
			problems = append(problems, "no member for "+n.Name+" ("+facts.PeerURL(n.Address)+")")
		case !m.Started():
			problems = append(problems, n.Name+"'s member is added but not started")
		case m.Learner:
			problems = append(problems, n.Name+"'s member is still a learner")
		default:
			names = append(names, m.Name)
		}
	}
	for _, m := range e.Members {
		if !slices.ContainsFunc(servers, func(n profiles.Node) bool { return n.Address == m.Host() }) {
			problems = append(problems, fmt.Sprintf("member %s at %s is no server of the profile (labctl rebuild removes it safely)", m.Name, m.Host()))
		}
	}
	want := fmt.Sprintf("%d started members at the profile's servers' addresses", len(servers))
	obs := fmt.Sprintf("%s through %s", plural(len(e.Members), "member"), e.Via)
	if len(problems) > 0 {
		r.add(GroupEtcd, "members", "cluster", Fail, obs+"; "+strings.Join(problems, "; "), want)
	} else {
		r.ok(GroupEtcd, "members", "cluster", obs+": "+strings.Join(names, ", "))
	}
	if e.Leader == "" {
		r.add(GroupEtcd, "leader", "cluster", Fail, "no member knows a leader", "a leader")
	} else {
		leader := e.Leader
		for _, m := range e.Members {
			if m.ID == e.Leader {
				leader = m.Name
			}
		}
		r.ok(GroupEtcd, "leader", "cluster", leader)
	}
	voters := e.Voters()
	healthy := e.HealthyVoters()
	margin := healthy - facts.Quorum(len(voters))
	obs = fmt.Sprintf("%d of %d voting members healthy, quorum %d", healthy, len(voters), facts.Quorum(len(voters)))
	switch {
	case margin < 0:
		r.add(GroupEtcd, "failure margin", "cluster", Fail, obs+": no quorum (labctl restore)", "survives 1 server down")
	case margin == 0 && len(servers) > 1:
		r.add(GroupEtcd, "failure margin", "cluster", Fail, obs+": one more server down loses quorum", "survives 1 server down")
	case margin == 0:
		r.add(GroupEtcd, "failure margin", "cluster", Warn, obs+": a single server survives no failure", "3 servers survive 1 down")
	default:
		r.ok(GroupEtcd, "failure margin", "cluster", obs+fmt.Sprintf(": survives %s down", plural(margin, "server")))
	}
	var largest int64
	for _, m := range e.Members {
		largest = max(largest, m.DBSize)
	}
	if largest > 0 {
		obs := fmt.Sprintf("largest member database %s of etcd's 2 GiB quota", kib(largest/1024))
		if largest > DBSizeWarn {
			r.add(GroupEtcd, "database size", "cluster", Warn, obs, "under 80% of the quota (compaction and defragmentation)")
		} else {
			r.ok(GroupEtcd, "database size", "cluster", obs)
		}
	}
	return r
}

// roles K3s gives a server's Node.
var serverRoles = []string{"control-plane", "etcd", "master"}

// NodeChecks are the Nodes: every profile node Ready with its roles,
// none left over, no node-password Secret of a removed machine.
func NodeChecks(names []string, servers map[string]bool, a *facts.API, err error) Report {
	var r Report
	if err != nil || a == nil {
		r.add(GroupKube, "nodes", "cluster", Fail, fmt.Sprintf("the API did not answer: %v", err), "every node Ready")
		return r
	}
	for _, name := range names {
		i := slices.IndexFunc(a.Nodes, func(kn facts.KubeNode) bool { return kn.Name == name })
		if i < 0 {
			r.add(GroupKube, "node", name, Fail, "no Node "+name, "Ready")
			continue
		}
		kn := a.Nodes[i]
		want := "Ready, roles " + orNone(nil)
		var roles []string
		if servers[name] {
			roles = serverRoles
			want = "Ready, roles " + strings.Join(roles, ",")
		}
		obs := kn.Reason() + ", roles " + orNone(kn.Roles)
		switch {
		case !kn.Ready:
			r.add(GroupKube, "node", name, Fail, obs, want)
		case !containsAll(kn.Roles, roles):
			r.add(GroupKube, "node", name, Fail, obs, want)
		case kn.Unschedulable:
			r.add(GroupKube, "node", name, Warn, obs+", cordoned", want+", schedulable (kubectl uncordon "+name+")")
		default:
			r.ok(GroupKube, "node", name, obs)
		}
	}
	var stale, orphans []string
	for _, kn := range a.Nodes {
		if !slices.Contains(names, kn.Name) {
			stale = append(stale, kn.Name)
		}
	}
	for _, sec := range a.Secrets {
		if node, ok := strings.CutSuffix(strings.TrimPrefix(sec, "kube-system/"), facts.NodePasswordSuffix); ok && strings.HasPrefix(sec, "kube-system/") {
			if !slices.Contains(names, node) && !slices.Contains(stale, node) {
				orphans = append(orphans, node)
			}
		}
	}
	if len(stale) > 0 {
		r.add(GroupKube, "stale nodes", "cluster", Fail, "Nodes of no profile node: "+strings.Join(stale, ", "), "only the profile's nodes (kubectl delete node "+strings.Join(stale, " ")+")")
	} else {
		r.ok(GroupKube, "stale nodes", "cluster", "none")
	}
	if len(orphans) > 0 {
		r.add(GroupKube, "node passwords", "cluster", Warn, "node-password Secrets of removed machines: "+strings.Join(orphans, ", "), "none (a new machine of that name would be refused)")
	} else {
		r.ok(GroupKube, "node passwords", "cluster", "none left over")
	}
	return r
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// StorageChecks are the default StorageClass and Longhorn's settings.
func StorageChecks(s *profiles.Spec, a *facts.API, fluxDone bool) Report {
	var r Report
	if a == nil {
		return r
	}
	var defaults []string
	for _, sc := range a.StorageClasses {
		if sc.Default {
			defaults = append(defaults, sc.Name)
		}
	}
	want := s.Storage.DefaultClass + " the only default StorageClass"
	switch {
	case len(defaults) == 1 && defaults[0] == s.Storage.DefaultClass:
		r.ok(GroupStorage, "default class", "cluster", defaults[0])
	case len(defaults) == 0 && s.Storage.DefaultClass == "longhorn" && a.Longhorn == nil && !fluxDone:
		r.add(GroupStorage, "default class", "cluster", Warn, "no default StorageClass: Longhorn not installed yet (Flux has not reached it)", want)
	default:
		r.add(GroupStorage, "default class", "cluster", Fail, "default: "+orNone(defaults), want)
	}
	if l := s.Storage.Longhorn; l != nil {
		switch {
		case a.Longhorn == nil:
			r.add(GroupStorage, "longhorn", "cluster", Warn, "Longhorn not installed yet (its settings are absent)", fmt.Sprintf("%d replicas, data path %s", l.Replicas, l.DataPath))
		case a.Longhorn.Replicas != fmt.Sprint(l.Replicas) || a.Longhorn.DataPath != l.DataPath:
			r.add(GroupStorage, "longhorn", "cluster", Fail, fmt.Sprintf("%s replicas, data path %s", a.Longhorn.Replicas, a.Longhorn.DataPath), fmt.Sprintf("%d replicas, data path %s", l.Replicas, l.DataPath))
		default:
			r.ok(GroupStorage, "longhorn", "cluster", fmt.Sprintf("%s replicas, data path %s", a.Longhorn.Replicas, a.Longhorn.DataPath))
		}
	}
	return r
}

// IngressChecks: Traefik's Service is a LoadBalancer published on the
// node addresses (ServiceLB), and each address answers HTTP on port 80;
// http maps an address (host:port) to why it did not answer, "" when it
// did.
func IngressChecks(s *profiles.Spec, a *facts.API, addrs []string, http map[string]string) Report {
	var r Report
	if a != nil && s.Ingress.LoadBalancer == "servicelb" {
		want := "type LoadBalancer on " + strings.Join(addrs, ", ")
		switch {
		case a.Ingress == nil:
			r.add(GroupIngress, "traefik service", "cluster", Fail, "no Service "+facts.IngressNamespace+"/"+facts.IngressService, want)
		case a.Ingress.Type != "LoadBalancer":
			r.add(GroupIngress, "traefik service", "cluster", Fail, "type "+a.Ingress.Type, want)
		default:
			got := slices.Sorted(slices.Values(a.Ingress.IPs))
			wantIPs := slices.Sorted(slices.Values(addrs))
			if slices.Equal(got, wantIPs) {
				r.ok(GroupIngress, "traefik service", "cluster", "LoadBalancer on "+strings.Join(got, ", "))
			} else {
				r.add(GroupIngress, "traefik service", "cluster", Fail, "LoadBalancer on "+orNone(got), want)
			}
		}
	}
	for _, addr := range slices.Sorted(maps.Keys(http)) {
		if why := http[addr]; why != "" {
			r.add(GroupIngress, "http", addr, Fail, why, "an HTTP answer from Traefik")
		} else {
			r.ok(GroupIngress, "http", addr, "answers HTTP")
		}
	}
	return r
}

// FluxChecks: flux-system syncs the profile's repository, branch and
// path at the source's latest revision, every Kustomization is Ready,
// and the graph the repository declares is the profile's.
func FluxChecks(s *profiles.Spec, f *facts.FluxState, err error) Report {
	var r Report
	want := fmt.Sprintf("%s branch %s, path %s", s.Flux.URL, s.Flux.Branch, s.Flux.Path)
	switch {
	case err != nil:
		r.add(GroupFlux, "sync", "flux-system", Fail, "Flux could not be read: "+err.Error(), want)
		return r
	case f == nil:
		r.add(GroupFlux, "sync", "flux-system", Fail, "Flux is not installed", want+" (labctl create)")
		return r
	}
	obs := fmt.Sprintf("%s branch %s, path %s", f.URL, f.Branch, f.Path)
	if f.URL != s.Flux.URL || f.Branch != s.Flux.Branch || strings.TrimPrefix(f.Path, "./") != strings.TrimPrefix(s.Flux.Path, "./") {
		r.add(GroupFlux, "sync", "flux-system", Fail, obs, want)
	} else {
		r.ok(GroupFlux, "sync", "flux-system", obs)
	}
	if !f.SourceReady {
		r.add(GroupFlux, "source", "flux-system", Fail, "GitRepository not Ready: "+f.SourceMessage, "fetched")
	} else {
		r.ok(GroupFlux, "source", "flux-system", "latest revision "+f.Revision)
	}
	for _, k := range f.Kustomization {
		target := k.Name
		if k.Namespace != "flux-system" {
			target = k.Namespace + "/" + k.Name
		}
		want := "Ready at " + f.Revision
		switch {
		case !k.Ready:
			r.add(GroupFlux, "kustomization", target, Fail, "not Ready: "+k.Reason+": "+firstLine(k.Message), want)
		case k.Applied != f.Revision:
			r.add(GroupFlux, "kustomization", target, Warn, "Ready at "+k.Applied+", behind the source", want)
		default:
			r.ok(GroupFlux, "kustomization", target, "Ready at "+k.Applied)
		}
	}
	for _, d := range GraphDifferences(s.Flux.Kustomizations, f.Kustomization) {
		r.add(GroupFlux, "graph", d.Name, d.Status, d.Observed, d.Expected)
	}
	if len(GraphDifferences(s.Flux.Kustomizations, f.Kustomization)) == 0 {
		r.ok(GroupFlux, "graph", "cluster", fmt.Sprintf("%s as the profile lists them", plural(len(s.Flux.Kustomizations), "Kustomization")))
	}
	return r
}

// GraphDifference is one way the repository's Kustomizations differ from
// the profile's expected graph.
type GraphDifference struct {
	Name               string
	Status             Status
	Observed, Expected string
}

// GraphDifferences compares the profile's Kustomizations (name, path,
// dependsOn) with the cluster's: one the profile lists that the
// repository does not define fails; a different path or dependsOn, or a
// Kustomization the profile does not list, is a warn.
func GraphDifferences(want []profiles.FluxKustomization, have []facts.Kustomization) []GraphDifference {
	var out []GraphDifference
	find := func(name string) (facts.Kustomization, bool) {
		for _, k := range have {
			if k.Name == name {
				return k, true
			}
		}
		return facts.Kustomization{}, false
	}
	var defined []string
	for _, k := range have {
		if k.Name != "flux-system" {
			defined = append(defined, k.Name)
		}
	}
	for _, w := range want {
		k, ok := find(w.Name)
		if !ok {
			out = append(out, GraphDifference{w.Name, Fail, "not defined by the repository (it defines " + orNone(defined) + ")", "the profile's Kustomization " + w.Name})
			continue
		}
		wd, hd := slices.Sorted(slices.Values(w.DependsOn)), slices.Sorted(slices.Values(k.DependsOn))
		if !slices.Equal(wd, hd) {
			out = append(out, GraphDifference{w.Name, Warn, "dependsOn " + orNone(hd), "dependsOn " + orNone(wd) + " (the profile's order)"})
		}
		if strings.TrimPrefix(k.Path, "./") != strings.TrimPrefix(w.Path, "./") {
			out = append(out, GraphDifference{w.Name, Warn, "path " + k.Path, "path " + w.Path})
		}
	}
	for _, k := range have {
		if k.Name == "flux-system" || slices.ContainsFunc(want, func(w profiles.FluxKustomization) bool { return w.Name == k.Name }) {
			continue
		}
		out = append(out, GraphDifference{k.Name, Warn, "defined by the repository (path " + k.Path + ", dependsOn " + orNone(k.DependsOn) + "), not in the profile", "listed in spec.flux.kustomizations"})
	}
	return out
}

// SecretChecks: the Secrets labctl seeds exist, and Grafana's admin
// Secret once monitoring is deployed (names only, never values).
func SecretChecks(s *profiles.Spec, a *facts.API) Report {
	var r Report
	if a == nil {
		return r
	}
	for _, sec := range SecretNames(s) {
		ns, name, _ := strings.Cut(sec, "/")
		if a.HasSecret(ns, name) {
			r.ok(GroupSecrets, "secret", sec, "exists")
		} else {
			r.add(GroupSecrets, "secret", sec, Fail, "missing", "seeded by labctl create")
		}
	}
	g := facts.MonitoringNamespace + "/" + facts.GrafanaName
	switch {
	case a.HasSecret(facts.MonitoringNamespace, facts.GrafanaName):
		r.ok(GroupSecrets, "grafana admin", g, "exists")
	case a.Grafana:
		r.add(GroupSecrets, "grafana admin", g, Fail, "Grafana runs without its admin Secret", "the Secret "+g)
	default:
		r.add(GroupSecrets, "grafana admin", g, Warn, "monitoring not deployed yet", "the Secret "+g+" once kube-prometheus-stack runs")
	}
	return r
}

// SecretNames are the Secrets labctl seeds, "namespace/name".
func SecretNames(s *profiles.Spec) []string {
	var out []string
	if c := s.Certificates; c != nil {
		out = append(out, c.DNS01.SecretNamespace+"/"+c.DNS01.SecretName)
	}
	if s.Flux.SOPSAgeKeyRef != nil {
		out = append(out, "flux-system/"+facts.SOPSSecret)
	}
	return out
}

// DNSChecks: each record resolves to exactly its targets.
func DNSChecks(s *profiles.Spec, answers map[string]facts.DNSAnswer, server string) Report {
	var r Report
	via := "the system resolver"
	if server != "" {
		via = server
	}
	for _, rec := range s.DNS.Records {
		a := answers[rec.Name]
		want := strings.Join(slices.Sorted(slices.Values(rec.Targets)), ", ")
		got := slices.Sorted(slices.Values(a.Addrs))
		switch {
		case a.Err != "":
			r.add(GroupDNS, "record", rec.Name, Fail, "does not resolve through "+via+": "+a.Err, want)
		case !slices.Equal(got, slices.Sorted(slices.Values(rec.Targets))):
			r.add(GroupDNS, "record", rec.Name, Fail, strings.Join(got, ", ")+" (through "+via+")", want)
		default:
			r.ok(GroupDNS, "record", rec.Name, strings.Join(got, ", "))
		}
	}
	return r
}

// K3dChecks are a k3d cluster's: its nodes running and Ready, its load
// balancer publishing the profile's ports, the Docker host's disk and
// inotify limits where they can be read.
func K3dChecks(s *profiles.Spec, nodes []facts.K3dNode, nodesErr error, d *facts.DockerHost) Report {
	var r Report
	want := fmt.Sprintf("%d servers and %d agents, running and Ready", s.K3d.Servers, s.K3d.Agents)
	if nodesErr != nil {
		r.add(GroupMachines, "k3d nodes", "cluster", Fail, nodesErr.Error(), want)
	} else {
		var servers, agents int
		var bad []string
		for _, n := range nodes {
			switch n.Role {
			case "server":
				servers++
			case "agent":
				agents++
			default:
				continue
			}
			if !n.Running || !n.Ready {
				bad = append(bad, fmt.Sprintf("%s running=%t Ready=%t", n.Name, n.Running, n.Ready))
			}
		}
		obs := fmt.Sprintf("%d servers, %d agents", servers, agents)
		if servers != s.K3d.Servers || agents != s.K3d.Agents || len(bad) > 0 {
			r.add(GroupMachines, "k3d nodes", "cluster", Fail, obs+"; "+orNone(bad), want)
		} else {
			r.ok(GroupMachines, "k3d nodes", "cluster", obs+", running and Ready")
		}
	}
	if d == nil {
		return r
	}
	var missing []string
	for _, p := range s.K3d.Ports {
		suffix := fmt.Sprintf(":%d->%d", p.HostPort, p.ContainerPort)
		if !slices.ContainsFunc(d.Ports, func(have string) bool { return strings.HasSuffix(have, suffix) }) {
			missing = append(missing, strings.TrimPrefix(suffix, ":"))
		}
	}
	if len(missing) > 0 {
		r.add(GroupIngress, "k3d ports", "cluster", Fail, "published: "+orNone(d.Ports), "the profile's ports "+strings.Join(missing, ", "))
	} else if len(s.K3d.Ports) > 0 {
		r.ok(GroupIngress, "k3d ports", "cluster", "published: "+strings.Join(d.Ports, ", "))
	}
	if d.SizeKB > 0 {
		disk := Disk{Path: d.DataRoot, Device: "Docker data root", SizeKB: d.SizeKB, UsedKB: d.SizeKB - d.FreeKB, FreeKB: d.FreeKB}
		host := HostChecks(&profiles.Spec{}, profiles.Node{Name: "docker host"}, Host{Disks: []Disk{disk}, InotifyWatches: d.InotifyWatches, InotifyInstances: d.InotifyInstances}, time.Time{})
		for _, c := range host.Checks {
			if c.Name == "inotify limits" && d.InotifyWatches == 0 {
				continue
			}
			r.Checks = append(r.Checks, c)
		}
	}
	return r
}

// ServerRoles says which node names are servers.
func ServerRoles(s *profiles.Spec) map[string]bool {
	out := map[string]bool{}
	for _, n := range s.Servers() {
		out[n.Name] = true
	}
	return out
}

// NodeAddresses are the profile nodes' addresses.
func NodeAddresses(s *profiles.Spec) []string {
	var out []string
	for _, n := range s.Nodes {
		out = append(out, n.Address)
	}
	return out
}
