// Package offline holds the providers of `labctl plan` without
// --observe: they contact nothing and answer as the machines of a fresh
// profile would (no VM, no prerequisites, no K3s, no Flux), so the plan
// shows every change a first create makes. They change nothing either:
// a dry run never calls a provider's mutating methods, and if one did,
// it would get ErrOffline.
package offline

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/prereq"
)

// ErrOffline is what a mutating method answers: an offline provider
// only observes.
var ErrOffline = errors.New("offline provider: nothing can be changed (a plan is a dry run)")

// VMs answers as a Proxmox VE without the profile's VMs.
type VMs struct{}

// ObserveVM reports no VM.
func (VMs) ObserveVM(context.Context, profiles.Node) (facts.VM, error) { return facts.VM{}, nil }

// CloneVM refuses.
func (VMs) CloneVM(context.Context, profiles.Node) error { return ErrOffline }

// ConfigureVM refuses.
func (VMs) ConfigureVM(context.Context, profiles.Node) error { return ErrOffline }

// StartVM refuses.
func (VMs) StartVM(context.Context, profiles.Node) error { return ErrOffline }

// DestroyVM refuses.
func (VMs) DestroyVM(context.Context, profiles.Node) (bool, error) { return false, ErrOffline }

// Hosts answers as fresh machines.
type Hosts struct {
	// Spec, when set, gives each node's prerequisites and tuning;
	// without it, Longhorn's at DataPath.
	Spec     *profiles.Spec
	DataPath string
}

// WaitSSH refuses.
func (Hosts) WaitSSH(context.Context, profiles.Node) error { return ErrOffline }

// ObservePrerequisites reports everything missing.
func (h Hosts) ObservePrerequisites(_ context.Context, n profiles.Node) (facts.Prerequisites, error) {
	return h.AssumeFresh(n), nil
}

// AssumeFresh lists every fix.
func (h Hosts) AssumeFresh(n profiles.Node) facts.Prerequisites {
	out := facts.Prerequisites{Assumed: true}
	w := prereq.Want{Longhorn: true, DataPath: h.DataPath}
	if h.Spec != nil {
		w = prereq.WantFor(h.Spec, n)
	}
	for _, f := range prereq.Fixes(nil, w) {
		out.Fixes = append(out.Fixes, facts.Fix{Item: f.Item, Desc: f.Desc})
	}
	return out
}

// ApplyPrerequisite refuses.
func (Hosts) ApplyPrerequisite(context.Context, profiles.Node, facts.Fix) (string, error) {
	return "", ErrOffline
}

// KnownHostKeys reports none.
func (Hosts) KnownHostKeys([]profiles.Node) ([]string, error) { return nil, nil }

// ForgetHostKeys refuses.
func (Hosts) ForgetHostKeys([]profiles.Node) (int, error) { return 0, ErrOffline }

// Kubeconfig answers as a kubeconfig without the profile's context.
type Kubeconfig struct{}

// KubeconfigCurrent reports it missing.
func (Kubeconfig) KubeconfigCurrent(context.Context) (facts.Kubeconfig, error) {
	return facts.Kubeconfig{}, nil
}

// WriteKubeconfig refuses.
func (Kubeconfig) WriteKubeconfig(context.Context) error { return ErrOffline }

// HasContext reports none.
func (Kubeconfig) HasContext(context.Context) (bool, error) { return false, nil }

// RemoveContext refuses.
func (Kubeconfig) RemoveContext(context.Context) (bool, error) { return false, ErrOffline }

// K3s answers as nodes without K3s.
type K3s struct{ Kubeconfig }

// ObserveK3s reports K3s not installed.
func (K3s) ObserveK3s(context.Context, profiles.Node) (facts.K3s, error) { return facts.K3s{}, nil }

// CheckMember reports the node not in a cluster.
func (K3s) CheckMember(context.Context, profiles.Node, string) error {
	return errors.New("not observed")
}

