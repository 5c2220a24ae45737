package flow

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3s"
	"github.com/labctl/labctl/provision/offline"
)

// world is a small fake infrastructure: its providers record each
// mutating call and answer observations from what those calls made, so
// a real run's calls can be compared with the dry run's changes.
type world struct {
	mu    sync.Mutex
	calls []string
	waits int
	spec  *profiles.Spec
	// k3s, when set, is what ObserveK3s reports for a node before any
	// install (a running cluster).
	k3s map[string]facts.K3s
}

func (w *world) log(format string, args ...any) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = append(w.calls, fmt.Sprintf(format, args...))
	return nil
}

func (w *world) did(call string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.calls {
		if c == call {
			return true
		}
	}
	return false
}

func (w *world) wait() error { w.mu.Lock(); defer w.mu.Unlock(); w.waits++; return nil }

func (w *world) ObserveVM(_ context.Context, n profiles.Node) (facts.VM, error) {
	var st facts.VM
	if w.did("ConfigureVM " + n.Name) {
		st.Exists, st.Managed, st.Configured, st.VMID = true, true, true, n.VMID
	}
	st.Running = w.did("StartVM " + n.Name)
	return st, nil
}
func (w *world) CloneVM(_ context.Context, n profiles.Node) error { return w.log("CloneVM %s", n.Name) }
func (w *world) ConfigureVM(_ context.Context, n profiles.Node) error {
	return w.log("ConfigureVM %s", n.Name)
}
func (w *world) StartVM(_ context.Context, n profiles.Node) error { return w.log("StartVM %s", n.Name) }
func (w *world) DestroyVM(_ context.Context, n profiles.Node) (bool, error) {
	return true, w.log("DestroyVM %s", n.Name)
}
func (w *world) WaitSSH(context.Context, profiles.Node) error { return w.wait() }
func (w *world) ObservePrerequisites(_ context.Context, n profiles.Node) (facts.Prerequisites, error) {
	all := w.AssumeFresh(n)
	out := facts.Prerequisites{}
	for _, f := range all.Fixes {
		if !w.did("ApplyPrerequisite " + n.Name + " " + f.Item) {
			out.Fixes = append(out.Fixes, f)
		}
	}
	return out, nil
}
func (w *world) AssumeFresh(n profiles.Node) facts.Prerequisites {
	return offline.Hosts{Spec: w.spec}.AssumeFresh(n)
}
func (w *world) ApplyPrerequisite(_ context.Context, n profiles.Node, fix facts.Fix) (string, error) {
	return "", w.log("ApplyPrerequisite %s %s", n.Name, fix.Item)
}
func (w *world) KnownHostKeys(ns []profiles.Node) ([]string, error) {
	if w.did("ForgetHostKeys") {
		return nil, nil
	}
	return []string{"10.0.40.101 ssh-ed25519 AAAA\n"}, nil
}
func (w *world) ForgetHostKeys([]profiles.Node) (int, error) { return 3, w.log("ForgetHostKeys") }
func (w *world) ObserveK3s(_ context.Context, n profiles.Node) (facts.K3s, error) {
	if k, ok := w.k3s[n.Name]; ok && !w.did("Uninstall "+n.Name) {
		return k, nil
	}
	return facts.K3s{}, nil
}
func (w *world) CheckMember(_ context.Context, n profiles.Node, _ string) error {
	if _, ok := w.k3s[n.Name]; ok {
		return nil
	}
	return errors.New("not a member")
}
func (w *world) WriteToken(_ context.Context, n profiles.Node) error {
	return w.log("WriteToken %s", n.Name)
}
func (w *world) WriteConfig(_ context.Context, n profiles.Node, join *profiles.Node) error {
	if join == nil {
		return w.log("WriteConfig %s cluster-init", n.Name)
	}
	return w.log("WriteConfig %s join %s", n.Name, join.Name)
}
func (w *world) Install(_ context.Context, n profiles.Node) error { return w.log("Install %s", n.Name) }
func (w *world) WaitMember(context.Context, profiles.Node) error  { return w.wait() }
func (w *world) Restart(_ context.Context, n profiles.Node) error { return w.log("Restart %s", n.Name) }
func (w *world) Stop(_ context.Context, n profiles.Node) error    { return w.log("Stop %s", n.Name) }
func (w *world) Start(_ context.Context, n profiles.Node) error   { return w.log("Start %s", n.Name) }
func (w *world) ClusterReset(_ context.Context, n profiles.Node, p string) error {
	return w.log("ClusterReset %s %s", n.Name, p)
}
func (w *world) MoveServerDB(_ context.Context, n profiles.Node) error {
	return w.log("MoveServerDB %s", n.Name)
}
func (w *world) Uninstall(_ context.Context, n profiles.Node) error {
	return w.log("Uninstall %s", n.Name)
}
func (w *world) KubeconfigCurrent(context.Context) (facts.Kubeconfig, error) {
	return facts.Kubeconfig{Current: w.did("WriteKubeconfig")}, nil
}
func (w *world) WriteKubeconfig(context.Context) error { return w.log("WriteKubeconfig") }
func (w *world) HasContext(context.Context) (bool, error) {
	return !w.did("RemoveContext"), nil
}
func (w *world) RemoveContext(context.Context) (bool, error) { return true, w.log("RemoveContext") }

