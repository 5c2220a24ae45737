// Package bootstrap installs Flux into a cluster and points it at the
// profile's GitOps repository, with flux2's pkg/bootstrap (v2.6.4) over
// plain git: the components are generated (from the release or a local
// manifests directory), committed to <path>/flux-system and applied; the
// sync (GitRepository + Kustomization flux-system) follows; then labctl
// waits for the repository's Kustomizations in their dependsOn order.
//
// Auth: an SSH deploy key for an ssh:// URL (spec.flux.deployKeyRef, or
// one labctl generates and keeps per profile, printing its public half),
// with the git host's key taken from known_hosts, never trusted on first
// use; or a token over HTTP(S) (spec.flux.tokenRef). The same credentials
// push labctl's commit and become Flux's source secret.
package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	fluxbootstrap "github.com/fluxcd/flux2/v2/pkg/bootstrap"
	"github.com/fluxcd/flux2/v2/pkg/manifestgen/install"
	"github.com/fluxcd/flux2/v2/pkg/manifestgen/sourcesecret"
	"github.com/fluxcd/flux2/v2/pkg/manifestgen/sync"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/git"
	"github.com/fluxcd/pkg/git/gogit"
	runclient "github.com/fluxcd/pkg/runtime/client"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/profiles"
)

// Namespace is where Flux runs.
const Namespace = "flux-system"

// Backend is the flow's Flux provider for one profile's cluster, reached
// through Kubeconfig's context Context.
type Backend struct {
	Spec       *profiles.Spec
	Kubeconfig string
	Context    string
	// Lookup reads environment variables for secret references.
	Lookup func(string) (string, bool)
	// Force lets the bootstrap replace a flux-system that syncs another
	// path (the staging/production mix-up is refused otherwise).
	Force bool
	// Log receives progress lines (never a secret).
	Log io.Writer
	// Timeout bounds each wait (default 5 minutes).
	Timeout time.Duration
	// Client, when set, is used instead of one made from Kubeconfig (and
	// is set to that one once made).
	Client client.Client
	// KeyDir keeps generated deploy keys, one per profile (Context).
	KeyDir string
	// NoNudge leaves every reconciliation to the controllers' own
	// requeues (for measuring what the requests gain).
	NoNudge bool
}

func (b *Backend) timeout() time.Duration {
	if b.Timeout == 0 {
		return 5 * time.Minute
	}
	return b.Timeout
}

func (b *Backend) kube() (client.Client, error) {
	if b.Client != nil {
		return b.Client, nil
	}
	getter := b.getter()
	rc, err := getter.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	scheme, err := Scheme()
	if err != nil {
		return nil, err
	}
	// Made once: the flux step seeds, observes, installs and waits with it.
	b.Client, err = client.New(rc, client.Options{Scheme: scheme})
	return b.Client, err
}

// Scheme knows the objects the bootstrap reads and writes.
func Scheme() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, kustomizev1.AddToScheme, sourcev1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	return scheme, nil
}

func (b *Backend) getter() *genericclioptions.ConfigFlags {
	f := genericclioptions.NewConfigFlags(false)
	f.KubeConfig, f.Context = &b.Kubeconfig, &b.Context
	return f
}

// secret resolves a reference (env or file).
func (b *Backend) secret(ref profiles.SecretRef) (string, error) {
	v, err := ref.Resolve(b.Lookup)
	if err != nil {
		return "", err
	}
	return v.Reveal(), nil
}

