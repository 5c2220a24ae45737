// Package facts is what labctl observed of a cluster and its machines,
// in one structured model that every flow reads: create, destroy and
// rebuild decide from it, plan shows it, verify reports it. Each fact
// says why it is what it is (Reason), so a plan can explain a skipped or
// a refused step, not just mark it.
//
// The package is neutral: standard library only, so the flows that
// consume it stay free of SSH, Proxmox and Kubernetes client libraries,
// and the backends that produce it (provision/…) depend on nothing above
// them.
package facts

import (
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// Change is one setting that differs from the profile.
type Change struct {
	Key  string `json:"key"`
	Have string `json:"have"`
	Want string `json:"want"`
}

func (c Change) String() string {
	have := c.Have
	if have == "" {
		have = "(unset)"
	}
	return fmt.Sprintf("%s %s → %s", c.Key, have, c.Want)
}

// Changes renders changes on one line.
func Changes(cs []Change) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.String()
	}
	return strings.Join(parts, ", ")
}

// VM is a node's virtual machine as Proxmox VE has it.
type VM struct {
	Exists  bool `json:"exists"`
	VMID    int  `json:"vmid,omitempty"`
	Running bool `json:"running"`
	// Lock is PVE's config lock ("clone" on a half-made clone).
	Lock string `json:"lock,omitempty"`
	// Managed: the VM carries labctl's marker; Configured: labctl's
	// configure step finished on it.
	Managed    bool `json:"managed"`
	Configured bool `json:"configured"`
	// Drift lists what differs from the profile (for a configured VM).
	Drift []Change `json:"drift,omitempty"`
	// Notes are differences labctl leaves alone (a larger disk).
	Notes []string `json:"notes,omitempty"`
	// Planned: not observed, but what a dry run's earlier step would
	// have made; nothing can be read from the machine yet.
	Planned bool `json:"planned,omitempty"`
}

// Reason says what the VM is, in one line.
func (v VM) Reason() string {
	switch {
	case !v.Exists:
		return "no VM yet"
	case v.Lock != "":
		return fmt.Sprintf("VM %d is locked (%s)", v.VMID, v.Lock)
	case !v.Managed:
		return fmt.Sprintf("VM %d was not created by labctl", v.VMID)
	case !v.Configured:
		return fmt.Sprintf("VM %d was cloned by an interrupted run, not configured yet", v.VMID)
	case len(v.Drift) > 0:
		return fmt.Sprintf("VM %d differs from the profile: %s", v.VMID, Changes(v.Drift))
	}
	state := "stopped"
	if v.Running {
		state = "running"
	}
	return fmt.Sprintf("VM %d as planned, %s", v.VMID, state)
}

// Problem says why the VM cannot be used as it is, if it cannot: a lock
// left by a failed task whose cleanup failed too, which only an operator
// on the PVE node can clear.
func (v VM) Problem(node, pveNode string) error {
	if v.Lock != "" {
		return fmt.Errorf("node %s: VM %d is locked (%s), left by a failed %s whose cleanup failed too; on %s run `qm unlock %d && qm destroy %d --purge`, then re-run (an API token may not override locks)", node, v.VMID, v.Lock, v.Lock, pveNode, v.VMID, v.VMID)
	}
	return nil
}

// AsPlanned: the VM exists, is labctl's, configured and without drift.
func (v VM) AsPlanned() bool {
	return v.Exists && v.Lock == "" && v.Managed && v.Configured && len(v.Drift) == 0
}

// K3s is what a node runs of K3s, read on the node itself.
type K3s struct {
	// Installed: the k3s binary and a k3s or k3s-agent unit are there.
	Installed bool `json:"installed"`
	// Unit is k3s (server) or k3s-agent.
	Unit string `json:"unit,omitempty"`
	// Active: the unit is running.
	Active bool `json:"active"`
	// Version is what `k3s --version` reports, e.g. v1.33.4+k3s1.
	Version string `json:"version,omitempty"`
	// HasData: server data exists (server/db/etcd).
	HasData bool `json:"hasData"`
	// CAHash identifies the cluster the data belongs to (sha256 of its
	// server CA); empty without data.
	CAHash string `json:"caHash,omitempty"`
	// TokenMatches: the token file holds the profile's cluster token.
	TokenMatches bool `json:"tokenMatches"`
	// Member is the etcd member name the node's data belongs to (K3s's
	// server/db/etcd/name), empty without data.
	Member string `json:"member,omitempty"`
	// Config is /etc/rancher/k3s/config.yaml as it is on disk; nil when
	// there is none.
	Config []byte `json:"-"`
}

