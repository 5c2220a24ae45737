package bootstrap

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/labctl/labctl/facts"
)

// ForREST makes the Backend's client from a REST config (the one labctl
// reached the cluster with) instead of the kubeconfig file.
func (b *Backend) ForREST(rc *rest.Config) error {
	scheme, err := Scheme()
	if err != nil {
		return err
	}
	b.Client, err = client.New(rc, client.Options{Scheme: scheme})
	return err
}

// graph is every Kustomization in the cluster, with the revision of the
// source flux-system fetched last.
type graph struct {
	ks       []facts.Kustomization
	revision string
}

func (g graph) find(namespace, name string) (facts.Kustomization, bool) {
	for _, k := range g.ks {
		if k.Name == name && k.Namespace == namespace {
			return k, true
		}
	}
	return facts.Kustomization{}, false
}

// settled: k applied the source's latest revision and is Ready.
func (g graph) settled(k facts.Kustomization) bool {
	return k.Ready && !k.Stale && (g.revision == "" || k.Applied == g.revision)
}

// nudges are the Kustomizations waiting for dependencies that are all
// settled now, with no reconcile request pending: kustomize-controller
// would only look again after its requeue interval.
func (g graph) nudges() []facts.Kustomization {
	var out []facts.Kustomization
	for _, k := range g.ks {
		if k.Ready || k.Reason != meta.DependencyNotReadyReason || len(k.DependsOn) == 0 {
			continue
		}
		if k.Requested != "" && k.Requested != k.Handled {
			continue
		}
		all := true
		for _, d := range k.DependsOn {
			ns, name := k.Namespace, d
			if a, b, ok := strings.Cut(d, "/"); ok {
				ns, name = a, b
			}
			dep, ok := g.find(ns, name)
			if !ok || !g.settled(dep) {
				all = false
				break
			}
		}
		if all {
			out = append(out, k)
		}
	}
	return out
}

// readGraph reads every Kustomization and flux-system's GitRepository.
func readGraph(ctx context.Context, kc client.Client) (graph, error) {
	var g graph
	var repo sourcev1.GitRepository
	switch err := kc.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: "flux-system"}, &repo); {
	case err == nil:
		if repo.Status.Artifact != nil {
			g.revision = repo.Status.Artifact.Revision
		}
	case !apierrors.IsNotFound(err) && !apimeta.IsNoMatchError(err):
		return g, err
	}
	var list kustomizev1.KustomizationList
	if err := kc.List(ctx, &list); err != nil {
		if apimeta.IsNoMatchError(err) {
			return g, nil
		}
		return g, err
	}
	for i := range list.Items {
		g.ks = append(g.ks, kustomizationFact(&list.Items[i]))
	}
	slices.SortFunc(g.ks, func(a, b facts.Kustomization) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return g, nil
}

func kustomizationFact(ks *kustomizev1.Kustomization) facts.Kustomization {
	k := facts.Kustomization{Namespace: ks.Namespace, Name: ks.Name, Path: ks.Spec.Path, Applied: ks.Status.LastAppliedRevision,
		Requested: ks.Annotations[meta.ReconcileRequestAnnotation], Handled: ks.Status.LastHandledReconcileAt, Reason: "Progressing", Message: "no Ready condition yet"}
	for _, d := range ks.Spec.DependsOn {
		if d.Namespace != "" && d.Namespace != ks.Namespace {
			k.DependsOn = append(k.DependsOn, d.Namespace+"/"+d.Name)
		} else {
			k.DependsOn = append(k.DependsOn, d.Name)
		}
	}
	if c := apimeta.FindStatusCondition(ks.Status.Conditions, meta.ReadyCondition); c != nil {
		k.Ready = c.Status == metav1.ConditionTrue
		k.Reason, k.Message = c.Reason, c.Message
		k.Stale = ks.Status.ObservedGeneration != ks.Generation
	}
	return k
}

// requestReconcile asks the controller to reconcile obj now, as `flux
// reconcile` does: the requestedAt annotation.
func requestReconcile(ctx context.Context, kc client.Client, obj client.Object) error {
	patch := client.MergeFrom(obj.DeepCopyObject().(client.Object))
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[meta.ReconcileRequestAnnotation] = time.Now().Format(time.RFC3339Nano)
	obj.SetAnnotations(ann)
	return kc.Patch(ctx, obj, patch)
}

// nudge requests the reconciliation of the Kustomization k.
func nudge(ctx context.Context, kc client.Client, k facts.Kustomization) error {
	var ks kustomizev1.Kustomization
	if err := kc.Get(ctx, client.ObjectKey{Namespace: k.Namespace, Name: k.Name}, &ks); err != nil {
		return err
	}
	return requestReconcile(ctx, kc, &ks)
}

// nudgeSource requests flux-system's GitRepository fetch now (after
// bootstrap's commit, instead of at its next interval).
func nudgeSource(ctx context.Context, kc client.Client) error {
	var repo sourcev1.GitRepository
	if err := kc.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: "flux-system"}, &repo); err != nil {
		return err
	}
	return requestReconcile(ctx, kc, &repo)
}

// State reads Flux's sync and every Kustomization, for verify; nil when
// Flux is not installed.
func (b *Backend) State(ctx context.Context) (*facts.FluxState, error) {
	kc, err := b.kube()
	if err != nil {
		return nil, err
	}
	var repo sourcev1.GitRepository
	err = kc.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: "flux-system"}, &repo)
	if apierrors.IsNotFound(err) || apimeta.IsNoMatchError(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("GitRepository %s/flux-system: %w", Namespace, err)
	}
	st := &facts.FluxState{URL: repo.Spec.URL}
	if repo.Spec.Reference != nil {
		st.Branch = repo.Spec.Reference.Branch
	}
	if c := apimeta.FindStatusCondition(repo.Status.Conditions, meta.ReadyCondition); c != nil {
		st.SourceReady, st.SourceMessage = c.Status == metav1.ConditionTrue, c.Message
	}
	g, err := readGraph(ctx, kc)
	if err != nil {
		return nil, err
	}
	st.Revision, st.Kustomization = g.revision, g.ks
	if k, ok := g.find(Namespace, "flux-system"); ok {
		st.Path = k.Path
	}
	return st, nil
}