// SeedSecret creates or updates namespace/name with the referenced value
// under a key named after the secret's purpose.
func (b *Backend) SeedSecret(ctx context.Context, namespace, name string, ref profiles.SecretRef) error {
	v, err := b.secret(ref)
	if err != nil {
		return fmt.Errorf("secret %s/%s: %w", namespace, name, err)
	}
	kc, err := b.kube()
	if err != nil {
		return err
	}
	if err := kc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	key := "api-token"
	if name == "sops-age" {
		key = "age.agekey"
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	err = kc.Get(ctx, client.ObjectKeyFromObject(sec), sec)
	sec.StringData = map[string]string{key: v}
	switch {
	case apierrors.IsNotFound(err):
		return kc.Create(ctx, sec)
	case err != nil:
		return err
	}
	return kc.Update(ctx, sec)
}

// repoint sets an existing flux-system Kustomization's path to the
// profile's (--force): flux2's bootstrap itself refuses to overwrite a
// different path, and deleting the Kustomization would prune what it
// applied, Flux included.
func (b *Backend) repoint(ctx context.Context, kc client.Client) error {
	var ks kustomizev1.Kustomization
	err := kc.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: "flux-system"}, &ks)
	if apierrors.IsNotFound(err) || apimeta.IsNoMatchError(err) {
		return nil
	}
	if err != nil {
		return err
	}
	want := "./" + strings.TrimPrefix(b.Spec.Flux.Path, "./")
	if "./"+strings.TrimPrefix(ks.Spec.Path, "./") == want {
		return nil
	}
	fmt.Fprintf(b.log(), "--force: flux-system syncs %q; re-pointing it at %q\n", ks.Spec.Path, want)
	patch := client.MergeFrom(ks.DeepCopy())
	ks.Spec.Path = want
	return kc.Patch(ctx, &ks, patch)
}

// ErrOtherPath says flux-system already syncs another path.
var ErrOtherPath = errors.New("flux-system already syncs another path")

// Observe reports whether Flux already syncs the profile's repository,
// branch and path with flux-system and every Kustomization of the profile
// Ready (or reconciling a newer commit after having applied one). A flux-system syncing another path
// is ErrOtherPath unless Force.
func (b *Backend) Observe(ctx context.Context) (facts.Flux, error) {
	kc, err := b.kube()
	if err != nil {
		return facts.Flux{}, err
	}
	var ks kustomizev1.Kustomization
	err = kc.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: "flux-system"}, &ks)
	if apierrors.IsNotFound(err) || apimeta.IsNoMatchError(err) {
		return facts.Flux{Reason: "Flux is not installed"}, nil
	}
	if err != nil {
		return facts.Flux{}, err
	}
	want := "./" + strings.TrimPrefix(b.Spec.Flux.Path, "./")
	if ks.Spec.Path != want && "./"+strings.TrimPrefix(ks.Spec.Path, "./") != want {
		if b.Force {
			return facts.Flux{Reason: fmt.Sprintf("flux-system syncs %q; --force re-points it at %q", ks.Spec.Path, want)}, nil
		}
		return facts.Flux{}, fmt.Errorf("%w: it syncs %q, the profile wants %q (the staging/production mix-up?); pass --force to replace it", ErrOtherPath, ks.Spec.Path, want)
	}
	var repo sourcev1.GitRepository
	if err := kc.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: "flux-system"}, &repo); err != nil {
		if apierrors.IsNotFound(err) {
			return facts.Flux{Reason: "flux-system has no GitRepository"}, nil
		}
		return facts.Flux{}, err
	}
	if repo.Spec.URL != b.Spec.Flux.URL || repo.Spec.Reference == nil || repo.Spec.Reference.Branch != b.Spec.Flux.Branch {
		return facts.Flux{Reason: fmt.Sprintf("Flux syncs %s (%v), the profile wants %s branch %s: bootstrapping again", repo.Spec.URL, repo.Spec.Reference, b.Spec.Flux.URL, b.Spec.Flux.Branch)}, nil
	}
	states, err := b.states(ctx, kc)
	if err != nil {
		return facts.Flux{}, err
	}
	// In place: every Kustomization Ready, or applied before and now
	// reconciling a newer commit (Flux doing its job, not labctl's).
	for _, s := range states {
		if !s.Ready && !s.Reconciling {
			return facts.Flux{Reason: fmt.Sprintf("Flux is installed; Kustomization %s is not Ready (%s): bootstrapping again", s.Name, s.Message)}, nil
		}
	}
	return facts.Flux{InPlace: true, Reason: fmt.Sprintf("Flux syncs %s at %s, %d Kustomizations Ready", b.Spec.Flux.URL, want, len(states))}, nil
}

