package offline

import (
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"path/filepath"
	"time"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3s"
)

// Healthy answers, for `labctl plan --rebuild NODE`, as the profile's
// cluster would with every machine as planned and every node healthy but
// Down, the node to rebuild, which is assumed dead (stopped VM, K3s data
// left, its etcd member not answering, its Node NotReady). It contacts
// nothing and changes nothing.
type Healthy struct {
	Spec *profiles.Spec
	// Down is the node to rebuild.
	Down string
	// StateDir is where local state would keep a snapshot.
	StateDir string
	// Unobserved leaves the nodes' K3s version unknown (an upgrade plan:
	// every node then has the profile's version to install).
	Unobserved bool
	Kubeconfig
}

func memberName(n string) string {
	h := fnv.New32a()
	h.Write([]byte(n))
	return fmt.Sprintf("%s-%08x", n, h.Sum32())
}

// ObserveVM reports every VM as planned; Down's stopped.
func (h Healthy) ObserveVM(_ context.Context, n profiles.Node) (facts.VM, error) {
	return facts.VM{Exists: true, VMID: n.VMID, Managed: true, Configured: true, Running: n.Name != h.Down}, nil
}

// CloneVM refuses.
func (Healthy) CloneVM(context.Context, profiles.Node) error { return ErrOffline }

// ConfigureVM refuses.
func (Healthy) ConfigureVM(context.Context, profiles.Node) error { return ErrOffline }

// StartVM refuses.
func (Healthy) StartVM(context.Context, profiles.Node) error { return ErrOffline }

// DestroyVM refuses.
func (Healthy) DestroyVM(context.Context, profiles.Node) (bool, error) { return false, ErrOffline }

// ObserveK3s reports K3s as the profile has it; on Down, inactive.
func (h Healthy) ObserveK3s(_ context.Context, n profiles.Node) (facts.K3s, error) {
	unit := "k3s"
	if n.Role == profiles.RoleAgent {
		unit = "k3s-agent"
	}
	v := h.Spec.K3s.Version
	if h.Unobserved {
		v = ""
	}
	var join *profiles.Node
	if first := h.Spec.Servers()[0]; first.Name != n.Name {
		join = &first
	}
	return facts.K3s{Installed: true, Unit: unit, Active: n.Name != h.Down, Version: v, HasData: n.Role == profiles.RoleServer,
		TokenMatches: true, Member: memberName(n.Name), CAHash: "assumed", Config: k3s.NodeConfig(h.Spec, n, join).Render()}, nil
}

// CheckMember reports every node but Down in the cluster.
func (h Healthy) CheckMember(_ context.Context, n profiles.Node, _ string) error {
	if n.Name == h.Down {
		return fmt.Errorf("%s is assumed down", n.Name)
	}
	return nil
}

// WriteToken refuses.
func (Healthy) WriteToken(context.Context, profiles.Node) error { return ErrOffline }

// WriteConfig refuses.
func (Healthy) WriteConfig(context.Context, profiles.Node, *profiles.Node) error { return ErrOffline }

// Install refuses.
func (Healthy) Install(context.Context, profiles.Node) error { return ErrOffline }

// WaitMember refuses.
func (Healthy) WaitMember(context.Context, profiles.Node) error { return ErrOffline }

// Uninstall refuses.
func (Healthy) Uninstall(context.Context, profiles.Node) error { return ErrOffline }

// Restart refuses.
func (Healthy) Restart(context.Context, profiles.Node) error { return ErrOffline }

// Stop refuses.
func (Healthy) Stop(context.Context, profiles.Node) error { return ErrOffline }

// Start refuses.
func (Healthy) Start(context.Context, profiles.Node) error { return ErrOffline }

// ClusterReset refuses.
func (Healthy) ClusterReset(context.Context, profiles.Node, string) error { return ErrOffline }

// MoveServerDB refuses.
func (Healthy) MoveServerDB(context.Context, profiles.Node) error { return ErrOffline }

// UploadSnapshot refuses.
func (Healthy) UploadSnapshot(context.Context, profiles.Node, string) (facts.Snapshot, error) {
	return facts.Snapshot{}, ErrOffline
}

