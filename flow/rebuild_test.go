package flow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3s"
)

// cluster is a world with a running 3-server cluster: etcd members,
// Nodes, a rebuild journal; deleting a Node removes its member (K3s).
type cluster struct {
	*world
	etcd    facts.Etcd
	nodes   []facts.KubeNode
	journal *facts.Rebuild
	// failDestroy makes DestroyVM fail once (an interrupted rebuild).
	failDestroy bool
	// keepMember makes K3s leave the member behind on Node deletion.
	keepMember bool
	// rendered: after WriteConfig, a node's config is the profile's.
	rendered bool
	// unreachable nodes do not answer SSH.
	unreachable map[string]bool
	restore     *facts.Restore
	// apiDown: the API answers nothing (etcd without quorum).
	apiDown bool
	// electing is how many more etcd observations see the live members
	// answer without a leader (an election after the leader's loss);
	// observed counts the observations.
	electing, observed int
	// partly: only the first live member knows no leader (it answered
	// before the election ended, the others after).
	partly bool
}

func (c *cluster) facts() (facts.Restore, bool) {
	if c.restore == nil {
		return facts.Restore{}, false
	}
	return *c.restore, true
}

func newCluster(t *testing.T, down ...string) (*cluster, *profiles.Loaded) {
	t.Helper()
	l := load(t, "production")
	w := &world{spec: &l.Spec, k3s: map[string]facts.K3s{}}
	c := &cluster{world: w, etcd: facts.Etcd{ClusterID: "c1", Leader: "1"}}
	for i, n := range l.Spec.Nodes {
		up := !slices.Contains(down, n.Name)
		if up {
			w.k3s[n.Name] = facts.K3s{Installed: true, Unit: "k3s", Active: true, HasData: true, TokenMatches: true, CAHash: "ca1",
				Version: l.Spec.K3s.Version, Config: k3s.NodeConfig(&l.Spec, n, nil).Render(), Member: n.Name + "-old"}
		}
		m := facts.Member{ID: fmt.Sprint(i + 1), Name: n.Name + "-old", PeerURLs: []string{facts.PeerURL(n.Address)}, ClientURLs: []string{"https://" + n.Address + ":2379"}, Healthy: up}
		c.etcd.Members = append(c.etcd.Members, m)
		c.nodes = append(c.nodes, facts.KubeNode{Name: n.Name, Ready: up, EtcdMember: m.Name})
		// The VMs exist as labctl made them, and the hosts are ready.
		w.calls = append(w.calls, "ConfigureVM "+n.Name, "StartVM "+n.Name, "ApplyPrerequisite "+n.Name+" data path")
	}
	if slices.Contains(down, c.etcd.Members[0].Name[:len("kube-srv-1")]) {
		c.etcd.Leader = "2"
	}
	w.calls = nil
	return c, l
}

