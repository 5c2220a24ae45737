package profiles

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"path"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

var (
	validName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// A POSIX login name as Debian's adduser takes it: it reaches
	// cloud-init, sudoers and shell commands.
	userNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	// A Linux interface name (IFNAMSIZ 16): a Proxmox bridge.
	ifNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,14}$`)
	// A PVE node, VM (template) or storage name.
	pveNameRE    = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$`)
	pveStorageRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,62}$`)
	// A host path labctl creates or mounts: absolute, clean, and plain.
	hostPathRE = regexp.MustCompile(`^(/[A-Za-z0-9._-]+)+$`)
	// An OCI image reference: [registry[:port]/]path[:tag][@digest].
	imageRefRE   = regexp.MustCompile(`^(([a-z0-9]([a-z0-9-]*[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?/)?[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$`)
	k3sVersionRE = regexp.MustCompile(tagOf(K3s{}, "Version", "pattern"))
	dnsNameRE    = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)
)

func tagOf(v any, field, key string) string {
	f, _ := reflect.TypeOf(v).FieldByName(field)
	return f.Tag.Get(key)
}

// Components K3s can disable; Traefik and ServiceLB are K3s defaults the
// architecture keeps, but a user profile may turn them off.
var k3sComponents = map[string]bool{
	"coredns": true, "servicelb": true, "traefik": true, "local-storage": true, "metrics-server": true, "runtimes": true,
}

// checker collects problems located through the walker's position index.
type checker struct {
	locate   func(path string) (string, int)
	problems []Problem
}

func (c *checker) add(path, format string, args ...any) {
	file, line := c.locate(path)
	c.problems = append(c.problems, Problem{File: file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (c *checker) required(path, v string) bool {
	if strings.TrimSpace(v) == "" {
		c.add(path, "required")
		return false
	}
	return true
}

// validate checks a decoded profile's meaning: header, names, addresses,
// quorum, versions, the Flux path and secret references.
func validate(p *Profile, locate func(string) (string, int)) []Problem {
	c := &checker{locate: locate}
	if p.APIVersion != APIVersion {
		c.add("apiVersion", "want %q, got %q", APIVersion, p.APIVersion)
	}
	if p.Kind != Kind {
		c.add("kind", "want %q, got %q", Kind, p.Kind)
	}
	if c.required("metadata.name", p.Metadata.Name) && !validName.MatchString(p.Metadata.Name) {
		c.add("metadata.name", "%q: want lower-case letters, digits and dashes (a DNS label)", p.Metadata.Name)
	}
	s := &p.Spec
	switch s.Environment {
	case EnvStaging, EnvProduction:
	case "":
		c.add("spec.environment", "required: %s or %s", EnvStaging, EnvProduction)
	default:
		c.add("spec.environment", "%q: want %s or %s", s.Environment, EnvStaging, EnvProduction)
	}
	c.k3s(s)
	switch {
	case s.K3d != nil && len(s.Nodes) > 0:
		c.add("spec.k3d", "a profile is either a k3d cluster (spec.k3d) or SSH nodes (spec.nodes), not both")
	case s.K3d != nil:
		c.k3d(s)
	case len(s.Nodes) > 0:
		c.nodes(s)
	default:
		c.add("spec", "no machines: set spec.k3d for a k3d cluster or spec.nodes for K3s over SSH")
	}
	c.storage(s)
	c.ingress(s)
	c.dns(s)
	c.certificates(s)
	c.flux(s)
	c.hosts(s)
	return c.problems
}

func (c *checker) k3s(s *Spec) {
	if c.required("spec.k3s.version", s.K3s.Version) && !k3sVersionRE.MatchString(s.K3s.Version) {
		c.add("spec.k3s.version", "%q: want a K3s release such as v1.33.4+k3s1", s.K3s.Version)
	}
	cluster := c.prefix("spec.k3s.clusterCIDR", s.K3s.ClusterCIDR)
	service := c.prefix("spec.k3s.serviceCIDR", s.K3s.ServiceCIDR)
	if cluster.IsValid() && service.IsValid() && cluster.Overlaps(service) {
		c.add("spec.k3s.serviceCIDR", "%s overlaps clusterCIDR %s", service, cluster)
	}
	for i, d := range s.K3s.Disable {
		if !k3sComponents[d] {
			c.add(fmt.Sprintf("spec.k3s.disable[%d]", i), "%q: K3s can disable %s", d, strings.Join(sortedKeys(k3sComponents), ", "))
		}
	}
	if s.K3s.TokenRef != nil {
		c.secretRef("spec.k3s.tokenRef", *s.K3s.TokenRef)
	}
	if u := s.K3s.InstallScriptURL; u != "" {
		// It is piped into a root shell on every node: never over plain HTTP.
		if strings.HasPrefix(u, "http://") {
			c.add("spec.k3s.installScriptURL", "%q: the script is piped into a root shell on every node; fetch it over https:// (or use spec.k3s.airgap)", RedactURL(u))
		} else {
			c.url("spec.k3s.installScriptURL", u, "https", "file")
		}
	}
	if ag := s.K3s.Airgap; ag != nil {
		c.required("spec.k3s.airgap.binary", ag.Binary)
		c.required("spec.k3s.airgap.installScript", ag.InstallScript)
	}
	if m := s.K3s.EtcdMount; m != "" {
		switch {
		case !hostPathRE.MatchString(m) || path.Clean(m) != m:
			c.add("spec.k3s.etcdMount", "%q: want an absolute, clean path such as /mnt/etcd", m)
		case m == "/" || strings.HasPrefix(m+"/", "/var/lib/rancher/") || strings.HasPrefix(m+"/", "/etc/") || strings.HasPrefix(m+"/", "/proc/"):
			c.add("spec.k3s.etcdMount", "%q: want the mount point of a disk of its own, outside K3s's and the system's directories", m)
		case s.K3d != nil:
			c.add("spec.k3s.etcdMount", "a k3d cluster's etcd lives in its node containers; etcdMount applies to SSH nodes")
		}
	}
	c.k3sConfig("spec.k3s.config", s.K3s.Config, false)
	c.k3sConfig("spec.k3s.agentConfig", s.K3s.AgentConfig, true)
	if len(s.K3s.AgentConfig) > 0 && len(s.Agents()) == 0 && (s.K3d == nil || s.K3d.Agents == 0) {
		c.add("spec.k3s.agentConfig", "the cluster has no agents")
	}
}

func (c *checker) prefix(path, v string) netip.Prefix {
	if !c.required(path, v) {
		return netip.Prefix{}
	}
	pfx, err := netip.ParsePrefix(v)
	if err != nil {
		c.add(path, "%q: want a CIDR such as 10.42.0.0/16", v)
		return netip.Prefix{}
	}
	if pfx.Masked() != pfx {
		c.add(path, "%s has host bits set; did you mean %s?", pfx, pfx.Masked())
	}
	return pfx.Masked()
}

func (c *checker) nodes(s *Spec) {
	var subnet netip.Prefix
	var gw netip.Addr
	if s.Network == nil {
		c.add("spec.network", "required with spec.nodes: the subnet and gateway of the node addresses")
	} else {
		subnet = c.prefix("spec.network.subnet", s.Network.Subnet)
		if c.required("spec.network.gateway", s.Network.Gateway) {
			g, err := netip.ParseAddr(s.Network.Gateway)
			switch {
			case err != nil:
				c.add("spec.network.gateway", "%q is not an IP address", s.Network.Gateway)
			case subnet.IsValid() && !subnet.Contains(g):
				c.add("spec.network.gateway", "%s is outside the subnet %s", g, subnet)
			default:
				gw = g
			}
		}
		for i, ns := range s.Network.Nameservers {
			if _, err := netip.ParseAddr(ns); err != nil {
				c.add(fmt.Sprintf("spec.network.nameservers[%d]", i), "%q is not an IP address", ns)
			}
		}
		if d := s.Network.SearchDomain; d != "" && !dnsNameRE.MatchString(d) {
			c.add("spec.network.searchDomain", "%q is not a DNS name", d)
		}
		if subnet.IsValid() {
			// Pods and Services must not take the nodes' addresses, and
			// labctl renders single-stack K3s: one address family.
			for _, f := range []struct{ path, v string }{{"spec.k3s.clusterCIDR", s.K3s.ClusterCIDR}, {"spec.k3s.serviceCIDR", s.K3s.ServiceCIDR}} {
				pfx, err := netip.ParsePrefix(f.v)
				switch {
				case err != nil:
				case pfx.Addr().Is4() != subnet.Addr().Is4():
					c.add(f.path, "%s and the node subnet %s are of different address families; labctl runs single-stack K3s: use %s ranges for both", pfx, subnet, family(subnet))
				case pfx.Masked().Overlaps(subnet):
					c.add(f.path, "%s overlaps the node subnet %s (spec.network.subnet): pods or Services would take the nodes' addresses", pfx, subnet)
				}
			}
			if s.Proxmox != nil && subnet.Addr().Is6() {
				c.add("spec.network.subnet", "%s: labctl configures the VMs' cloud-init networking for IPv4 only", subnet)
			}
		}
	}
	names := map[string]int{}
	addrs := map[netip.Addr]int{}
	vmids := map[int]int{}
	for i, n := range s.Nodes {
		at := fmt.Sprintf("spec.nodes[%d]", i)
		if c.required(at+".name", n.Name) {
			if !validName.MatchString(n.Name) {
				c.add(at+".name", "%q: want a host name (lower-case letters, digits, dashes)", n.Name)
			} else if j, dup := names[n.Name]; dup {
				c.add(at+".name", "%q is already used by spec.nodes[%d]", n.Name, j)
			} else {
				names[n.Name] = i
			}
		}
		if c.required(at+".address", n.Address) {
			a, err := netip.ParseAddr(n.Address)
			switch {
			case err != nil:
				c.add(at+".address", "%q is not an IP address", n.Address)
			case subnet.IsValid() && !subnet.Contains(a):
				c.add(at+".address", "%s is outside the node subnet %s (spec.network.subnet)", a, subnet)
			case a == gw:
				c.add(at+".address", "%s is the gateway", a)
			case subnet.IsValid() && (a == subnet.Addr() || (a.Is4() && a == lastAddr(subnet))):
				c.add(at+".address", "%s is the network or broadcast address of %s", a, subnet)
			default:
				if j, dup := addrs[a]; dup {
					c.add(at+".address", "%s is already used by spec.nodes[%d] (%s)", a, j, s.Nodes[j].Name)
				} else {
					addrs[a] = i
				}
			}
		}
		switch n.Role {
		case RoleServer, RoleAgent:
		default:
			c.add(at+".role", "%q: want %s or %s", n.Role, RoleServer, RoleAgent)
		}
		if n.VMID != 0 {
			if n.VMID < 100 || n.VMID > 999999999 {
				c.add(at+".vmid", "%d: Proxmox VM ids are 100 to 999999999", n.VMID)
			} else if j, dup := vmids[n.VMID]; dup {
				c.add(at+".vmid", "%d is already used by spec.nodes[%d] (%s)", n.VMID, j, s.Nodes[j].Name)
			} else {
				vmids[n.VMID] = i
			}
		}
	}
	servers := len(s.Servers())
	switch {
	case servers == 0:
		c.add("spec.nodes", "no server: at least one node needs role: server")
	case servers%2 == 0:
		c.add("spec.nodes", "%d servers: embedded etcd needs an odd number of servers for a quorum (1, 3, 5)", servers)
	case s.Environment == EnvProduction && servers != 3:
		c.add("spec.nodes", "%d servers: production runs 3 servers with embedded etcd (quorum 2 of 3)", servers)
	}
	if s.SSH == nil {
		c.add("spec.ssh", "required with spec.nodes: how labctl logs in to the nodes")
	} else {
		if c.required("spec.ssh.user", s.SSH.User) && !userNameRE.MatchString(s.SSH.User) {
			c.add("spec.ssh.user", "%q: want a login name (lower-case letters, digits, _ and -, at most 32)", s.SSH.User)
		}
		if j := s.SSH.JumpHost; j != "" {
			if err := checkJumpHost(j); err != nil {
				c.add("spec.ssh.jumpHost", "%q: %v", j, err)
			}
		}
		if s.SSH.Port < 1 || s.SSH.Port > 65535 {
			c.add("spec.ssh.port", "%d: want 1 to 65535", s.SSH.Port)
		}
		if s.SSH.SudoPasswordRef != nil {
			c.secretRef("spec.ssh.sudoPasswordRef", *s.SSH.SudoPasswordRef)
		}
		if s.SSH.KnownHostsFile == "" {
			c.add("spec.ssh.knownHostsFile", "required: labctl verifies every host key")
		}
	}
	if s.Proxmox != nil {
		c.proxmox(s)
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	host := 32 - p.Bits()
	for i := 3; i >= 0 && host > 0; i-- {
		bits := min(host, 8)
		a[i] |= byte(1<<bits - 1)
		host -= bits
	}
	return netip.AddrFrom4(a)
}

var reFingerprint = regexp.MustCompile(`^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){31}$`)

func (c *checker) proxmox(s *Spec) {
	px := s.Proxmox
	if px.Endpoint != "" {
		c.url("spec.proxmox.endpoint", px.Endpoint, "https")
	}
	c.secretRef("spec.proxmox.tokenRef", px.TokenRef)
	// These reach API paths and parameters: their grammar keeps a value
	// from adding a path segment or a parameter (vmbr0,firewall=0).
	if c.required("spec.proxmox.node", px.Node) && !pveNameRE.MatchString(px.Node) {
		c.add("spec.proxmox.node", "%q: want a Proxmox node name (letters, digits, dashes)", px.Node)
	}
	if c.required("spec.proxmox.template", px.Template) && !pveNameRE.MatchString(px.Template) {
		c.add("spec.proxmox.template", "%q: want a VM name (letters, digits, dots, dashes)", px.Template)
	}
	if c.required("spec.proxmox.storage", px.Storage) && !pveStorageRE.MatchString(px.Storage) {
		c.add("spec.proxmox.storage", "%q: want a Proxmox storage id (letters, digits, _ . -)", px.Storage)
	}
	if px.Bridge != "" && !ifNameRE.MatchString(px.Bridge) {
		c.add("spec.proxmox.bridge", "%q: want a bridge name such as vmbr0 (an interface name: letters, digits, _ . -, at most 15)", px.Bridge)
	}
	if px.CAFile != "" && px.Fingerprint != "" {
		c.add("spec.proxmox.fingerprint", "set either caFile or fingerprint, not both")
	}
	if fp := px.Fingerprint; fp != "" && !reFingerprint.MatchString(fp) {
		c.add("spec.proxmox.fingerprint", "%q: want the certificate's SHA-256 fingerprint, 32 hex bytes as AA:BB:… (PVE: Node → System → Certificates)", fp)
	}
	if px.VM.Cores < 1 {
		c.add("spec.proxmox.vm.cores", "want at least 1")
	}
	if px.VM.MemoryMiB < 1024 {
		c.add("spec.proxmox.vm.memoryMiB", "%d MiB: K3s servers need at least 1024", px.VM.MemoryMiB)
	}
	if px.VM.DiskGiB < 8 {
		c.add("spec.proxmox.vm.diskGiB", "%d GiB: want at least 8", px.VM.DiskGiB)
	}
}

func (c *checker) k3d(s *Spec) {
	k := s.K3d
	if k.DockerHost != "" && k.DockerContext != "" {
		c.add("spec.k3d.dockerContext", "set either dockerHost or dockerContext, not both")
	}
	if k.DockerHost != "" {
		c.url("spec.k3d.dockerHost", k.DockerHost, "ssh", "tcp", "unix")
	}
	if c.required("spec.k3d.apiHost", k.APIHost) {
		if _, err := netip.ParseAddr(k.APIHost); err != nil && !dnsNameRE.MatchString(k.APIHost) && k.APIHost != "localhost" {
			c.add("spec.k3d.apiHost", "%q is neither an IP address nor a DNS name", k.APIHost)
		}
	}
	if k.APIPort < 1 || k.APIPort > 65535 {
		c.add("spec.k3d.apiPort", "%d: want 1 to 65535", k.APIPort)
	}
	switch {
	case k.Servers < 1:
		c.add("spec.k3d.servers", "%d: want at least 1", k.Servers)
	case k.Servers > 1 && k.Servers%2 == 0:
		c.add("spec.k3d.servers", "%d servers: embedded etcd needs an odd number of servers", k.Servers)
	}
	if k.Agents < 0 {
		c.add("spec.k3d.agents", "%d: want 0 or more", k.Agents)
	}
	if k.Image != "" && !imageRefRE.MatchString(k.Image) {
		c.add("spec.k3d.image", "%q: want an image reference such as docker.io/rancher/k3s:v1.33.4-k3s1", k.Image)
	}
	if k.ClusterName != "" && !validName.MatchString(k.ClusterName) {
		c.add("spec.k3d.clusterName", "%q: want lower-case letters, digits and dashes", k.ClusterName)
	}
	c.k3dEnv(k.Env)
	hostPorts := map[int]int{}
	for i, pm := range k.Ports {
		at := fmt.Sprintf("spec.k3d.ports[%d]", i)
		if pm.HostPort < 1 || pm.HostPort > 65535 {
			c.add(at+".hostPort", "%d: want 1 to 65535", pm.HostPort)
		} else if j, dup := hostPorts[pm.HostPort]; dup {
			c.add(at+".hostPort", "%d is already mapped by spec.k3d.ports[%d]", pm.HostPort, j)
		} else {
			hostPorts[pm.HostPort] = i
		}
		if pm.HostPort == k.APIPort {
			c.add(at+".hostPort", "%d is the API port (spec.k3d.apiPort)", pm.HostPort)
		}
		if pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
			c.add(at+".containerPort", "%d: want 1 to 65535", pm.ContainerPort)
		}
		if !k3dNodeFilterRE.MatchString(pm.NodeFilter) {
			c.add(at+".nodeFilter", "%q: want loadbalancer, server:N, agent:N, servers:* or agents:*", pm.NodeFilter)
		}
	}
}

// k3dEnv checks spec.k3d.env: names a shell would take, not K3S_*
// (k3d and labctl set K3S_TOKEN, K3S_URL and the like themselves).
func (c *checker) k3dEnv(env map[string]string) {
	for _, name := range slices.Sorted(maps.Keys(env)) {
		at := "spec.k3d.env." + name
		switch {
		case !envNameRE.MatchString(name):
			c.add(at, "%q: want letters, digits and underscores, not starting with a digit", name)
		case strings.HasPrefix(name, "K3S_"):
			c.add(at, "K3S_* variables are k3d's and labctl's (token, server URL); K3s settings go in spec.k3s.config")
		}
	}
}

var k3dNodeFilterRE = regexp.MustCompile(`^(loadbalancer|(server|agent)s?(:(\*|\d+(,\d+)*|\d+-\d+))?|all)$`)

func (c *checker) storage(s *Spec) {
	st := s.Storage
	switch st.DefaultClass {
	case "local-path":
		if st.LocalPath == nil {
			c.add("spec.storage.localPath", "required when defaultClass is local-path")
		} else {
			c.hostPath("spec.storage.localPath.path", st.LocalPath.Path)
		}
	case "longhorn":
		if s.K3d != nil {
			c.add("spec.storage.defaultClass", "longhorn needs iSCSI on real hosts; a k3d cluster uses local-path")
		}
		lh := st.Longhorn
		if lh == nil {
			c.add("spec.storage.longhorn", "required when defaultClass is longhorn")
			break
		}
		if lh.Replicas < 1 {
			c.add("spec.storage.longhorn.replicas", "%d: want at least 1", lh.Replicas)
		} else if lh.ReplicaAntiAffinity && lh.Replicas > len(s.Nodes) {
			// Without anti-affinity replicas may share a node, so only then is this fatal.
			c.add("spec.storage.longhorn.replicas", "%d replicas with anti-affinity need at least %d nodes, the profile has %d", lh.Replicas, lh.Replicas, len(s.Nodes))
		}
		c.hostPath("spec.storage.longhorn.dataPath", lh.DataPath)
		switch lh.AutoBalance {
		case "disabled", "least-effort", "best-effort":
		default:
			c.add("spec.storage.longhorn.autoBalance", "%q: want disabled, least-effort or best-effort", lh.AutoBalance)
		}
	case "":
		c.add("spec.storage.defaultClass", "required: local-path or longhorn")
	default:
		c.add("spec.storage.defaultClass", "%q: want local-path or longhorn", st.DefaultClass)
	}
}

func (c *checker) ingress(s *Spec) {
	if s.Ingress.Controller != "traefik" {
		c.add("spec.ingress.controller", "%q: labctl supports traefik, the K3s default", s.Ingress.Controller)
	} else if hasString(s.K3s.Disable, "traefik") {
		c.add("spec.k3s.disable", "traefik is the ingress controller (spec.ingress.controller) but is disabled")
	}
	switch s.Ingress.LoadBalancer {
	case "servicelb":
		if s.K3d != nil {
			c.add("spec.ingress.loadBalancer", "a k3d cluster is reached through k3d's load balancer: want k3d")
		}
		if hasString(s.K3s.Disable, "servicelb") {
			c.add("spec.k3s.disable", "servicelb is the load balancer (spec.ingress.loadBalancer) but is disabled")
		}
	case "k3d":
		if s.K3d == nil {
			c.add("spec.ingress.loadBalancer", "k3d needs spec.k3d; SSH nodes use servicelb")
		}
	default:
		c.add("spec.ingress.loadBalancer", "%q: want servicelb or k3d", s.Ingress.LoadBalancer)
	}
}

func (c *checker) dns(s *Spec) {
	if c.required("spec.dns.domain", s.DNS.Domain) && !dnsNameRE.MatchString(s.DNS.Domain) {
		c.add("spec.dns.domain", "%q is not a DNS name", s.DNS.Domain)
	}
	for i, r := range s.DNS.Records {
		at := fmt.Sprintf("spec.dns.records[%d]", i)
		if !dnsNameRE.MatchString(r.Name) {
			c.add(at+".name", "%q is not a DNS name", r.Name)
		} else if s.DNS.Domain != "" && r.Name != s.DNS.Domain && !strings.HasSuffix(r.Name, "."+s.DNS.Domain) {
			c.add(at+".name", "%s is outside the domain %s", r.Name, s.DNS.Domain)
		}
		if len(r.Targets) == 0 {
			c.add(at+".targets", "want at least one address")
		}
		for j, t := range r.Targets {
			if _, err := netip.ParseAddr(t); err != nil {
				c.add(fmt.Sprintf("%s.targets[%d]", at, j), "%q is not an IP address", t)
			}
		}
	}
}

func (c *checker) certificates(s *Spec) {
	cert := s.Certificates
	if cert == nil {
		return
	}
	c.required("spec.certificates.issuer", cert.Issuer)
	c.required("spec.certificates.dns01.provider", cert.DNS01.Provider)
	c.secretRef("spec.certificates.dns01.apiTokenRef", cert.DNS01.APITokenRef)
	c.required("spec.certificates.dns01.secretName", cert.DNS01.SecretName)
	c.required("spec.certificates.dns01.secretNamespace", cert.DNS01.SecretNamespace)
}

func (c *checker) flux(s *Spec) {
	f := s.Flux
	if c.required("spec.flux.url", f.URL) {
		c.url("spec.flux.url", f.URL, "ssh", "https", "http", "file")
	}
	c.required("spec.flux.branch", f.Branch)
	if c.required("spec.flux.path", f.Path) && s.Environment != "" {
		want := "clusters/" + s.Environment
		if cleanRepoPath(f.Path) != want {
			c.add("spec.flux.path", "%q does not match environment %s: want %s", f.Path, s.Environment, want)
		}
	}
	if f.DeployKeyRef != nil {
		c.secretRef("spec.flux.deployKeyRef", *f.DeployKeyRef)
		if !strings.HasPrefix(f.URL, "ssh://") {
			c.add("spec.flux.deployKeyRef", "an SSH deploy key needs an ssh:// url, not %q", f.URL)
		}
	}
	if f.SOPSAgeKeyRef != nil {
		c.secretRef("spec.flux.sopsAgeKeyRef", *f.SOPSAgeKeyRef)
	}
	if f.TokenRef != nil {
		c.secretRef("spec.flux.tokenRef", *f.TokenRef)
		if !strings.HasPrefix(f.URL, "https://") && !strings.HasPrefix(f.URL, "http://") {
			c.add("spec.flux.tokenRef", "a token needs an http(s):// url, not %q", f.URL)
		}
	}
	if len(f.Kustomizations) == 0 {
		c.add("spec.flux.kustomizations", "want the repository's Kustomizations, to wait for them in order")
	}
	index := map[string]int{}
	for i, k := range f.Kustomizations {
		at := fmt.Sprintf("spec.flux.kustomizations[%d]", i)
		if !validName.MatchString(k.Name) {
			c.add(at+".name", "%q: want a Kubernetes name", k.Name)
		} else if j, dup := index[k.Name]; dup {
			c.add(at+".name", "%q is already used by spec.flux.kustomizations[%d]", k.Name, j)
		} else {
			index[k.Name] = i
		}
		if c.required(at+".path", k.Path) && s.Environment != "" {
			p := cleanRepoPath(k.Path)
			if p == "" || strings.HasPrefix(p, "../") || path.IsAbs(p) {
				c.add(at+".path", "%q: want a path inside the repository", k.Path)
			} else if other := otherEnv(s.Environment); other != "" && hasSegment(p, other) {
				c.add(at+".path", "%q points at %s from a %s profile", k.Path, other, s.Environment)
			}
		}
	}
	for i, k := range f.Kustomizations {
		for j, d := range k.DependsOn {
			if _, ok := index[d]; !ok {
				c.add(fmt.Sprintf("spec.flux.kustomizations[%d].dependsOn[%d]", i, j), "%q is not a Kustomization of this profile", d)
			}
		}
	}
	if cyc := dependencyCycle(f.Kustomizations); cyc != "" {
		c.add("spec.flux.kustomizations", "dependsOn cycle: %s", cyc)
	}
}

// dependencyCycle returns "a -> b -> a" for the first cycle found, or "".
func dependencyCycle(ks []FluxKustomization) string {
	deps := map[string][]string{}
	for _, k := range ks {
		deps[k.Name] = k.DependsOn
	}
	const (
		unseen = iota
		active
		done
	)
	state := map[string]int{}
	var stack []string
	var visit func(string) string
	visit = func(n string) string {
		switch state[n] {
		case active:
			for i, s := range stack {
				if s == n {
					return strings.Join(append(append([]string{}, stack[i:]...), n), " -> ")
				}
			}
		case done:
			return ""
		}
		state[n] = active
		stack = append(stack, n)
		for _, d := range deps[n] {
			if _, known := deps[d]; known {
				if cyc := visit(d); cyc != "" {
					return cyc
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = done
		return ""
	}
	for _, k := range ks {
		if cyc := visit(k.Name); cyc != "" {
			return cyc
		}
	}
	return ""
}

func (c *checker) secretRef(path string, r SecretRef) {
	switch {
	case r.Env == "" && r.File == "":
		c.add(path, "required: {env: VAR} or {file: PATH}")
	case r.Env != "" && r.File != "":
		c.add(path, "set either env or file, not both")
	case r.Env != "" && !envNameRE.MatchString(r.Env):
		c.add(path+".env", "%q is not an environment variable name", r.Env)
	}
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (c *checker) url(path, raw string, schemes ...string) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		c.add(path, "%q: want a URL (%s)", RedactURL(raw), strings.Join(schemes, ", "))
		return
	}
	shown := RedactURL(raw)
	for _, s := range schemes {
		if u.Scheme == s {
			if s != "file" && s != "unix" && u.Host == "" {
				c.add(path, "%q has no host", shown)
			}
			if u.User != nil {
				_, hasPass := u.User.Password()
				switch {
				case hasPass:
					c.add(path, "inline secret values are not allowed: remove the password from the URL (%s)", refFor(path))
				case s != "ssh":
					// https://TOKEN@github.com/…: the "user" is a credential.
					c.add(path, "credentials in a URL are not allowed: remove the user part before @ (%s)", refFor(path))
				case !userNameRE.MatchString(u.User.Username()) && u.User.Username() != "git":
					c.add(path, "%q: the user %q is not a login name", shown, u.User.Username())
				}
			}
			return
		}
	}
	c.add(path, "%q: scheme %q, want %s", shown, u.Scheme, strings.Join(schemes, ", "))
}

// refFor says where the credentials of a URL field go instead.
func refFor(path string) string {
	switch path {
	case "spec.flux.url":
		return "give them with spec.flux.tokenRef and spec.flux.username"
	case "spec.proxmox.endpoint":
		return "give the API token with spec.proxmox.tokenRef"
	}
	return "reference secrets with {env: VAR} or {file: PATH}"
}

// RedactURL is raw with any user information replaced, for messages: a
// URL's userinfo may be a token, and is never printed.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i, j := strings.Index(raw, "://"), strings.LastIndex(raw, "@"); i >= 0 && j > i {
			return raw[:i+3] + "[redacted]@" + raw[j+1:]
		}
		return raw
	}
	if u.User != nil {
		u.User = url.User("[redacted]")
		return strings.Replace(u.String(), "%5Bredacted%5D", "[redacted]", 1)
	}
	return raw
}

// hostPath checks a path labctl creates or mounts on a host.
func (c *checker) hostPath(at, p string) {
	switch {
	case !path.IsAbs(p):
		c.add(at, "%q: want an absolute path", p)
	case path.Clean(p) != p || hasSegment(p, ".."):
		c.add(at, "%q: want a clean path (no .., no // or trailing /): %s", p, path.Clean(p))
	case !hostPathRE.MatchString(p):
		c.add(at, "%q: want letters, digits and . _ - between the slashes", p)
	}
}

// checkJumpHost checks [user@]host[:port].
func checkJumpHost(j string) error {
	user, hostport, hasUser := strings.Cut(j, "@")
	if !hasUser {
		user, hostport = "", j
	}
	if hasUser && !userNameRE.MatchString(user) {
		return fmt.Errorf("the user %q is not a login name (want [user@]host[:port])", user)
	}
	host, port := hostport, ""
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, p
	} else if strings.Contains(hostport, ":") && !strings.HasPrefix(hostport, "[") {
		if _, err := netip.ParseAddr(hostport); err != nil {
			return fmt.Errorf("want [user@]host[:port]")
		}
	}
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err != nil && !dnsNameRE.MatchString(host) && !validName.MatchString(host) {
		return fmt.Errorf("%q is neither an IP address nor a host name (want [user@]host[:port])", host)
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q: want 1 to 65535", port)
		}
	}
	return nil
}

func family(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// cleanRepoPath normalises "./clusters/production/" to "clusters/production".
func cleanRepoPath(p string) string {
	p = strings.TrimSpace(p)
	if p == "" {
		return ""
	}
	p = path.Clean(p)
	p = strings.TrimPrefix(p, "./")
	if p == "." {
		return ""
	}
	return p
}

func otherEnv(env string) string {
	switch env {
	case EnvStaging:
		return EnvProduction
	case EnvProduction:
		return EnvStaging
	}
	return ""
}

func hasSegment(p, seg string) bool {
	for _, s := range strings.Split(p, "/") {
		if s == seg {
			return true
		}
	}
	return false
}

func hasString(list []string, v string) bool {
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

var (
	sysctlKeyRE   = regexp.MustCompile(`^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+$`)
	sysctlValueRE = regexp.MustCompile(`^[A-Za-z0-9 ._:,+-]+$`)
	debPackageRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	journalSizeRE = regexp.MustCompile(`^[1-9][0-9]*[KMGT]?$`)
)

func (c *checker) hosts(s *Spec) {
	h := s.Hosts
	if h == nil {
		return
	}
	if _, _, ok := s.DockerHostMachine(); len(s.Nodes) == 0 && !ok {
		c.add("spec.hosts", "host tuning applies to SSH nodes (spec.nodes) and to a k3d Docker host reached over SSH (spec.k3d.dockerHost: ssh://user@host); labctl does not tune the Docker of the machine it runs on, a tcp:// host or a Docker context")
		return
	}
	for _, k := range sortedKeys(h.Sysctl) {
		at := "spec.hosts.sysctl." + k
		if !sysctlKeyRE.MatchString(k) {
			c.add(at, "%q: want a sysctl name such as fs.inotify.max_user_watches", k)
		}
		if v := h.Sysctl[k]; !sysctlValueRE.MatchString(v) {
			c.add(at, "%q: want a plain value (digits, letters, spaces)", v)
		}
	}
	if j := h.Journald; j != nil && j.MaxUse != "" && !journalSizeRE.MatchString(j.MaxUse) {
		c.add("spec.hosts.journald.maxUse", "%q: want a size such as 500M or 1G", j.MaxUse)
	}
	for i, p := range h.Packages {
		if !debPackageRE.MatchString(p) {
			c.add(fmt.Sprintf("spec.hosts.packages[%d]", i), "%q is not a Debian package name", p)
		}
	}
}
