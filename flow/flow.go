// Package flow turns a profile into plans of steps: the lifecycle flows
// (create, destroy, rebuild) are builders over one library of small
// per-node steps (steps.go), each of which observes before it acts and
// routes every change through plan.Exec.Wet, so `labctl plan` prints what
// the real run does. What a step observes goes into one facts.Cluster
// that later steps read; a step's verdict says why it is, or is not, in
// place.
//
// The providers behind the steps are small interfaces defined here,
// where they are consumed; provision/ and bootstrap/ implement them, and
// provision/offline answers for `labctl plan` without contacting
// anything. This package imports neither SSH, Proxmox nor Kubernetes
// client libraries.
package flow

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
)

// VMs creates and removes the nodes' virtual machines (provision/proxmox).
type VMs interface {
	ObserveVM(ctx context.Context, n profiles.Node) (facts.VM, error)
	CloneVM(ctx context.Context, n profiles.Node) error
	ConfigureVM(ctx context.Context, n profiles.Node) error
	StartVM(ctx context.Context, n profiles.Node) error
	// DestroyVM stops and purges the VM (labctl's only); false when there
	// was none.
	DestroyVM(ctx context.Context, n profiles.Node) (bool, error)
}

// Hosts prepares machines reached over SSH (provision/nodes).
type Hosts interface {
	WaitSSH(ctx context.Context, n profiles.Node) error
	// ObservePrerequisites reads the host and returns what is missing and
	// what labctl cannot fix (the kernel's limits), as warnings.
	ObservePrerequisites(ctx context.Context, n profiles.Node) (facts.Prerequisites, error)
	// AssumeFresh is what a machine not made yet will lack: everything.
	AssumeFresh(n profiles.Node) facts.Prerequisites
	// ApplyPrerequisite makes one fix; a fix the kernel makes impossible
	// returns a warning instead of an error.
	ApplyPrerequisite(ctx context.Context, n profiles.Node, fix facts.Fix) (warning string, err error)
	// KnownHostKeys lists the nodes' lines in the profile's known_hosts;
	// ForgetHostKeys removes them.
	KnownHostKeys(ns []profiles.Node) ([]string, error)
	ForgetHostKeys(ns []profiles.Node) (int, error)
}

// Kubeconfig is the profile's context in the operator's kubeconfig.
type Kubeconfig interface {
	KubeconfigCurrent(ctx context.Context) (facts.Kubeconfig, error)
	WriteKubeconfig(ctx context.Context) error
	HasContext(ctx context.Context) (bool, error)
	RemoveContext(ctx context.Context) (bool, error)
}

// K3s installs, observes and removes K3s over SSH (provision/nodes).
// join is the server a node joins, nil for the node that initialises the
// cluster.
type K3s interface {
	ObserveK3s(ctx context.Context, n profiles.Node) (facts.K3s, error)
	// CheckMember reports, without waiting, why n is not yet in the
	// cluster (nil when it is: a started etcd member, by the member name
	// its data holds as observed, with a Ready Node; or an agent with a
	// Ready Node).
	CheckMember(ctx context.Context, n profiles.Node, member string) error
	WriteToken(ctx context.Context, n profiles.Node) error
	WriteConfig(ctx context.Context, n profiles.Node, join *profiles.Node) error
	Install(ctx context.Context, n profiles.Node) error
	WaitMember(ctx context.Context, n profiles.Node) error
	Uninstall(ctx context.Context, n profiles.Node) error
	// Restart restarts the node's k3s (or k3s-agent) service and returns
	// once it runs again; Stop and Start stop and start it.
	Restart(ctx context.Context, n profiles.Node) error
	Stop(ctx context.Context, n profiles.Node) error
	Start(ctx context.Context, n profiles.Node) error
	// ClusterReset resets etcd's membership to server n, from a snapshot
	// file on it when restorePath is set (K3s's --cluster-reset).
	ClusterReset(ctx context.Context, n profiles.Node, restorePath string) error
	// MoveServerDB moves a server's etcd data aside, so it joins afresh.
	MoveServerDB(ctx context.Context, n profiles.Node) error
	Kubeconfig
}

// K3d creates and deletes a k3d cluster (provision/k3d).
type K3d interface {
	// Observe reports whether the cluster exists; one of another shape is
	// an error (labctl does not reshape clusters).
	Observe(ctx context.Context) (facts.K3dCluster, error)
	CreateCluster(ctx context.Context) error
	WaitNodes(ctx context.Context) error
	Delete(ctx context.Context) error
	// Nodes lists the cluster's server and agent containers.
	Nodes(ctx context.Context) ([]facts.K3dNode, error)
	// DeleteKubeNode deletes a node's Node object; DeleteNode its
	// container; AddAgent creates an agent and joins it.
	DeleteKubeNode(ctx context.Context, name string) error
	DeleteNode(ctx context.Context, name string) error
	AddAgent(ctx context.Context, name string) error
	WaitNodeReady(ctx context.Context, name string) error
	Kubeconfig
}

// Flux bootstraps GitOps (bootstrap/).
type Flux interface {
	// Observe reports whether Flux already syncs the profile's repository
	// and path with every Kustomization Ready; a flux-system syncing
	// another path is an error unless forced.
	Observe(ctx context.Context) (facts.Flux, error)
	SeedSecret(ctx context.Context, namespace, name string, ref profiles.SecretRef) error
	Install(ctx context.Context) error
	WaitKustomizations(ctx context.Context) error
}