func (c *cluster) ObserveVM(_ context.Context, n profiles.Node) (facts.VM, error) {
	if c.did("DestroyVM "+n.Name) && !c.did("ConfigureVM "+n.Name) {
		return facts.VM{}, nil
	}
	return facts.VM{Exists: true, Managed: true, Configured: true, Running: true, VMID: n.VMID}, nil
}
func (c *cluster) DestroyVM(_ context.Context, n profiles.Node) (bool, error) {
	if c.failDestroy {
		c.failDestroy = false
		return false, errors.New("PVE: connection reset")
	}
	return true, c.log("DestroyVM %s", n.Name)
}
func (c *cluster) ObservePrerequisites(_ context.Context, n profiles.Node) (facts.Prerequisites, error) {
	if c.did("StartVM "+n.Name) && !c.did("ApplyPrerequisite "+n.Name+" data path") {
		return c.AssumeFresh(n), nil
	}
	return facts.Prerequisites{}, nil
}
func (c *cluster) ObserveK3s(_ context.Context, n profiles.Node) (facts.K3s, error) {
	if c.unreachable[n.Name] {
		return facts.K3s{}, errors.New(n.Name + ": connect: no route to host")
	}
	if c.rendered && c.did("Restart "+n.Name) {
		k := c.k3s[n.Name]
		k.Config = k3s.NodeConfig(c.spec, n, nil).Render()
		return k, nil
	}
	if c.did("Install " + n.Name) {
		return facts.K3s{Installed: true, Unit: "k3s", Active: true, HasData: true, TokenMatches: true, Version: c.spec.K3s.Version, Config: k3s.NodeConfig(c.spec, n, nil).Render(), Member: n.Name + "-new"}, nil
	}
	return c.k3s[n.Name], nil
}
func (c *cluster) CheckMember(_ context.Context, n profiles.Node, _ string) error {
	if c.did("Install "+n.Name) || c.k3s[n.Name].Active {
		return nil
	}
	return errors.New("not a member")
}
func (c *cluster) ObserveEtcd(_ context.Context, via profiles.Node) (facts.Etcd, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.etcd
	e.Via = via.Name
	e.Members = append([]facts.Member(nil), c.etcd.Members...)
	c.observed++
	if c.electing > 0 {
		c.electing--
		if !c.partly {
			e.Leader = ""
		}
		for i := range e.Members {
			if e.Members[i].Healthy {
				e.Members[i].Healthy, e.Members[i].Answers, e.Members[i].Err = false, true, "answers, but knows no leader"
				if c.partly {
					break
				}
			}
		}
	}
	return e, nil
}
func (c *cluster) ObserveKubeNodes(context.Context, profiles.Node) ([]facts.KubeNode, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.apiDown {
		return nil, errors.New("curl: (18) transfer closed with outstanding read data remaining")
	}
	return append([]facts.KubeNode(nil), c.nodes...), nil
}
func (c *cluster) SaveSnapshot(_ context.Context, on profiles.Node, name string) (facts.Snapshot, error) {
	return facts.Snapshot{Name: name + "-" + on.Name + "-1", Path: "/var/lib/rancher/k3s/server/db/snapshots/" + name, Size: 42}, c.log("SaveSnapshot %s on %s", name, on.Name)
}
func (c *cluster) FetchSnapshot(_ context.Context, on profiles.Node, s facts.Snapshot, local string) error {
	return c.log("FetchSnapshot %s from %s", s.Name, on.Name)
}
func (c *cluster) DeleteNode(_ context.Context, via profiles.Node, name string) error {
	c.mu.Lock()
	c.nodes = slices.DeleteFunc(c.nodes, func(n facts.KubeNode) bool { return n.Name == name })
	if !c.keepMember {
		c.etcd.Members = slices.DeleteFunc(c.etcd.Members, func(m facts.Member) bool { return m.Name == name+"-old" })
	}
	c.mu.Unlock()
	return c.log("DeleteNode %s via %s", name, via.Name)
}
func (c *cluster) HasNodePassword(context.Context, profiles.Node, string) (bool, error) {
	return false, nil
}
func (c *cluster) DeleteNodePassword(context.Context, profiles.Node, string) error { return nil }
func (c *cluster) RemoveMember(_ context.Context, via profiles.Node, m facts.Member) error {
	c.mu.Lock()
	c.etcd.Members = slices.DeleteFunc(c.etcd.Members, func(x facts.Member) bool { return x.ID == m.ID })
	c.mu.Unlock()
	return c.log("RemoveMember %s via %s", m.Name, via.Name)
}
func (c *cluster) Cordon(_ context.Context, _ profiles.Node, n string) error {
	return c.log("Cordon %s", n)
}
func (c *cluster) Drain(_ context.Context, _ profiles.Node, n string) error {
	return c.log("Drain %s", n)
}
func (c *cluster) Uncordon(_ context.Context, _ profiles.Node, n string) error {
	return c.log("Uncordon %s", n)
}
func (c *cluster) UploadSnapshot(_ context.Context, on profiles.Node, local string) (facts.Snapshot, error) {
	return facts.Snapshot{Name: local, Node: on.Name, Path: "/srv/" + local}, c.log("UploadSnapshot %s to %s", local, on.Name)
}
func (c *cluster) ListSnapshots(context.Context, profiles.Node) ([]facts.Snapshot, error) {
	return nil, nil
}
func (c *cluster) DeleteSnapshot(_ context.Context, on profiles.Node, name string) error {
	return c.log("DeleteSnapshot %s on %s", name, on.Name)
}
func (c *cluster) Rebuild(string) (facts.Rebuild, bool, error) {
	if c.journal == nil {
		return facts.Rebuild{}, false, nil
	}
	return *c.journal, true, nil
}
func (c *cluster) SaveRebuild(r facts.Rebuild) error     { c.journal = &r; return nil }
func (c *cluster) ForgetRebuild(string) error            { c.journal = nil; return c.log("ForgetRebuild") }
func (c *cluster) SnapshotPath(name string) string       { return "/state/snapshots/" + name }
func (c *cluster) Restore() (facts.Restore, bool, error) { return facts.Restore{}, false, nil }
func (c *cluster) SaveRestore(facts.Restore) error       { return nil }
func (c *cluster) ForgetRestore() error                  { return nil }
func (c *cluster) RecordSnapshot(s facts.Snapshot, reason, token string, _ time.Time) error {
	return nil
}
func (c *cluster) backends() Backends {
	return Backends{VMs: c, Hosts: c, K3s: c, Ops: c, Local: c}
}