// ListSnapshots reports none.
func (Healthy) ListSnapshots(context.Context, profiles.Node) ([]facts.Snapshot, error) {
	return nil, nil
}

// DeleteSnapshot refuses.
func (Healthy) DeleteSnapshot(context.Context, profiles.Node, string) error { return ErrOffline }

// Uncordon refuses.
func (Healthy) Uncordon(context.Context, profiles.Node, string) error { return ErrOffline }

// ObserveEtcd reports one member per server, all healthy but Down's.
func (h Healthy) ObserveEtcd(_ context.Context, via profiles.Node) (facts.Etcd, error) {
	e := facts.Etcd{Via: via.Name, ClusterID: "assumed"}
	for i, s := range h.Spec.Servers() {
		m := facts.Member{ID: fmt.Sprintf("%x", i+1), Name: memberName(s.Name), PeerURLs: []string{facts.PeerURL(s.Address)},
			ClientURLs: []string{"https://" + net.JoinHostPort(s.Address, "2379")}, Healthy: s.Name != h.Down}
		if !m.Healthy {
			m.Err = "assumed down"
		} else if e.Leader == "" {
			e.Leader = m.ID
		}
		e.Members = append(e.Members, m)
	}
	return e, nil
}

// ObserveKubeNodes reports every Node Ready but Down's.
func (h Healthy) ObserveKubeNodes(context.Context, profiles.Node) ([]facts.KubeNode, error) {
	var out []facts.KubeNode
	for _, n := range h.Spec.Nodes {
		kn := facts.KubeNode{Name: n.Name, Ready: n.Name != h.Down, Address: n.Address, EtcdMember: memberName(n.Name)}
		if !kn.Ready {
			kn.Why = "assumed down"
		}
		out = append(out, kn)
	}
	return out, nil
}

// SaveSnapshot refuses.
func (Healthy) SaveSnapshot(context.Context, profiles.Node, string) (facts.Snapshot, error) {
	return facts.Snapshot{}, ErrOffline
}

// FetchSnapshot refuses.
func (Healthy) FetchSnapshot(context.Context, profiles.Node, facts.Snapshot, string) error {
	return ErrOffline
}

// DeleteNode refuses.
func (Healthy) DeleteNode(context.Context, profiles.Node, string) error { return ErrOffline }

// HasNodePassword reports the Secret there.
func (Healthy) HasNodePassword(context.Context, profiles.Node, string) (bool, error) {
	return true, nil
}

// DeleteNodePassword refuses.
func (Healthy) DeleteNodePassword(context.Context, profiles.Node, string) error { return ErrOffline }

// RemoveMember refuses.
func (Healthy) RemoveMember(context.Context, profiles.Node, facts.Member) error { return ErrOffline }

// Cordon refuses.
func (Healthy) Cordon(context.Context, profiles.Node, string) error { return ErrOffline }

// Drain refuses.
func (Healthy) Drain(context.Context, profiles.Node, string) error { return ErrOffline }

// Rebuild reports no rebuild in progress.
func (Healthy) Rebuild(string) (facts.Rebuild, bool, error) { return facts.Rebuild{}, false, nil }

// SaveRebuild refuses.
func (Healthy) SaveRebuild(facts.Rebuild) error { return ErrOffline }

// ForgetRebuild refuses.
func (Healthy) ForgetRebuild(string) error { return ErrOffline }

// Restore reports no restore in progress.
func (Healthy) Restore() (facts.Restore, bool, error) { return facts.Restore{}, false, nil }

// SaveRestore refuses.
func (Healthy) SaveRestore(facts.Restore) error { return ErrOffline }

// ForgetRestore refuses.
func (Healthy) ForgetRestore() error { return ErrOffline }

// RecordSnapshot refuses.
func (Healthy) RecordSnapshot(facts.Snapshot, string, string, time.Time) error { return ErrOffline }

// SnapshotPath is where local state would keep the snapshot.
func (h Healthy) SnapshotPath(name string) string {
	return filepath.Join(h.StateDir, "snapshots", name)
}
