package verify

import (
	"time"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/profiles"
)

// Observed is everything a verify run of a cluster of SSH nodes read.
type Observed struct {
	Now time.Time
	// VMs is nil when the nodes are not Proxmox VMs; VMErr is why
	// Proxmox VE did not answer.
	VMs   map[string]facts.VM
	VMErr error
	// Hosts are the host scripts' results; ConnErr why a login failed,
	// HostErr why a logged-in host's read failed.
	Hosts   map[string]Host
	ConnErr map[string]error
	HostErr map[string]error
	Etcd    *facts.Etcd
	EtcdErr error
	API     *facts.API
	APIErr  error
	// Flux is nil when Flux is not installed.
	Flux    *facts.FluxState
	FluxErr error
	// HTTP maps host:port to why it gave no HTTP answer ("" it did).
	HTTP map[string]string
	DNS  map[string]facts.DNSAnswer
	// DNSServer is the server asked ("" the system resolver).
	DNSServer string
}

// Nodes is the report of a cluster of SSH nodes.
func Nodes(s *profiles.Spec, o Observed) Report {
	var r Report
	if o.VMs != nil || o.VMErr != nil {
		r.Merge(MachineChecks(s, o.VMs, o.VMErr))
	}
	hosts := map[string]Host{}
	for _, n := range s.Nodes {
		if err := o.ConnErr[n.Name]; err != nil {
			r.Merge(SSHCheck(n, err))
			continue
		}
		r.Merge(SSHCheck(n, nil))
		h, ok := o.Hosts[n.Name]
		if err := o.HostErr[n.Name]; err != nil || !ok {
			why := "not read"
			if err != nil {
				why = err.Error()
			}
			r.add(GroupHosts, "facts", n.Name, Fail, why, "the host read")
			continue
		}
		hosts[n.Name] = h
		r.Merge(HostChecks(s, n, h, o.Now))
		r.Merge(K3sChecks(s, n, h, o.Now))
		if n.Role == profiles.RoleServer {
			r.Merge(EtcdDiskChecks(n, h))
		}
	}
	r.Merge(ClockChecks(hosts))
	r.Merge(EtcdChecks(s, o.Etcd, o.EtcdErr))
	var names []string
	for _, n := range s.Nodes {
		names = append(names, n.Name)
	}
	r.Merge(NodeChecks(names, ServerRoles(s), o.API, o.APIErr))
	r.Merge(StorageChecks(s, o.API, o.Flux != nil))
	r.Merge(IngressChecks(s, o.API, NodeAddresses(s), o.HTTP))
	if o.APIErr == nil {
		r.Merge(FluxChecks(s, o.Flux, o.FluxErr))
		r.Merge(SecretChecks(s, o.API))
	}
	r.Merge(DNSChecks(s, o.DNS, o.DNSServer))
	return r
}