func runRebuild(t *testing.T, c *cluster, l *profiles.Loaded, node string, o Options) (*plan.Report, error) {
	t.Helper()
	p, err := Rebuild(&l.Profile, node, c.backends(), o)
	if err != nil {
		t.Fatal(err)
	}
	return plan.Run(context.Background(), p, plan.Options{})
}

// The first server is rebuilt like any other: its member removed
// through a healthy server, its VM replaced, and K3s joined through
// kube-srv-2, never cluster-init; nothing runs on the healthy servers
// but the snapshot.
func TestRebuildOfTheFirstServerJoinsAHealthyServerNeverClusterInit(t *testing.T) {
	c, l := newCluster(t, "kube-srv-1")
	if _, err := runRebuild(t, c, l, "kube-srv-1", Options{}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"SaveSnapshot labctl-pre-rebuild-kube-srv-1-", "FetchSnapshot", "DeleteNode kube-srv-1 via kube-srv-2",
		"DestroyVM kube-srv-1", "CloneVM kube-srv-1", "ConfigureVM kube-srv-1", "StartVM kube-srv-1",
		"ApplyPrerequisite kube-srv-1 packages",
		"WriteToken kube-srv-1", "WriteConfig kube-srv-1 join kube-srv-2", "Install kube-srv-1", "WriteKubeconfig", "ForgetRebuild",
	}
	i := 0
	mutating := []string{"WriteToken", "WriteConfig", "Install", "Uninstall", "DestroyVM", "CloneVM", "ConfigureVM", "StartVM", "ApplyPrerequisite", "Cordon", "Drain"}
	for _, call := range c.calls {
		if i < len(want) && strings.HasPrefix(call, want[i]) {
			i++
		}
		if strings.Contains(call, "cluster-init") {
			t.Errorf("a rebuild ran cluster-init: %s", call)
		}
		// Only the snapshot (saved and copied) touches a healthy server;
		// the Node's deletion goes through its API.
		f := strings.Fields(call)
		if len(f) > 1 && f[1] != "kube-srv-1" && slices.Contains(mutating, f[0]) {
			t.Errorf("a change on healthy %s: %s", f[1], call)
		}
	}
	if i != len(want) {
		t.Fatalf("calls in order lack %q:\n%s", want[i], strings.Join(c.calls, "\n"))
	}
	if c.journal != nil {
		t.Error("the journal is left after a finished rebuild")
	}
}

// Two of three servers down: refused before any change, naming every
// member and its state, pointing at a restore.
func TestRebuildRefusesWhenQuorumIsLostNamingEachMember(t *testing.T) {
	c, l := newCluster(t, "kube-srv-2", "kube-srv-3")
	c.etcd.Leader = ""
	_, err := runRebuild(t, c, l, "kube-srv-2", Options{Confirmed: true})
	if !errors.Is(err, ErrQuorum) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"1 of 3 members answer, 1 healthy with a leader, a quorum needs 2", "kube-srv-1-old at 10.0.40.101: started, healthy", "kube-srv-3-old at 10.0.40.103: started, not answering", "labctl restore production --snapshot NAME"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if len(c.calls) != 0 || c.journal != nil {
		t.Errorf("a refused rebuild changed %v", c.calls)
	}
}

// A rebuild begun while etcd elects a new leader (the dead server led
// it) waits for the election instead of refusing as if quorum were lost.
func TestRebuildRightAfterTheLeadersLossWaitsForTheElection(t *testing.T) {
	for _, partly := range []bool{false, true} {
		c, l := newCluster(t, "kube-srv-2")
		c.electing, c.partly = 1, partly
		if _, err := runRebuild(t, c, l, "kube-srv-2", Options{ElectionWait: 10 * time.Second}); err != nil {
			t.Fatalf("partly=%v: %v", partly, err)
		}
		if c.observed < 2 || !c.did("Install kube-srv-2") {
			t.Errorf("partly=%v: etcd observed %d times, calls %v", partly, c.observed, c.calls)
		}
	}
}

// An election that does not end is refused after the wait, naming the
// members as they answer, and nothing changes.
func TestRebuildRefusesWhenNoLeaderIsElectedInTime(t *testing.T) {
	c, l := newCluster(t, "kube-srv-2")
	c.electing = 1000
	_, err := runRebuild(t, c, l, "kube-srv-2", Options{ElectionWait: time.Second})
	if !errors.Is(err, ErrQuorum) || !strings.Contains(err.Error(), "kube-srv-1-old at 10.0.40.101: started, not answering (answers, but knows no leader)") {
		t.Fatalf("err = %v", err)
	}
	if len(c.calls) != 0 || c.observed < 2 {
		t.Errorf("observed %d times; a refused rebuild changed %v", c.observed, c.calls)
	}
}