// WriteToken refuses.
func (K3s) WriteToken(context.Context, profiles.Node) error { return ErrOffline }

// WriteConfig refuses.
func (K3s) WriteConfig(context.Context, profiles.Node, *profiles.Node) error { return ErrOffline }

// Install refuses.
func (K3s) Install(context.Context, profiles.Node) error { return ErrOffline }

// WaitMember refuses.
func (K3s) WaitMember(context.Context, profiles.Node) error { return ErrOffline }

// Uninstall refuses.
func (K3s) Uninstall(context.Context, profiles.Node) error { return ErrOffline }

// Restart refuses.
func (K3s) Restart(context.Context, profiles.Node) error { return ErrOffline }

// Stop refuses.
func (K3s) Stop(context.Context, profiles.Node) error { return ErrOffline }

// Start refuses.
func (K3s) Start(context.Context, profiles.Node) error { return ErrOffline }

// ClusterReset refuses.
func (K3s) ClusterReset(context.Context, profiles.Node, string) error { return ErrOffline }

// MoveServerDB refuses.
func (K3s) MoveServerDB(context.Context, profiles.Node) error { return ErrOffline }

// K3d answers as a Docker host without the cluster; Spec, when set, is
// the cluster's shape for a rebuild plan (its nodes assumed running).
type K3d struct {
	Kubeconfig
	Spec *profiles.K3d
	// Down is the node a rebuild plan assumes dead.
	Down string
}

// Nodes lists the nodes a cluster of the profile's shape has.
func (k K3d) Nodes(context.Context) ([]facts.K3dNode, error) {
	if k.Spec == nil {
		return nil, nil
	}
	var out []facts.K3dNode
	for i := range k.Spec.Servers {
		out = append(out, facts.K3dNode{Name: fmt.Sprintf("k3d-%s-server-%d", k.Spec.ClusterName, i), Role: "server", Running: true, Ready: true})
	}
	for i := range k.Spec.Agents {
		out = append(out, facts.K3dNode{Name: fmt.Sprintf("k3d-%s-agent-%d", k.Spec.ClusterName, i), Role: "agent", Running: true, Ready: true})
	}
	for i, n := range out {
		if k.Down != "" && (n.Name == k.Down || strings.HasSuffix(n.Name, "-"+k.Down)) {
			out[i].Running, out[i].Ready = false, false
		}
	}
	return out, nil
}

// DeleteKubeNode refuses.
func (K3d) DeleteKubeNode(context.Context, string) error { return ErrOffline }

// DeleteNode refuses.
func (K3d) DeleteNode(context.Context, string) error { return ErrOffline }

// AddAgent refuses.
func (K3d) AddAgent(context.Context, string) error { return ErrOffline }

// WaitNodeReady refuses.
func (K3d) WaitNodeReady(context.Context, string) error { return ErrOffline }

// Observe reports no cluster.
func (K3d) Observe(context.Context) (facts.K3dCluster, error) { return facts.K3dCluster{}, nil }

// CreateCluster refuses.
func (K3d) CreateCluster(context.Context) error { return ErrOffline }

// WaitNodes refuses.
func (K3d) WaitNodes(context.Context) error { return ErrOffline }

// Delete refuses.
func (K3d) Delete(context.Context) error { return ErrOffline }

// Flux answers as a cluster without Flux.
type Flux struct{}

// Observe reports Flux not installed.
func (Flux) Observe(context.Context) (facts.Flux, error) {
	return facts.Flux{Reason: "Flux is not installed"}, nil
}

// SeedSecret refuses.
func (Flux) SeedSecret(context.Context, string, string, profiles.SecretRef) error { return ErrOffline }

// Install refuses.
func (Flux) Install(context.Context) error { return ErrOffline }

// WaitKustomizations refuses.
func (Flux) WaitKustomizations(context.Context) error { return ErrOffline }