// k3dWorld and fluxWorld disambiguate Observe and Install.
type k3dWorld struct{ *world }

func (k k3dWorld) Observe(context.Context) (facts.K3dCluster, error) {
	return facts.K3dCluster{Exists: k.did("CreateCluster")}, nil
}
func (k k3dWorld) CreateCluster(context.Context) error { return k.log("CreateCluster") }
func (k k3dWorld) WaitNodes(context.Context) error     { return k.wait() }
func (k k3dWorld) Delete(context.Context) error        { return k.log("Delete") }
func (k k3dWorld) Nodes(context.Context) ([]facts.K3dNode, error) {
	return []facts.K3dNode{{Name: "k3d-staging-server-0", Role: "server", Running: true, Ready: true},
		{Name: "k3d-staging-agent-1", Role: "agent", Running: !k.did("StopAgent"), Ready: !k.did("StopAgent")}}, nil
}
func (k k3dWorld) DeleteKubeNode(_ context.Context, n string) error {
	return k.log("DeleteKubeNode %s", n)
}
func (k k3dWorld) DeleteNode(_ context.Context, n string) error { return k.log("DeleteNode %s", n) }
func (k k3dWorld) AddAgent(_ context.Context, n string) error   { return k.log("AddAgent %s", n) }
func (k k3dWorld) WaitNodeReady(context.Context, string) error  { return k.wait() }

type fluxWorld struct{ *world }

func (f fluxWorld) Observe(context.Context) (facts.Flux, error) {
	return facts.Flux{InPlace: f.did("Flux.Install"), Reason: "r"}, nil
}
func (f fluxWorld) SeedSecret(_ context.Context, ns, name string, _ profiles.SecretRef) error {
	return f.log("SeedSecret %s/%s", ns, name)
}
func (f fluxWorld) Install(context.Context) error            { return f.log("Flux.Install") }
func (f fluxWorld) WaitKustomizations(context.Context) error { return f.wait() }

func (w *world) backends() Backends {
	return Backends{VMs: w, Hosts: w, K3s: w, K3d: k3dWorld{w}, Flux: fluxWorld{w}}
}

func fresh(s *profiles.Spec) Backends {
	return Backends{VMs: offline.VMs{}, Hosts: offline.Hosts{Spec: s}, K3s: offline.K3s{}, K3d: offline.K3d{}, Flux: offline.Flux{}}
}

func changes(r *plan.Report) []string {
	var out []string
	for _, s := range r.Steps {
		out = append(out, s.Changes...)
	}
	return out
}

