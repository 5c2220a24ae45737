package flow

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3s"
	"github.com/labctl/labctl/provision/prereq"
	"github.com/labctl/labctl/provision/proxmox"
)

// recorder implements every provider interface by logging the call; it
// lets the test compare a real run's provider calls with the dry run.
type recorder struct {
	mu    sync.Mutex
	calls []string
	waits int
	// servers, when set, makes Decide observe them all fresh.
	servers []profiles.Node
}

func (r *recorder) log(format string, args ...any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf(format, args...))
	return nil
}

func (r *recorder) wait() error { r.mu.Lock(); defer r.mu.Unlock(); r.waits++; return nil }

// ObserveVM reports what the recorded calls made: a VM exists once
// configured, and runs once started.
func (r *recorder) ObserveVM(_ context.Context, n profiles.Node) (proxmox.State, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var st proxmox.State
	for _, c := range r.calls {
		switch c {
		case "ConfigureVM " + n.Name:
			st.Exists, st.Managed, st.Configured = true, true, true
		case "StartVM " + n.Name:
			st.Running = true
		}
	}
	return st, nil
}

func (r *recorder) CloneVM(_ context.Context, n profiles.Node) error {
	return r.log("CloneVM %s", n.Name)
}
func (r *recorder) ConfigureVM(_ context.Context, n profiles.Node) error {
	return r.log("ConfigureVM %s", n.Name)
}
func (r *recorder) StartVM(_ context.Context, n profiles.Node) error {
	return r.log("StartVM %s", n.Name)
}
func (r *recorder) WaitSSH(context.Context, profiles.Node) error { return r.wait() }
func (r *recorder) PrerequisiteFixes(context.Context, profiles.Node) ([]prereq.Fix, []string, error) {
	return prereq.Fixes(nil, "/var/lib/longhorn"), nil, nil // a fresh host
}
func (r *recorder) ApplyPrerequisite(_ context.Context, n profiles.Node, fix prereq.Fix) error {
	return r.log("ApplyPrerequisite %s %s", n.Name, fix.Item)
}
func (r *recorder) Decide(context.Context) (k3s.Decision, error) {
	var states []k3s.ServerState
	for _, n := range r.servers {
		states = append(states, k3s.ServerState{Node: n})
	}
	return k3s.Decide(states)
}
func (r *recorder) Installed(context.Context, profiles.Node) (bool, error) { return false, nil }
func (r *recorder) WriteToken(_ context.Context, n profiles.Node) error {
	return r.log("WriteToken %s", n.Name)
}
func (r *recorder) WriteConfig(_ context.Context, n profiles.Node, join *profiles.Node) error {
	if join == nil {
		return r.log("WriteConfig %s cluster-init", n.Name)
	}
	return r.log("WriteConfig %s join %s", n.Name, join.Name)
}
func (r *recorder) Install(_ context.Context, n profiles.Node) error {
	return r.log("Install %s", n.Name)
}
func (r *recorder) WaitMember(context.Context, profiles.Node) error { return r.wait() }
func (r *recorder) WriteKubeconfig(context.Context) error           { return r.log("WriteKubeconfig") }
func (r *recorder) KubeconfigCurrent(context.Context) (bool, error) { return false, nil }
func (r *recorder) CreateCluster(context.Context) error             { return r.log("CreateCluster") }
func (r *recorder) Observe(context.Context) (bool, error)           { return false, nil }
func (r *recorder) WaitNodes(context.Context) error                 { return r.wait() }
func (r *recorder) SeedSecret(_ context.Context, ns, name string, _ profiles.SecretRef) error {
	return r.log("SeedSecret %s/%s", ns, name)
}
func (r *recorder) WaitKustomizations(context.Context) error { return r.wait() }

// fluxRecorder disambiguates Install (K3s and Flux share the name).
type fluxRecorder struct{ *recorder }

func (f fluxRecorder) Install(context.Context) error { return f.log("Flux.Install") }

func changes(r *plan.Report) []string {
	var out []string
	for _, s := range r.Steps {
		out = append(out, s.Changes...)
	}
	return out
}

func TestRealRunMakesExactlyTheChangesThePlanShows(t *testing.T) {
	for _, name := range []string{"production", "staging"} {
		t.Run(name, func(t *testing.T) {
			l, err := profiles.Loader{}.Load(name)
			if err != nil {
				t.Fatal(err)
			}
			dryPlan, err := Create(&l.Profile, Backends{}, Options{DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			dry, err := plan.Run(context.Background(), dryPlan, plan.Options{DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			rec := &recorder{servers: l.Spec.Servers()}
			b := Backends{VMs: rec, Hosts: rec, K3s: rec, K3d: rec, Flux: fluxRecorder{rec}}
			wetPlan, err := Create(&l.Profile, b, Options{})
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
			if len(rec.calls) != len(changes(wet)) {
				t.Fatalf("%d provider calls for %d changes: %v", len(rec.calls), len(changes(wet)), rec.calls)
			}
		})
	}
}

func TestProductionJoinsTheFirstServerAfterInit(t *testing.T) {
	l, err := profiles.Loader{}.Load("production")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{servers: l.Spec.Servers()}
	p, err := Create(&l.Profile, Backends{VMs: rec, Hosts: rec, K3s: rec, Flux: fluxRecorder{rec}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plan.Run(context.Background(), p, plan.Options{}); err != nil {
		t.Fatal(err)
	}
	var k3s []string
	for _, c := range rec.calls {
		if strings.HasPrefix(c, "WriteConfig") || strings.HasPrefix(c, "Install ") {
			k3s = append(k3s, c)
		}
	}
	want := []string{
		"WriteConfig kube-srv-1 cluster-init", "Install kube-srv-1",
		"WriteConfig kube-srv-2 join kube-srv-1", "Install kube-srv-2",
		"WriteConfig kube-srv-3 join kube-srv-1", "Install kube-srv-3",
	}
	if !reflect.DeepEqual(k3s, want) {
		t.Fatalf("K3s calls = %v, want %v", k3s, want)
	}
}

func TestRealRunRefusesWithoutProviders(t *testing.T) {
	l, err := profiles.Loader{}.Load("production")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Create(&l.Profile, Backends{}, Options{})
	if !errors.Is(err, ErrNoBackend) || !strings.Contains(err.Error(), "Proxmox VMs") {
		t.Fatalf("err = %v", err)
	}
}