// Reason says what the node runs, in one line.
func (k K3s) Reason() string {
	if !k.Installed {
		if k.HasData {
			return "k3s not installed, but server data is left in /var/lib/rancher/k3s/server/db"
		}
		return "k3s not installed"
	}
	state := "inactive"
	if k.Active {
		state = "active"
	}
	v := k.Version
	if v == "" {
		v = "(version unknown)"
	}
	return fmt.Sprintf("%s %s %s", k.Unit, v, state)
}

// Member is one etcd member, as the member list gives it.
type Member struct {
	// ID is etcd's member id, in hex as etcdctl prints it.
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs,omitempty"`
	Learner    bool     `json:"learner,omitempty"`
	// Answers: its status answered through its client URL; Healthy: it
	// answered and knows a leader.
	Answers bool `json:"answers"`
	Healthy bool `json:"healthy"`
	// Err is why its status did not answer.
	Err string `json:"error,omitempty"`
	// DBSize is its database's size in bytes, as its status gives it.
	DBSize int64 `json:"dbSize,omitempty"`
}

// Started: the member runs (a member added but never started has no
// name and no client URLs).
func (m Member) Started() bool { return m.Name != "" && len(m.ClientURLs) > 0 }

// Host is the address of the member's first peer URL.
func (m Member) Host() string {
	for _, p := range m.PeerURLs {
		if u, err := url.Parse(p); err == nil {
			return u.Hostname()
		}
	}
	return ""
}

// State says how the member is, in one word or two.
func (m Member) State() string {
	switch {
	case !m.Started():
		return "not started"
	case m.Learner:
		return "learner"
	case m.Healthy:
		return "started, healthy"
	case m.Err != "":
		return "started, not answering (" + m.Err + ")"
	}
	return "started, not answering"
}

func (m Member) String() string {
	name := m.Name
	if name == "" {
		name = "(unnamed)"
	}
	return fmt.Sprintf("%s at %s: %s", name, m.Host(), m.State())
}

// Etcd is the cluster's embedded etcd, as seen through one server.
type Etcd struct {
	// Via is the server asked.
	Via       string   `json:"via"`
	ClusterID string   `json:"clusterID,omitempty"`
	Leader    string   `json:"leader,omitempty"` // member id, hex; "" without a leader
	Members   []Member `json:"members"`
}

// PeerURL is the etcd peer URL of a server at address.
func PeerURL(address string) string {
	return "https://" + net.JoinHostPort(address, "2380")
}

// At returns the member whose peer URL is address's: members are
// identified by where they run, never by their name's prefix (K3s names
// them <node>-<random>, so a dead node's member and its rebuilt
// successor share the prefix but not the identity).
func (e Etcd) At(address string) (Member, bool) {
	for _, m := range e.Members {
		if m.Host() == address {
			return m, true
		}
	}
	return Member{}, false
}

