package bootstrap

import (
	"context"
	"errors"
	"strings"
	"testing"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/profiles"
)

func spec(t *testing.T, name string) *profiles.Spec {
	t.Helper()
	l, err := profiles.Loader{}.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	return &l.Spec
}

func ks(name, path string, ready bool) *kustomizev1.Kustomization {
	k := &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace, Generation: 1}}
	k.Spec.Path = path
	k.Status.ObservedGeneration = 1
	st := metav1.ConditionFalse
	if ready {
		st = metav1.ConditionTrue
	}
	k.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: st, Reason: "ReconciliationSucceeded", Message: "Applied revision: main@sha1:0123"}}
	return k
}

func cluster(t *testing.T, path string, ready bool, s *profiles.Spec, mutate ...func(*kustomizev1.Kustomization)) client.Client {
	t.Helper()
	scheme, err := Scheme()
	if err != nil {
		t.Fatal(err)
	}
	repo := &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Name: "flux-system", Namespace: Namespace}}
	repo.Spec.URL = s.Flux.URL
	repo.Spec.Reference = &sourcev1.GitRepositoryRef{Branch: s.Flux.Branch}
	objs := []client.Object{repo, ks("flux-system", path, true)}
	for _, k := range s.Flux.Kustomizations {
		o := ks(k.Name, "./"+k.Path, ready)
		for _, m := range mutate {
			m(o)
		}
		objs = append(objs, o)
	}
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
}

// Observe: nothing installed → run; the profile's path with everything
// Ready → done; something not Ready → run (and wait); flux-system syncing
// the other environment's path → refused naming both, unless forced.
func TestObserveRefusesTheOtherEnvironmentsPath(t *testing.T) {
	ctx := context.Background()
	staging, production := spec(t, "staging"), spec(t, "production")
	scheme, _ := Scheme()
	empty := fake.NewClientBuilder().WithScheme(scheme).Build()
	cases := []struct {
		name  string
		b     *Backend
		done  bool
		err   error
		inErr string
	}{
		{"nothing yet", &Backend{Spec: staging, Client: empty}, false, nil, ""},
		{"in place and Ready", &Backend{Spec: staging, Client: cluster(t, "./clusters/staging", true, staging)}, true, nil, ""},
		{"not all Ready", &Backend{Spec: staging, Client: cluster(t, "./clusters/staging", false, staging)}, false, nil, ""},
		{"reconciling a newer commit", &Backend{Spec: staging, Client: reconciling(t, staging)}, true, nil, ""},
		{"production on staging", &Backend{Spec: production, Client: cluster(t, "./clusters/staging", true, staging)}, false, ErrOtherPath, `it syncs "./clusters/staging", the profile wants "./clusters/production"`},
		{"forced", &Backend{Spec: production, Client: cluster(t, "./clusters/staging", true, staging), Force: true}, false, nil, ""},
	}
	for _, c := range cases {
		f, err := c.b.Observe(ctx)
		done := f.InPlace
		if done != c.done || (err == nil && f.Reason == "") || (c.err == nil && err != nil) || (c.err != nil && !errors.Is(err, c.err)) || !strings.Contains(errString(err), c.inErr) {
			t.Errorf("%s: done=%v err=%v; want done=%v err=%v (%q)", c.name, done, err, c.done, c.err, c.inErr)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// A Kustomization waiting for its dependencies is nudged once all of them
// are Ready at the source's latest revision, and not again while its
// request is pending; one whose dependency lags behind is left alone.
func TestNudgesOnlyWhenEveryDependencyIsSettled(t *testing.T) {
	rev := "main@sha1:2b"
	ready := func(name string, deps ...string) facts.Kustomization {
		return facts.Kustomization{Namespace: Namespace, Name: name, DependsOn: deps, Ready: true, Reason: "ReconciliationSucceeded", Applied: rev}
	}
	waiting := func(name string, deps ...string) facts.Kustomization {
		return facts.Kustomization{Namespace: Namespace, Name: name, DependsOn: deps, Reason: "DependencyNotReady"}
	}
	behind := ready("infrastructure-controllers")
	behind.Applied = "main@sha1:1a"
	pending := waiting("monitoring-configs", "monitoring-controllers")
	pending.Requested = "2026-12-06T12:00:00Z"
	g := graph{revision: rev, ks: []facts.Kustomization{
		ready("flux-system"), behind, waiting("infrastructure-configs", "infrastructure-controllers"),
		ready("monitoring-controllers"), waiting("monitoring-dashboards", "monitoring-controllers"), pending,
		waiting("apps", "infrastructure-configs", "monitoring-controllers"),
	}}
	var names []string
	for _, k := range g.nudges() {
		names = append(names, k.Name)
	}
	if got := strings.Join(names, " "); got != "monitoring-dashboards" {
		t.Errorf("nudged %q, want monitoring-dashboards only", got)
	}
	pending.Handled = pending.Requested
	g.ks[5] = pending
	if n := len(g.nudges()); n != 2 {
		t.Errorf("a handled request: %d nudges, want 2", n)
	}
}

// reconciling is a cluster where apps applied a revision before and is now
// working on the next one (Ready Unknown, Progressing).
func reconciling(t *testing.T, s *profiles.Spec) client.Client {
	t.Helper()
	return cluster(t, "./clusters/staging", true, s, func(k *kustomizev1.Kustomization) {
		if k.Name == "apps" {
			k.Status.LastAppliedRevision = "main@sha1:0123"
			k.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: metav1.ConditionUnknown, Reason: "Progressing", Message: "Reconciliation in progress"}}
		}
	})
}

// --force re-points an existing flux-system at the profile's path (flux2's
// bootstrap would refuse otherwise); the same path is left alone.
func TestForceRepointsFluxSystem(t *testing.T) {
	ctx := context.Background()
	staging, production := spec(t, "staging"), spec(t, "production")
	c := cluster(t, "./clusters/staging", true, staging)
	b := &Backend{Spec: production, Client: c, Force: true}
	if err := b.repoint(ctx, c); err != nil {
		t.Fatal(err)
	}
	var k kustomizev1.Kustomization
	if err := c.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: "flux-system"}, &k); err != nil {
		t.Fatal(err)
	}
	if k.Spec.Path != "./clusters/production" {
		t.Errorf("path after --force: %q", k.Spec.Path)
	}
	if err := b.repoint(ctx, c); err != nil {
		t.Fatal(err)
	}
}
