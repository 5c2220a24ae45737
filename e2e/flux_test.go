//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/labctl/labctl/bootstrap"
	"github.com/labctl/labctl/commands"
	"github.com/labctl/labctl/e2e/testbed"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3d"
)

// TestCreateLocalWithFluxReconcilesTheFixtureInOrder is the e2e on k3d:
// `labctl create` on a profile extending `local`, with Flux bootstrapped
// (locally built controllers, offline manifests) from the fixture GitOps
// repository served over HTTP from the host: every Kustomization Ready,
// their Ready transitions in the dependsOn order, a pushed commit
// reconciled, a second create a no-op, a production profile aimed at the
// same cluster refused (the wrong-path trap), then destroy.
func TestCreateLocalWithFluxReconcilesTheFixtureInOrder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	total := time.Now()
	images, err := bed.PrepareK3d(ctx, true, func(f string, a ...any) { t.Logf(f, a...) })
	if err != nil {
		t.Fatal(err)
	}

	// The fixture repository, served from the host; pods reach it at the
	// bed Docker's bridge address.
	git, err := testbed.StartGitServer(t.TempDir(), "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = git.Close() }()
	repo, err := git.NewRepo(ctx, "gitops", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	files := fixtureFiles(t)
	if _, err := repo.Commit(ctx, "fixture", files); err != nil {
		t.Fatal(err)
	}
	gw, err := bed.Docker.Output(ctx, "network", "inspect", "bridge", "--format", "{{(index .IPAM.Config 0).Gateway}}")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(git.Addr, "]:")
	if port == "" {
		_, port, _ = strings.Cut(git.Addr, ":")
	}
	url := "http://" + strings.TrimSpace(gw) + ":" + port + "/gitops.git"
	// LABCTL_E2E_GIT_TOKEN and the fixture's secrets are set in TestMain.

	dir := t.TempDir()
	profile := func(name, extra string) string {
		f := filepath.Join(dir, name+".yaml")
		body := `apiVersion: labctl.dev/v1alpha1
kind: Profile
metadata: {name: ` + name + `}
extends: local
spec:
  k3d:
    clusterName: labctl-flux
    dockerHost: ` + bed.Docker.Host + `
    image: ` + images.K3sImage + `
    apiHost: 127.0.0.1
    apiPort: 16447
    ports:
      - {hostPort: 18084, containerPort: 80, nodeFilter: loadbalancer}
      - {hostPort: 18447, containerPort: 443, nodeFilter: loadbalancer}
` + k3dEnv(images.NodeEnv) + `  flux:
    url: ` + url + `
    branch: main
    tokenRef: {env: LABCTL_E2E_GIT_TOKEN}
    version: ` + images.FluxVersion + `
` + fluxSource(images) + extra
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	file := profile("flux-e2e", "")
	l, err := profiles.Loader{}.LoadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(dir, "kubeconfig")
	cluster := &k3d.Backend{Spec: &l.Spec, Profile: l.Metadata.Name, Kubeconfig: kc}
	_ = cluster.Delete(ctx)
	defer func() {
		_ = cluster.Delete(context.WithoutCancel(ctx))
		_, _ = bed.Docker.Output(context.WithoutCancel(ctx), "volume", "prune", "-f")
	}()
	create := func(name, file string, o commands.CreateOptions) (string, time.Duration, error) {
		o.Kubeconfig = kc
		return runCreate(t, ctx, name, file, o)
	}
	// Watch the Kustomizations while create runs: the first time each is
	// seen Ready gives their order (a later reconciliation may move a
	// condition's lastTransitionTime).
	firstReady := map[string]time.Time{}
	var watchMu sync.Mutex
	watchCtx, stopWatch := context.WithCancel(ctx)
	go watchReady(watchCtx, kc, "flux-e2e", firstReady, &watchMu)
	pulled := registryPulls(t, images.Registry, append(images.K3dPulled(), images.FluxImages...))
	out, first, err := create("create with Flux", file, commands.CreateOptions{})
	stopWatch()
	if err != nil {
		t.Fatal(err)
	}
	pulled()
	// The last ones may turn Ready between the watcher's polls and create's
	// return: one more look (they were not Ready at the previous poll).
	pollReady(ctx, kc, "flux-e2e", firstReady, &watchMu)
	if strings.Contains(out, "e2e-token-not-a-secret") || strings.Contains(out, "e2e-cloudflare-not-a-token") || strings.Contains(out, "AGE-SECRET-KEY-E2E") {
		t.Error("a secret reached the output")
	}

	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(&clientcmd.ClientConfigLoadingRules{ExplicitPath: kc}, &clientcmd.ConfigOverrides{CurrentContext: "flux-e2e"}).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	if err := kustomizev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	kcl, err := client.New(rc, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range append([]string{"flux-system"}, "infrastructure-controllers", "infrastructure-configs", "apps", "monitoring-controllers") {
		var ks kustomizev1.Kustomization
		if err := kcl.Get(ctx, client.ObjectKey{Namespace: bootstrap.Namespace, Name: k}, &ks); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		if c := apimeta.FindStatusCondition(ks.Status.Conditions, "Ready"); c == nil || c.Status != metav1.ConditionTrue {
			t.Fatalf("%s not Ready: %+v", k, c)
		}
	}
	watchMu.Lock()
	for _, pair := range [][2]string{{"infrastructure-controllers", "infrastructure-configs"}, {"infrastructure-configs", "apps"}} {
		a, b := firstReady[pair[0]], firstReady[pair[1]]
		if a.IsZero() || b.IsZero() || b.Before(a) {
			t.Errorf("%s first Ready at %s, %s it depends on at %s", pair[1], b.Format(time.TimeOnly), pair[0], a.Format(time.TimeOnly))
		}
	}
	t.Logf("first seen Ready: %v", firstReady)
	watchMu.Unlock()

	// A pushed commit is reconciled.
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	changed := strings.Replace(files["infrastructure/configs/base/issuer.yaml"], "letsencrypt-staging", "letsencrypt-e2e", 1)
	commit, err := repo.Commit(ctx, "change the issuer", map[string]string{"infrastructure/configs/base/issuer.yaml": changed})
	if err != nil {
		t.Fatal(err)
	}
	// Asked to fetch at once (as `flux reconcile source git` does; it
	// would poll within a minute), then labctl's wait follows the
	// dependsOn chain until every Kustomization is Ready at that commit
	// (as a re-run of create would), and the change is in the cluster.
	fetchNow(t, ctx, fluxClient(t, rc), commit)
	var wlog bytes.Buffer
	wb := &bootstrap.Backend{Spec: &l.Spec, Kubeconfig: kc, Context: "flux-e2e", Log: &wlog, Timeout: 5 * time.Minute}
	if err := wb.WaitKustomizations(ctx); err != nil {
		t.Fatalf("pushed commit: %v\n%s", err, wlog.String())
	}
	if cm, err := cs.CoreV1().ConfigMaps("infrastructure").Get(ctx, "fixture-issuer", metav1.GetOptions{}); err != nil || cm.Data["issuer"] != "letsencrypt-e2e" {
		t.Fatalf("pushed commit not applied with every Kustomization Ready: %v %v\n%s", cm.Data, err, wlog.String())
	}
	t.Logf("pushed commit reconciled in %s", time.Since(start).Round(time.Millisecond))

	// The fixture's monitoring-configs, which the profile does not list,
	// was waited for and reported.
	if !strings.Contains(out, "Kustomization monitoring-configs Ready (not in the profile)") {
		t.Errorf("create did not report monitoring-configs:\n%s", out)
	}
	fc := fluxClient(t, rc)
	start = time.Now()
	k3dVerifyE2E(t, ctx, file, kc, repo, files, fc)
	t.Logf("verify scenarios on k3d: %s", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	fluxSpeedE2E(t, ctx, &l.Spec, kc, "flux-e2e", repo, fc)
	t.Logf("Flux speed scenario: %s", time.Since(start).Round(time.Millisecond))

	out, second, err := create("second create", file, commands.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, ", 0 changes") {
		t.Errorf("second create made changes:\n%s", out)
	}

	// The same cluster under a production profile: Flux there syncs
	// clusters/staging, and the bootstrap refuses to re-point it.
	prod := profile("flux-e2e-prod", "  environment: production\n")
	if err := os.WriteFile(prod, []byte(strings.Replace(mustRead(t, prod), "    branch: main\n", `    branch: main
    path: clusters/production
    kustomizations:
      - {name: infrastructure-controllers, path: infrastructure/controllers/production}
      - {name: infrastructure-configs, path: infrastructure/configs/production, dependsOn: [infrastructure-controllers]}
      - {name: apps, path: apps/production, dependsOn: [infrastructure-configs]}
      - {name: monitoring-controllers, path: monitoring/controllers/production}
`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := create("production profile on the staging cluster", prod, commands.CreateOptions{}); !errors.Is(err, bootstrap.ErrOtherPath) {
		t.Fatalf("wrong path: %v", err)
	}
	t.Logf("timings: create with Flux %s (cluster and every Kustomization Ready), no-op re-run %s, total %s", first.Round(time.Millisecond), second.Round(time.Millisecond), time.Since(total).Round(time.Second))
}

// fluxSource is the profile's manifests and components lines: the bed's
// build, or nothing for the release's defaults.
func fluxSource(s testbed.K3dSetup) string {
	if s.FluxManifests == "" {
		return ""
	}
	return "    manifests: " + s.FluxManifests + "\n    components: [" + strings.Join(s.FluxComponents, ", ") + "]\n"
}

// fixtureFiles reads the fixture GitOps repository (path → content).
func fixtureFiles(t *testing.T) map[string]string {
	t.Helper()
	files := map[string]string{}
	if err := filepath.Walk("testdata/gitops", func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		files[strings.TrimPrefix(p, "testdata/gitops/")] = string(b)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return files
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// watchReady records, once a second, when each Kustomization in
// flux-system is first seen Ready.
func watchReady(ctx context.Context, kubeconfig, context string, first map[string]time.Time, mu *sync.Mutex) {
	for ctx.Err() == nil {
		time.Sleep(time.Second)
		pollReady(ctx, kubeconfig, context, first, mu)
	}
}

func pollReady(ctx context.Context, kubeconfig, context string, first map[string]time.Time, mu *sync.Mutex) {
	scheme := runtime.NewScheme()
	_ = kustomizev1.AddToScheme(scheme)
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(&clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig}, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if err != nil {
		return
	}
	c, err := client.New(rc, client.Options{Scheme: scheme})
	if err != nil {
		return
	}
	var list kustomizev1.KustomizationList
	if err := c.List(ctx, &list, client.InNamespace(bootstrap.Namespace)); err != nil {
		return
	}
	now := time.Now()
	mu.Lock()
	defer mu.Unlock()
	for _, k := range list.Items {
		if cond := apimeta.FindStatusCondition(k.Status.Conditions, "Ready"); cond != nil && cond.Status == metav1.ConditionTrue && first[k.Name].IsZero() {
			first[k.Name] = now
		}
	}
}