// Named returns the member of that exact name.
func (e Etcd) Named(name string) (Member, bool) {
	for _, m := range e.Members {
		if name != "" && m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// Voters are the members that vote: started and promoted.
func (e Etcd) Voters() []Member {
	var out []Member
	for _, m := range e.Members {
		if m.Started() && !m.Learner {
			out = append(out, m)
		}
	}
	return out
}

// Quorum is how many members must agree: a majority of the membership.
func Quorum(members int) int { return members/2 + 1 }

// HealthyVoters counts voting members whose status answered.
func (e Etcd) HealthyVoters() int {
	n := 0
	for _, m := range e.Voters() {
		if m.Healthy {
			n++
		}
	}
	return n
}

// Answering counts the members whose status answered.
func (e Etcd) Answering() int {
	n := 0
	for _, m := range e.Members {
		if m.Answers || m.Healthy {
			n++
		}
	}
	return n
}

// Leaderless counts the members that answer but know no leader (during
// an election; asked one after another, some members may answer before
// it ends and some after).
func (e Etcd) Leaderless() int {
	n := 0
	for _, m := range e.Members {
		if m.Answers && !m.Healthy {
			n++
		}
	}
	return n
}

// HasQuorum: enough healthy voters for the current membership, and a
// leader.
func (e Etcd) HasQuorum() bool {
	return e.Leader != "" && e.HealthyVoters() >= Quorum(len(e.Members))
}

// Summary lists the members, sorted by address.
func (e Etcd) Summary() string {
	ms := append([]Member(nil), e.Members...)
	sort.Slice(ms, func(i, j int) bool { return ms[i].Host() < ms[j].Host() })
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.String()
	}
	return strings.Join(parts, "; ")
}

// KubeNode is a Node object of the cluster.
type KubeNode struct {
	Name  string `json:"name"`
	Ready bool   `json:"ready"`
	// Why is the Ready condition's reason and message when not Ready.
	Why   string   `json:"why,omitempty"`
	Roles []string `json:"roles,omitempty"`
	// Unschedulable: cordoned; CordonedBy names the labctl operation that
	// cordoned it (its annotation), empty when labctl did not.
	Unschedulable bool   `json:"unschedulable,omitempty"`
	CordonedBy    string `json:"cordonedBy,omitempty"`
	// EtcdMember is K3s's etcd.k3s.cattle.io/node-name annotation: the
	// etcd member this Node's server runs.
	EtcdMember string `json:"etcdMember,omitempty"`
	// Address is the InternalIP.
	Address string `json:"address,omitempty"`
}

// Reason says how the Node is.
func (n KubeNode) Reason() string {
	if n.Ready {
		return "Node " + n.Name + " Ready"
	}
	if n.Why != "" {
		return "Node " + n.Name + " not Ready: " + n.Why
	}
	return "Node " + n.Name + " not Ready"
}

// Snapshot is one etcd snapshot, on a server or in local state.
type Snapshot struct {
	Name string `json:"name"`
	// Node is the server that took it; Path where it is there or locally.
	Node string `json:"node,omitempty"`
	Path string `json:"path,omitempty"`
	Size int64  `json:"size,omitempty"`
	// Taken is when the file was written.
	Taken time.Time `json:"taken,omitempty"`
}

// Kubeconfig is the profile's context in the operator's kubeconfig.
type Kubeconfig struct {
	// Current: the file holds what labctl would merge.
	Current bool `json:"current"`
	// Server is the API address the merged context would have.
	Server string `json:"server,omitempty"`
}

// K3dCluster is a k3d cluster on its Docker host.
type K3dCluster struct {
	Exists bool `json:"exists"`
	// Shape is its servers, agents, image and ports when it exists.
	Shape string `json:"shape,omitempty"`
}

// K3dNode is one node container of a k3d cluster.
type K3dNode struct {
	Name string `json:"name"`
	// Role is k3d's: server or agent.
	Role    string `json:"role"`
	Running bool   `json:"running"`
	// Ready: its Node is Ready.
	Ready bool `json:"ready"`
}

// Flux is what runs of Flux in the cluster.
type Flux struct {
	// InPlace: flux-system syncs the profile's repository, branch and
	// path, and every Kustomization is Ready.
	InPlace bool   `json:"inPlace"`
	Reason  string `json:"reason"`
}

// Fix is one change that brings a host's prerequisites in place.
type Fix struct {
	Item string `json:"item"`
	// Desc says what it does, for plans and events.
	Desc string `json:"desc"`
}

// Prerequisites is what a host lacks of what K3s and Longhorn need.
type Prerequisites struct {
	Fixes []Fix `json:"fixes,omitempty"`
	// Warnings are what labctl cannot fix (the kernel's limits).
	Warnings []string `json:"warnings,omitempty"`
	// Refused are what labctl will not change (it would hide or destroy
	// data), each with what the operator can do; nothing runs until
	// they are resolved.
	Refused []string `json:"refused,omitempty"`
	// Assumed: not observed; a fresh machine's (everything missing).
	Assumed bool `json:"assumed,omitempty"`
}

// Host is what labctl learnt of a machine over SSH.
type Host struct {
	Reachable bool   `json:"reachable"`
	Err       string `json:"error,omitempty"`
}

// Node gathers what was observed of one profile node.
type Node struct {
	Name string `json:"name"`
	VM   *VM    `json:"vm,omitempty"`
	Host *Host  `json:"host,omitempty"`
	// Prereq is what the host lacks, once observed.
	Prereq *Prerequisites `json:"prerequisites,omitempty"`
	K3s    *K3s           `json:"k3s,omitempty"`
	Kube   *KubeNode      `json:"kube,omitempty"`
}

// Rebuild is the journal of a node rebuild in progress, kept in local
// state so that a rebuild interrupted at any stage continues where it
// stopped (the dead member's identity, for one, cannot be observed again
// once it is removed).
type Rebuild struct {
	Node    string    `json:"node"`
	Started time.Time `json:"started"`
	// Member is the etcd member the node ran when the rebuild began: the
	// one to remove (nil for an agent, or a server that had none).
	Member *Member `json:"member,omitempty"`
	// Snapshot is the etcd snapshot taken first, copied into local state.
	Snapshot *Snapshot `json:"snapshot,omitempty"`
	// MemberRemoved: the old Node and etcd member are gone.
	MemberRemoved bool `json:"memberRemoved,omitempty"`
	// MachineReplaced: the VM was destroyed (to be cloned again) or the
	// host's old K3s removed.
	MachineReplaced bool `json:"machineReplaced,omitempty"`
}

// Restore is the journal of an etcd restore in progress.
type Restore struct {
	// Snapshot is what is restored: a local file, or a file on Server.
	Snapshot Snapshot  `json:"snapshot"`
	Started  time.Time `json:"started"`
	// Server is the server the snapshot is restored on; the others
	// rejoin it.
	Server string `json:"server"`
	// Reset: the cluster-reset on Server is done; Rejoined lists the
	// servers back in since.
	Reset    bool     `json:"reset,omitempty"`
	Rejoined []string `json:"rejoined,omitempty"`
	// Planned: recorded by a dry run (what the run would do), never
	// saved; nothing of it happened.
	Planned bool `json:"-"`
}

// Cluster is one run's observations, shared by the steps of a plan: a
// step's Check records what it observed, later steps read it. Safe for
// concurrent use.
type Cluster struct {
	mu    sync.Mutex
	nodes map[string]*Node
	etcd  *Etcd
	kube  map[string]KubeNode
	rb    *Rebuild
	rs    *Restore
}

// SetRestore records the restore journal.
func (c *Cluster) SetRestore(r *Restore) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rs = r
}