// A node that still works is rebuilt only when confirmed, and drained
// first.
func TestRebuildOfAHealthyNodeNeedsConfirmationAndDrainsIt(t *testing.T) {
	c, l := newCluster(t)
	_, err := runRebuild(t, c, l, "kube-srv-3", Options{})
	if !errors.Is(err, ErrNodeHealthy) || !strings.Contains(err.Error(), "--yes") || len(c.calls) != 0 {
		t.Fatalf("unconfirmed: %v, calls %v", err, c.calls)
	}
	if _, err := runRebuild(t, c, l, "kube-srv-3", Options{Confirmed: true}); err != nil {
		t.Fatal(err)
	}
	cordon, drain, del := slices.Index(c.calls, "Cordon kube-srv-3"), slices.Index(c.calls, "Drain kube-srv-3"), slices.Index(c.calls, "DeleteNode kube-srv-3 via kube-srv-1")
	if cordon < 0 || drain < cordon || del < drain {
		t.Errorf("not cordoned and drained before its removal: %v", c.calls)
	}
}

// Interrupted after the member's removal (the VM destroy failed), the
// same rebuild continues from its journal: no second snapshot, no second
// removal, the dead member's identity kept.
func TestRebuildResumesFromItsJournal(t *testing.T) {
	c, l := newCluster(t, "kube-srv-2")
	c.failDestroy = true
	if _, err := runRebuild(t, c, l, "kube-srv-2", Options{}); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("first run: %v", err)
	}
	if c.journal == nil || !c.journal.MemberRemoved || c.journal.Snapshot == nil || c.journal.Member == nil || c.journal.Member.Name != "kube-srv-2-old" {
		t.Fatalf("journal after the interruption: %+v", c.journal)
	}
	c.calls = nil
	if _, err := runRebuild(t, c, l, "kube-srv-2", Options{}); err != nil {
		t.Fatal(err)
	}
	for _, call := range c.calls {
		if strings.HasPrefix(call, "SaveSnapshot") || strings.HasPrefix(call, "DeleteNode") {
			t.Errorf("the resumed rebuild repeated %s", call)
		}
	}
	if !slices.Contains(c.calls, "WriteConfig kube-srv-2 join kube-srv-1") {
		t.Errorf("not rejoined: %v", c.calls)
	}
}

// When K3s leaves the deleted Node's member behind, labctl removes it
// through etcd's API, by its id.
func TestRebuildRemovesALeftoverMemberThroughEtcd(t *testing.T) {
	c, l := newCluster(t, "kube-srv-3")
	c.keepMember = true
	if _, err := runRebuild(t, c, l, "kube-srv-3", Options{MemberRemovalWait: 3 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(c.calls, "RemoveMember kube-srv-3-old via kube-srv-1") {
		t.Errorf("leftover member not removed: %v", c.calls)
	}
}

// A dead k3d agent is replaced once (Node, container, a new agent of
// the same name); a k3d server is refused with the reason.
func TestRebuildOfAK3dAgentReplacesItOnceAndRefusesTheServer(t *testing.T) {
	l := load(t, "staging")
	w := &world{spec: &l.Spec, calls: []string{"StopAgent"}}
	c := &cluster{world: w}
	b := Backends{K3d: k3dWorld{w}, Local: c}
	p, err := Rebuild(&l.Profile, "agent-1", b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plan.Run(context.Background(), p, plan.Options{}); err != nil {
		t.Fatal(err)
	}
	want := []string{"StopAgent", "DeleteKubeNode k3d-staging-agent-1", "DeleteNode k3d-staging-agent-1", "AddAgent k3d-staging-agent-1", "ForgetRebuild"}
	if !slices.Equal(w.calls, want) {
		t.Errorf("calls %v, want %v", w.calls, want)
	}
	if _, err := Rebuild(&l.Profile, "server-0", b, Options{}); err == nil || !strings.Contains(err.Error(), "staging is not HA") {
		t.Errorf("server: %v", err)
	}
}

// With no other server answering, the rebuild has nothing to work
// through: refused before any change, pointing at a restore.
func TestRebuildWithNoServerLeftPointsAtARestore(t *testing.T) {
	c, l := newCluster(t, "kube-srv-2")
	c.unreachable = map[string]bool{"kube-srv-1": true, "kube-srv-3": true}
	_, err := runRebuild(t, c, l, "kube-srv-2", Options{Confirmed: true})
	if !errors.Is(err, ErrNoHealthyServer) || !strings.Contains(err.Error(), "labctl restore production --snapshot NAME (labctl snapshot list production)") {
		t.Fatalf("err = %v", err)
	}
	if len(c.calls) != 0 || c.journal != nil {
		t.Errorf("a refused rebuild changed %v", c.calls)
	}
}
