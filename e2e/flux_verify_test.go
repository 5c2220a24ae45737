//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/labctl/labctl/bootstrap"
	"github.com/labctl/labctl/e2e/testbed"
	"github.com/labctl/labctl/internal/dnstest"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/verify"
)

// fluxClient is a controller-runtime client that knows Flux's objects.
func fluxClient(t *testing.T, rc *rest.Config) client.Client {
	t.Helper()
	scheme, err := bootstrap.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(rc, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fetchNow asks source-controller to fetch flux-system's repository now
// (the requestedAt annotation) and waits until it has the commit.
func fetchNow(t *testing.T, ctx context.Context, c client.Client, commit string) {
	t.Helper()
	var repo sourcev1.GitRepository
	key := client.ObjectKey{Namespace: bootstrap.Namespace, Name: "flux-system"}
	if err := c.Get(ctx, key, &repo); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(repo.DeepCopy())
	if repo.Annotations == nil {
		repo.Annotations = map[string]string{}
	}
	repo.Annotations["reconcile.fluxcd.io/requestedAt"] = time.Now().Format(time.RFC3339Nano)
	if err := c.Patch(ctx, &repo, patch); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Minute); ; {
		if err := c.Get(ctx, key, &repo); err == nil && repo.Status.Artifact != nil && strings.HasSuffix(repo.Status.Artifact.Revision, commit) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("flux-system's source never fetched %s", commit)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// k3dVerifyE2E: verify on the k3d cluster with Flux, then a bad commit
// breaking apps (found by Flux/kustomization/apps alone), its revert,
// and a DNS record pointing elsewhere.
func k3dVerifyE2E(t *testing.T, ctx context.Context, file, kc string, repo *testbed.Repo, files map[string]string, c client.Client) {
	t.Run("VerifyK3dWithFlux", func(t *testing.T) {
		setInotify(t, verify.InotifyWatches, verify.InotifyInstances)
		l, err := profiles.Loader{}.LoadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		dns := dnstest.New(t)
		for _, r := range l.Spec.DNS.Records {
			dns.Set(r.Name, r.Targets...)
		}
		v := &verifier{file: file}
		v.opts.DNSServer, v.opts.Kubeconfig = dns.Addr, kc
		// The K3s stand-in has no local-path and no Traefik; the fixture
		// no kube-prometheus-stack, and one Kustomization the profile
		// does not list.
		v.expect(t, ctx, "on k3d as created", 2*time.Minute,
			"fail Storage/default class/cluster", "fail Ingress/http/127.0.0.1:18084", "warn Secrets/grafana admin/monitoring/kube-prometheus-stack-grafana", "warn Flux/graph/monitoring-configs")
		v.baseline = []string{"fail Storage/default class/cluster", "fail Ingress/http/127.0.0.1:18084", "warn Secrets/grafana admin/monitoring/kube-prometheus-stack-grafana", "warn Flux/graph/monitoring-configs"}
		_, text, took := v.run(t, ctx)
		t.Logf("verify on k3d: %s\n%s", took.Round(time.Millisecond), text)

		// A bad commit: apps' overlay names a file that does not exist.
		bad, err := repo.Commit(ctx, "break apps", map[string]string{"apps/staging/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../base\n  - missing.yaml\n"})
		if err != nil {
			t.Fatal(err)
		}
		fetchNow(t, ctx, c, bad)
		v.expect(t, ctx, "a Kustomization broken by a bad commit", 3*time.Minute, "fail Flux/kustomization/apps")
		good, err := repo.Commit(ctx, "revert: fix apps", map[string]string{"apps/staging/kustomization.yaml": files["apps/staging/kustomization.yaml"]})
		if err != nil {
			t.Fatal(err)
		}
		fetchNow(t, ctx, c, good)
		v.fluxSettled(t, ctx)
		v.expect(t, ctx, "after the revert", 3*time.Minute)

		rec := l.Spec.DNS.Records[0]
		dns.Set(rec.Name, "127.0.0.2")
		v.expect(t, ctx, "a DNS record pointing elsewhere", time.Minute, "fail DNS/record/"+rec.Name)
		dns.Set(rec.Name, rec.Targets...)
		v.expect(t, ctx, "after the DNS repair", time.Minute)
	})
}

// fluxSpeedE2E measures, on the same cluster and fixture, a commit
// travelling down the dependsOn chain with labctl's reconcile requests
// off and on: each run commits, has the source fetched at once (both
// runs alike), then waits with WaitKustomizations until every
// Kustomization applied the commit.
func fluxSpeedE2E(t *testing.T, ctx context.Context, spec *profiles.Spec, kc, context string, repo *testbed.Repo, c client.Client) {
	t.Run("FluxChainOffAndOn", func(t *testing.T) {
		if !measuring(t, "the Flux dependsOn chain with reconcile requests off and on") {
			t.Skip("a measurement: make e2e-bench")
		}
		run := func(noNudge bool, n int) time.Duration {
			commit, err := repo.Commit(ctx, fmt.Sprintf("chain replay %d", n), map[string]string{"NOTES.md": fmt.Sprintf("replay %d at %s\n", n, time.Now().Format(time.RFC3339Nano))})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			fetchNow(t, ctx, c, commit)
			var log bytes.Buffer
			b := &bootstrap.Backend{Spec: spec, Kubeconfig: kc, Context: context, NoNudge: noNudge, Log: &log, Timeout: 10 * time.Minute}
			if err := b.WaitKustomizations(ctx); err != nil {
				t.Fatalf("wait (nudges off=%t): %v\n%s", noNudge, err, log.String())
			}
			took := time.Since(start)
			t.Logf("chain with reconcile requests off=%t: %s\n%s", noNudge, took.Round(100*time.Millisecond), log.String())
			if !regexp.MustCompile(`Kustomization apps Ready after`).MatchString(log.String()) {
				t.Errorf("apps not reported:\n%s", log.String())
			}
			return took
		}
		off := run(true, 1)
		on := run(false, 2)
		ratio := float64(on) / float64(off)
		t.Logf("Flux dependsOn chain, same cluster and fixture: off %s, on %s: on = %.2f × off (goal ≤ 0.6)", off.Round(100*time.Millisecond), on.Round(100*time.Millisecond), ratio)
	})
}