// Restore returns a copy of the restore journal, if there is one.
func (c *Cluster) Restore() (Restore, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rs == nil {
		return Restore{}, false
	}
	return *c.rs, true
}

// SetRebuild records the rebuild journal (nil: none).
func (c *Cluster) SetRebuild(r *Rebuild) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rb = r
}

// Rebuild returns a copy of the rebuild journal, if there is one.
func (c *Cluster) Rebuild() (Rebuild, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rb == nil {
		return Rebuild{}, false
	}
	return *c.rb, true
}

// NewCluster returns an empty model.
func NewCluster() *Cluster { return &Cluster{nodes: map[string]*Node{}} }

// Update changes node name's facts under the lock.
func (c *Cluster) Update(name string, fn func(n *Node)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[name]
	if n == nil {
		n = &Node{Name: name}
		c.nodes[name] = n
	}
	fn(n)
}

// Node returns a copy of what is known of node name.
func (c *Cluster) Node(name string) Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.nodes[name]; n != nil {
		return *n
	}
	return Node{Name: name}
}

// SetEtcd records the etcd membership.
func (c *Cluster) SetEtcd(e Etcd) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.etcd = &e
}

// Etcd returns the recorded membership, if any.
func (c *Cluster) Etcd() (Etcd, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.etcd == nil {
		return Etcd{}, false
	}
	return *c.etcd, true
}

// SetKubeNodes records the cluster's Node objects.
func (c *Cluster) SetKubeNodes(ns []KubeNode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.kube = map[string]KubeNode{}
	for _, n := range ns {
		c.kube[n.Name] = n
	}
}

// KubeNode returns the recorded Node object of that name.
func (c *Cluster) KubeNode(name string) (KubeNode, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.kube[name]
	return n, ok
}