func load(t *testing.T, name string) *profiles.Loaded {
	t.Helper()
	l, err := profiles.Loader{}.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestRealRunMakesExactlyTheChangesThePlanShows(t *testing.T) {
	for _, name := range []string{"production", "staging"} {
		t.Run(name, func(t *testing.T) {
			l := load(t, name)
			dryPlan, err := Create(&l.Profile, fresh(&l.Spec), Options{})
			if err != nil {
				t.Fatal(err)
			}
			dry, err := plan.Run(context.Background(), dryPlan, plan.Options{DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			w := &world{spec: &l.Spec}
			wetPlan, err := Create(&l.Profile, w.backends(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			wet, err := plan.Run(context.Background(), wetPlan, plan.Options{Parallel: 1})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(changes(dry), changes(wet)) {
				t.Fatalf("dry run listed\n%s\nreal run made\n%s", strings.Join(changes(dry), "\n"), strings.Join(changes(wet), "\n"))
			}
			if len(w.calls) != len(changes(wet)) {
				t.Fatalf("%d provider calls for %d changes: %v", len(w.calls), len(changes(wet)), w.calls)
			}
			// The world now has everything: a second run changes nothing.
			again, _ := Create(&l.Profile, w.backends(), Options{})
			w.k3s = map[string]facts.K3s{}
			for _, n := range l.Spec.Nodes {
				w.k3s[n.Name] = facts.K3s{Installed: true, Unit: "k3s", Active: true, HasData: true, TokenMatches: true, Version: l.Spec.K3s.Version, Config: k3s.NodeConfig(&l.Spec, n, nil).Render()}
			}
			rep, err := plan.Run(context.Background(), again, plan.Options{})
			if err != nil || rep.Changes() != 0 {
				t.Fatalf("second run: %d changes, %v", rep.Changes(), err)
			}
		})
	}
}

func TestProductionJoinsTheFirstServerAfterInit(t *testing.T) {
	l := load(t, "production")
	w := &world{spec: &l.Spec}
	p, err := Create(&l.Profile, w.backends(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plan.Run(context.Background(), p, plan.Options{}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range w.calls {
		if strings.HasPrefix(c, "WriteConfig") || strings.HasPrefix(c, "Install ") {
			got = append(got, c)
		}
	}
	want := []string{
		"WriteConfig kube-srv-1 cluster-init", "Install kube-srv-1",
		"WriteConfig kube-srv-2 join kube-srv-1", "Install kube-srv-2",
		"WriteConfig kube-srv-3 join kube-srv-1", "Install kube-srv-3",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("K3s calls = %v, want %v", got, want)
	}
}

func TestRealRunRefusesWithoutProviders(t *testing.T) {
	l := load(t, "production")
	_, err := Create(&l.Profile, Backends{}, Options{})
	if !errors.Is(err, ErrNoBackend) || !strings.Contains(err.Error(), "Proxmox VMs") {
		t.Fatalf("err = %v", err)
	}
}

// A running cluster whose K3s version or config.yaml differs from the
// profile is drift: create stops before any change, naming every node
// and what differs; nothing is called "in place".
func TestCreateStopsOnDriftNamingEveryNodeAndChangesNothing(t *testing.T) {
	l := load(t, "production")
	l.Spec.Proxmox = nil
	running := map[string]facts.K3s{}
	for _, n := range l.Spec.Nodes {
		running[n.Name] = facts.K3s{Installed: true, Unit: "k3s", Active: true, HasData: true, TokenMatches: true, CAHash: "ca1",
			Version: l.Spec.K3s.Version, Config: k3s.NodeConfig(&l.Spec, n, nil).Render()}
	}
	l.Spec.K3s.Version = "v1.33.5+k3s1"
	l.Spec.DNS.Records = append(l.Spec.DNS.Records, profiles.DNSRecord{Name: "api.ronaldlokers.nl", Targets: []string{"10.0.40.101"}})
	w := &world{spec: &l.Spec, k3s: running}
	for _, n := range l.Spec.Nodes {
		for _, f := range w.AssumeFresh(n).Fixes { // prerequisites in place
			w.calls = append(w.calls, "ApplyPrerequisite "+n.Name+" "+f.Item)
		}
	}
	before := len(w.calls)
	p, err := Cluster(&l.Profile, w.backends(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec := &plan.Recorder{}
	_, err = plan.Run(context.Background(), p, plan.Options{Sink: rec})
	var d *DriftError
	if !errors.As(err, &d) || len(d.Nodes) != 3 {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{
		"K3s differs from the profile on 3 nodes:",
		"kube-srv-2: k3s v1.33.4+k3s1 installed, profile wants v1.33.5+k3s1; config.yaml tls-san",
		"api.ronaldlokers.nl]",
		"roll the change out one node at a time with labctl upgrade",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if len(w.calls) != before {
		t.Errorf("drift, yet calls were made: %v", w.calls[before:])
	}
	for _, e := range rec.Events() {
		if e.Kind == plan.KindStepDone && e.Status == plan.StatusSkipped && strings.HasPrefix(e.Step, "k3s-") {
			t.Errorf("%s marked in place despite drift", e.Step)
		}
	}
}

// Destroy of a profile whose hosts were given uninstalls K3s on every
// node (prerequisites untouched), then removes the context; a second run
// finds nothing to do.
func TestDestroyOfGivenHostsUninstallsK3sAndKeepsPrerequisites(t *testing.T) {
	l := load(t, "production")
	l.Spec.Proxmox = nil
	w := &world{spec: &l.Spec, k3s: map[string]facts.K3s{}}
	for _, n := range l.Spec.Nodes {
		w.k3s[n.Name] = facts.K3s{Installed: true, Unit: "k3s", Active: true, HasData: true}
	}
	p, err := Destroy(&l.Profile, w.backends(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := plan.Run(context.Background(), p, plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"RemoveContext", "Uninstall kube-srv-1", "Uninstall kube-srv-2", "Uninstall kube-srv-3"}
	got := append([]string(nil), w.calls...)
	slices.Sort(got)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("calls %v, want %v", got, want)
	}
	if w.calls[len(w.calls)-1] != "RemoveContext" {
		t.Errorf("context removed before the hosts: %v", w.calls)
	}
	for _, c := range changes(rep) {
		if strings.Contains(c, "open-iscsi") {
			t.Errorf("destroy touches prerequisites: %s", c)
		}
	}
	p, _ = Destroy(&l.Profile, w.backends(), Options{})
	if rep, err := plan.Run(context.Background(), p, plan.Options{}); err != nil || rep.Changes() != 0 {
		t.Fatalf("second destroy: %d changes, %v", rep.Changes(), err)
	}
}