// ClusterOps is the cluster's etcd and Kubernetes API, reached through a
// named healthy server (provision/nodes): what a repair needs without
// asking the node being repaired.
type ClusterOps interface {
	ObserveEtcd(ctx context.Context, via profiles.Node) (facts.Etcd, error)
	ObserveKubeNodes(ctx context.Context, via profiles.Node) ([]facts.KubeNode, error)
	// SaveSnapshot runs K3s's etcd-snapshot save on server on; the file
	// stays there until FetchSnapshot copies it to local.
	SaveSnapshot(ctx context.Context, on profiles.Node, name string) (facts.Snapshot, error)
	FetchSnapshot(ctx context.Context, on profiles.Node, snap facts.Snapshot, local string) error
	UploadSnapshot(ctx context.Context, on profiles.Node, local string) (facts.Snapshot, error)
	ListSnapshots(ctx context.Context, on profiles.Node) ([]facts.Snapshot, error)
	DeleteSnapshot(ctx context.Context, on profiles.Node, name string) error
	DeleteNode(ctx context.Context, via profiles.Node, name string) error
	HasNodePassword(ctx context.Context, via profiles.Node, name string) (bool, error)
	DeleteNodePassword(ctx context.Context, via profiles.Node, name string) error
	// RemoveMember removes an etcd member through etcd's API on via.
	RemoveMember(ctx context.Context, via profiles.Node, m facts.Member) error
	// Cordon marks the Node unschedulable, noting that labctl did;
	// Uncordon undoes only a cordon labctl made.
	Cordon(ctx context.Context, via profiles.Node, name string) error
	Uncordon(ctx context.Context, via profiles.Node, name string) error
	// Drain evicts the Node's pods, PodDisruptionBudgets respected.
	Drain(ctx context.Context, via profiles.Node, name string) error
}

// LocalState is labctl's own state of the profile (provision/state):
// the journals of repairs in progress, so an interrupted one continues
// where it stopped, and the snapshots it keeps.
type LocalState interface {
	Rebuild(node string) (facts.Rebuild, bool, error)
	SaveRebuild(r facts.Rebuild) error
	ForgetRebuild(node string) error
	Restore() (facts.Restore, bool, error)
	SaveRestore(r facts.Restore) error
	ForgetRestore() error
	// SnapshotPath is where a snapshot of that name is kept locally;
	// RecordSnapshot notes why it was taken and where its token is.
	SnapshotPath(name string) string
	RecordSnapshot(s facts.Snapshot, reason, token string, taken time.Time) error
}

// Backends are the providers of a run: the real ones, or offline ones
// that answer as fresh (or healthy) machines would, for `labctl plan`.
// Which flow needs which is checked when it is built.
type Backends struct {
	VMs   VMs
	Hosts Hosts
	K3s   K3s
	Ops   ClusterOps
	Local LocalState
	K3d   K3d
	Flux  Flux
}

// Options shape a flow.
type Options struct {
	// Kubeconfig is the file the cluster's context is merged into, as
	// plans name it.
	Kubeconfig string
	// Facts receives what the steps observe; nil makes a new model.
	Facts *facts.Cluster
	// Confirmed lets a repair act on a node that is still healthy (the
	// operator said so: --yes or the typed confirmation).
	Confirmed bool
	// Now is the clock (snapshot names); default time.Now.
	Now func() time.Time
	// MemberRemovalWait bounds the wait for K3s to remove a deleted
	// Node's etcd member (default MemberRemovalWait).
	MemberRemovalWait time.Duration
	// ElectionWait bounds a rebuild's wait for etcd to elect a leader
	// while a quorum of members answers (default ElectionWait).
	ElectionWait time.Duration
}

// ErrNoBackend is returned when a flow lacks a provider it needs.
var ErrNoBackend = errors.New("no provider")

// ErrPrerequisiteRefused: a host's state is one labctl will not change
// (etcd's data where its disk would be mounted over it).
var ErrPrerequisiteRefused = errors.New("host prerequisite refused")

// builder is what every flow's builder shares: the profile, the
// providers, the facts model and the plan being built.
type builder struct {
	p     *profiles.Profile
	s     *profiles.Spec
	b     Backends
	o     Options
	facts *facts.Cluster
	plan  *plan.Plan
}

func newBuilder(p *profiles.Profile, b Backends, o Options, name string) *builder {
	if o.Kubeconfig == "" {
		o.Kubeconfig = "~/.kube/config"
	}
	if o.Facts == nil {
		o.Facts = facts.NewCluster()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &builder{p: p, s: &p.Spec, b: b, o: o, facts: o.Facts, plan: plan.New(name)}
}

// need checks that the providers named are set.
func (f *builder) need(vms, hosts, k3s, k3d, flux bool) error {
	var missing []string
	if vms && f.b.VMs == nil {
		missing = append(missing, "Proxmox VMs")
	}
	if hosts && f.b.Hosts == nil {
		missing = append(missing, "SSH hosts")
	}
	if k3s && f.b.K3s == nil {
		missing = append(missing, "K3s")
	}
	if k3d && f.b.K3d == nil {
		missing = append(missing, "k3d")
	}
	if flux && f.b.Flux == nil {
		missing = append(missing, "Flux")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w for %s", ErrNoBackend, strings.Join(missing, ", "))
	}
	return nil
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