type state struct {
	Name  string
	Ready bool
	// Reconciling: applied before, now working on a newer revision.
	Reconciling bool
	Message     string
}

// states reads flux-system and the profile's Kustomizations.
func (b *Backend) states(ctx context.Context, kc client.Client) ([]state, error) {
	names := []string{"flux-system"}
	for _, k := range b.Spec.Flux.Kustomizations {
		names = append(names, k.Name)
	}
	var out []state
	for _, n := range names {
		var ks kustomizev1.Kustomization
		err := kc.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: n}, &ks)
		st := state{Name: n}
		switch {
		case apierrors.IsNotFound(err) || apimeta.IsNoMatchError(err):
			st.Message = "not created yet"
		case err != nil:
			return nil, err
		default:
			if c := apimeta.FindStatusCondition(ks.Status.Conditions, "Ready"); c != nil {
				st.Ready = c.Status == metav1.ConditionTrue && ks.Status.ObservedGeneration == ks.Generation
				// Waiting for a dependency that is itself reconciling
				// counts too (Ready False, DependencyNotReady).
				st.Reconciling = ks.Status.LastAppliedRevision != "" &&
					(c.Status == metav1.ConditionUnknown || c.Reason == "DependencyNotReady")
				st.Message = c.Reason + ": " + c.Message
			} else {
				st.Message = "no Ready condition yet"
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// Install runs flux2's bootstrap: components committed and applied, the
// source secret, the sync manifests committed and applied, then waits for
// the controllers and the flux-system GitRepository and Kustomization.
func (b *Backend) Install(ctx context.Context) error {
	f := b.Spec.Flux
	u, err := url.Parse(f.URL)
	if err != nil {
		return fmt.Errorf("spec.flux.url: %w", err)
	}
	var auth *git.AuthOptions
	var sourceSecret *corev1.Secret // set for SSH: labctl writes it
	var key DeployKey
	ss := sourcesecret.MakeDefaultOptions()
	ss.Name, ss.Namespace = "flux-system", Namespace
	switch u.Scheme {
	case "ssh":
		if auth, sourceSecret, key, err = b.sshAuth(u); err != nil {
			return err
		}
		if key.Generated {
			fmt.Fprintf(b.log(), "generated a deploy key for %s; add it to the repository with write access:\n  %s\n", f.URL, key.Public)
		}
	case "http", "https":
		if f.TokenRef == nil {
			return fmt.Errorf("spec.flux.tokenRef is required to push to %s", f.URL)
		}
		token, err := b.secret(*f.TokenRef)
		if err != nil {
			return fmt.Errorf("spec.flux.tokenRef: %w", err)
		}
		auth = &git.AuthOptions{Transport: git.TransportType(u.Scheme), Host: u.Host, Username: f.Username, Password: token}
		ss.Username, ss.Password = f.Username, token
	default:
		return fmt.Errorf("spec.flux.url %q: want ssh:// (deploy key) or http(s):// (token)", f.URL)
	}
	work, err := os.MkdirTemp("", "labctl-flux-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	opts := []gogit.ClientOption{gogit.WithDiskStorage()}
	if u.Scheme == "http" {
		opts = append(opts, gogit.WithInsecureCredentialsOverHTTP())
	}
	gc, err := gogit.NewClient(work, auth, opts...)
	if err != nil {
		return err
	}
	defer gc.Close()
	kc, err := b.kube()
	if err != nil {
		return err
	}
	if sourceSecret != nil {
		if err := applySourceSecret(ctx, kc, sourceSecret); err != nil {
			return fmt.Errorf("source secret %s/flux-system: %w", Namespace, err)
		}
	}
	if b.Force {
		if err := b.repoint(ctx, kc); err != nil {
			return err
		}
	}
	path := strings.TrimPrefix(f.Path, "./")
	prov, err := fluxbootstrap.NewPlainGitProvider(gc, kc,
		fluxbootstrap.WithBranch(f.Branch),
		fluxbootstrap.WithRepositoryURL(f.URL),
		fluxbootstrap.WithSignature("labctl", "labctl@localhost"),
		fluxbootstrap.WithCommitMessageAppendix("Bootstrapped by labctl"),
		fluxbootstrap.WithKubeconfig(b.getter(), &runclient.Options{}),
		fluxbootstrap.WithLogger(logger{b.log()}),
	)
	if err != nil {
		return err
	}
	io := install.MakeDefaultOptions()
	io.Version, io.Namespace, io.TargetPath = f.Version, Namespace, path
	io.Components, io.ComponentsExtra = f.Components, nil
	io.Timeout = b.timeout()
	base := ""
	if f.Manifests != "" {
		dir, err := profiles.ExpandHome(f.Manifests)
		if err != nil {
			return err
		}
		io.BaseURL = dir
		if base, err = os.MkdirTemp("", "labctl-flux-manifests-"); err != nil {
			return err
		}
		defer os.RemoveAll(base)
	}
	so := sync.MakeDefaultOptions()
	so.Name, so.Namespace, so.URL, so.Branch, so.Secret, so.TargetPath = "flux-system", Namespace, f.URL, f.Branch, "flux-system", path
	so.Interval = time.Minute
	if err := b.run(ctx, kc, prov, base, io, ss, so); err != nil {
		if key.Public != "" && (strings.Contains(err.Error(), "unable to authenticate") || strings.Contains(err.Error(), "permission denied") || strings.Contains(err.Error(), "authentication required")) {
			return fmt.Errorf("flux bootstrap: %w\nthe deploy key may lack write access to %s; its public half:\n  %s", err, f.URL, key.Public)
		}
		return fmt.Errorf("flux bootstrap: %w", err)
	}
	return nil
}

// run is flux2's bootstrap.Run step by step, with one addition: after
// the sync commit, flux-system's GitRepository is asked to fetch at once
// (one that exists from an earlier bootstrap would wait for its interval).
func (b *Backend) run(ctx context.Context, kc client.Client, prov *fluxbootstrap.PlainGitBootstrapper, base string, io install.Options, ss sourcesecret.Options, so sync.Options) error {
	if err := prov.ReconcileComponents(ctx, base, io, ss); err != nil {
		return err
	}
	if err := prov.ReconcileSourceSecret(ctx, ss); err != nil {
		return err
	}
	if err := prov.ReconcileSyncConfig(ctx, so); err != nil {
		return err
	}
	if !b.NoNudge {
		if err := nudgeSource(ctx, kc); err != nil {
			return fmt.Errorf("request a fetch of %s/flux-system: %w", Namespace, err)
		}
	}
	var errs []error
	for _, report := range []func() error{
		func() error { return prov.ReportGitRepoHealth(ctx, so, 2*time.Second, b.timeout()) },
		func() error { return prov.ReportKustomizationHealth(ctx, so, 2*time.Second, b.timeout()) },
		func() error { return prov.ReportComponentsHealth(ctx, io, b.timeout()) },
	} {
		if err := report(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("bootstrap failed with %d health check failure(s): %w", len(errs), errors.Join(errs...))
	}
	return nil
}

func (b *Backend) log() io.Writer {
	if b.Log == nil {
		return io.Discard
	}
	return b.Log
}

// WaitKustomizations follows the repository's own graph: it waits until
// every Kustomization in the cluster (the profile's and any other the
// repository defines) is Ready at the source's latest revision. When a
// Kustomization's dependencies have all turned Ready it asks for its
// reconciliation at once (as `flux reconcile` does) instead of leaving
// it to kustomize-controller's requeue, unless NoNudge. It prints each as
// it turns Ready, then how the graph differs from the profile's; a
// Kustomization the profile lists that the repository does not define
// is an error naming those it does.
func (b *Backend) WaitKustomizations(ctx context.Context) error {
	kc, err := b.kube()
	if err != nil {
		return err
	}
	start := time.Now()
	deadline := start.Add(b.timeout())
	reported := map[string]bool{}
	listed := map[string]bool{}
	for _, k := range b.Spec.Flux.Kustomizations {
		listed[k.Name] = true
	}
	for {
		g, err := readGraph(ctx, kc)
		if err != nil {
			return err
		}
		var waiting []string
		for _, k := range g.ks {
			key := k.Namespace + "/" + k.Name
			if !g.settled(k) {
				waiting = append(waiting, fmt.Sprintf("%s (%s: %s)", k.Name, k.Reason, firstLine(k.Message)))
				continue
			}
			if !reported[key] {
				reported[key] = true
				note := ""
				if k.Name != "flux-system" && !listed[k.Name] {
					note = " (not in the profile)"
				}
				fmt.Fprintf(b.log(), "Kustomization %s Ready%s after %s\n", k.Name, note, time.Since(start).Round(100*time.Millisecond))
			}
		}
		if !b.NoNudge {
			for _, k := range g.nudges() {
				if err := nudge(ctx, kc, k); err != nil {
					return fmt.Errorf("request reconciliation of %s: %w", k.Name, err)
				}
				fmt.Fprintf(b.log(), "requested the reconciliation of %s after %s: its dependencies are Ready\n", k.Name, time.Since(start).Round(100*time.Millisecond))
			}
		}
		if len(waiting) == 0 && len(g.ks) > 0 {
			return b.reportGraph(g)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kustomizations not Ready after %s: %s", b.timeout(), strings.Join(waiting, "; "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// reportGraph compares the settled graph with the profile's list.
func (b *Backend) reportGraph(g graph) error {
	var defined, missing []string
	for _, k := range g.ks {
		if k.Name != "flux-system" {
			defined = append(defined, k.Name)
		}
	}
	for _, w := range b.Spec.Flux.Kustomizations {
		k, ok := g.find(Namespace, w.Name)
		if !ok {
			missing = append(missing, w.Name)
			continue
		}
		if a, c := slices.Sorted(slices.Values(w.DependsOn)), slices.Sorted(slices.Values(k.DependsOn)); !slices.Equal(a, c) {
			fmt.Fprintf(b.log(), "warning: Kustomization %s depends on [%s] in the repository, the profile expects [%s]\n", w.Name, strings.Join(c, ", "), strings.Join(a, ", "))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the repository at %s defines no Kustomization %s (it defines %s): fix spec.flux.kustomizations or the repository", g.revision, strings.Join(missing, ", "), strings.Join(defined, ", "))
	}
	return nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	if len(l) > 160 {
		l = l[:160] + "…"
	}
	return l
}

// logger adapts flux2's bootstrap logger to a writer.
type logger struct{ w io.Writer }

func (l logger) Actionf(f string, a ...interface{})   { fmt.Fprintf(l.w, "► "+f+"\n", a...) }
func (l logger) Generatef(f string, a ...interface{}) { fmt.Fprintf(l.w, "✚ "+f+"\n", a...) }
func (l logger) Waitingf(f string, a ...interface{})  { fmt.Fprintf(l.w, "◎ "+f+"\n", a...) }
func (l logger) Successf(f string, a ...interface{})  { fmt.Fprintf(l.w, "✔ "+f+"\n", a...) }
func (l logger) Warningf(f string, a ...interface{})  { fmt.Fprintf(l.w, "⚠️ "+f+"\n", a...) }
func (l logger) Failuref(f string, a ...interface{})  { fmt.Fprintf(l.w, "✗ "+f+"\n", a...) }
