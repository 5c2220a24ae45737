//go:build e2e

package testbed

import (
	"context"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	k3dclient "github.com/k3d-io/k3d/v5/pkg/client"
	"github.com/k3d-io/k3d/v5/pkg/config"
	configtypes "github.com/k3d-io/k3d/v5/pkg/config/types"
	conf "github.com/k3d-io/k3d/v5/pkg/config/v1alpha5"
	"github.com/k3d-io/k3d/v5/pkg/runtimes"
	k3d "github.com/k3d-io/k3d/v5/pkg/types"
	k3dversion "github.com/k3d-io/k3d/v5/version"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestK3dOneServerThreeAgentsThenFluxReconcilesAGitRepository drives the
// real k3d library (v5.8.3) against the bed's Docker with the locally
// built node, load-balancer and tools images: 1 server + 3 agents, all
// Ready, the API reached from the host through k3d's load balancer. Then
// Flux's locally built controllers, installed from the offline manifests,
// reconcile a GitRepository and a Kustomization served from the host.
func TestK3dOneServerThreeAgentsThenFluxReconcilesAGitRepository(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	b, err := New(ctx, Options{Name: "labctl-tb-k3d", Subnet: "172.30.12.0/24", Log: logf(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	bin, err := BuildKube(ctx, b.opts.Cache, logf(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.K3dImages(ctx, bin, logf(t)); err != nil {
		t.Fatal(err)
	}
	fb, err := BuildFlux(ctx, b.opts.Cache, logf(t))
	if err != nil {
		t.Fatal(err)
	}
	fluxTars, err := b.FluxImages(ctx, fb)
	if err != nil {
		t.Fatal(err)
	}
	// The nodes' air-gap images directory: the sandbox image and Flux's
	// controllers, imported by the stand-in at start.
	images := t.TempDir()
	for _, f := range append(fluxTars, filepath.Join(bin, "images", "pause.tar")) {
		if err := copyFile(f, filepath.Join(images, filepath.Base(f))); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("DOCKER_HOST", b.Docker.Host)
	k3dversion.Version = K3dVersion

	simple := conf.SimpleConfig{
		ObjectMeta: configtypes.ObjectMeta{Name: "labctl-tb"},
		Servers:    1, Agents: 3,
		Image:     K3sImage,
		ExposeAPI: conf.SimpleExposureOpts{Host: "127.0.0.1", HostIP: "127.0.0.1", HostPort: "16443"},
		Volumes:   []conf.VolumeWithNodeFilters{{Volume: images + ":/var/lib/rancher/k3s/agent/images", NodeFilters: []string{"server:*", "agent:*"}}},
		Ports: []conf.PortWithNodeFilters{
			{Port: "127.0.0.1:18080:80", NodeFilters: []string{"loadbalancer"}},
			{Port: "127.0.0.1:18443:443", NodeFilters: []string{"loadbalancer"}},
		},
		Options: conf.SimpleConfigOptions{
			K3dOptions:        conf.SimpleConfigOptionsK3d{Wait: true, Timeout: 5 * time.Minute},
			KubeconfigOptions: conf.SimpleConfigOptionsKubeconfig{UpdateDefaultKubeconfig: false},
		},
	}
	simple.APIVersion, simple.Kind = conf.ApiVersion, "Simple"
	cc, err := config.TransformSimpleToClusterConfig(ctx, runtimes.Docker, simple, "")
	if err != nil {
		t.Fatal(err)
	}
	if cc, err = config.ProcessClusterConfig(*cc); err != nil {
		t.Fatal(err)
	}
	if err := config.ValidateClusterConfig(ctx, runtimes.Docker, *cc); err != nil {
		t.Fatal(err)
	}
	// A cluster left by a killed run goes first.
	if old, err := k3dclient.ClusterGet(ctx, runtimes.Docker, &k3d.Cluster{Name: simple.Name}); err == nil {
		_ = k3dclient.ClusterDelete(ctx, runtimes.Docker, old, k3d.ClusterDeleteOpts{})
	}
	defer func() {
		if err := k3dclient.ClusterDelete(context.WithoutCancel(ctx), runtimes.Docker, &cc.Cluster, k3d.ClusterDeleteOpts{}); err != nil {
			t.Errorf("delete: %v", err)
		}
		// The node image's anonymous volumes outlive the containers; on
		// the bed's own daemon (never a user's) they are pruned.
		if b.Docker.Own {
			_, _ = b.Docker.Output(context.WithoutCancel(ctx), "volume", "prune", "-f")
		}
	}()
	start := time.Now()
	if err := k3dclient.ClusterRun(ctx, runtimes.Docker, cc); err != nil {
		logs, _ := b.Docker.Output(ctx, "logs", "--tail", "30", "k3d-labctl-tb-server-0")
		t.Fatalf("k3d cluster run: %v\nserver log:\n%s", err, logs)
	}
	t.Logf("k3d: cluster 1+3 created in %s", time.Since(start).Round(time.Millisecond))

	kc, err := k3dclient.KubeconfigGet(ctx, runtimes.Docker, &cc.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := clientcmd.Write(*kc)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.RESTConfigFromKubeConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != "https://127.0.0.1:16443" {
		t.Errorf("kubeconfig server %s", rc.Host)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	var ready []string
	for deadline := time.Now().Add(4 * time.Minute); ; {
		ready = ready[:0]
		nl, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, n := range nl.Items {
				for _, c := range n.Status.Conditions {
					if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
						ready = append(ready, n.Name)
					}
				}
			}
		}
		if len(ready) == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ready nodes after 4m: %v (%v)", ready, err)
		}
		time.Sleep(2 * time.Second)
	}
	sort.Strings(ready)
	want := "k3d-labctl-tb-agent-0,k3d-labctl-tb-agent-1,k3d-labctl-tb-agent-2,k3d-labctl-tb-server-0"
	if strings.Join(ready, ",") != want {
		t.Errorf("Ready nodes %v, want %s", ready, want)
	}
	t.Logf("k3d: 4 nodes Ready %s after start, API reached from the host through the load balancer", time.Since(start).Round(time.Millisecond))

	fluxReconciles(t, ctx, b, fb, "k3d-labctl-tb-server-0", "k3d-"+simple.Name)
}

// fluxReconciles installs Flux's controllers from the offline manifests,
// serves a fixture repository from the host, and checks that a
// GitRepository and a Kustomization become Ready, apply the repository's
// content, and apply a later commit.
func fluxReconciles(t *testing.T, ctx context.Context, b *Bed, fb *FluxBuild, server, network string) {
	t.Helper()
	kubectl := func(args ...string) (string, error) {
		return b.Docker.Output(ctx, append([]string{"exec", server, "kubectl", "--request-timeout=30s"}, args...)...)
	}
	start := time.Now()
	if _, err := b.Docker.Output(ctx, "cp", fb.Manifests, server+":/tmp/flux-manifests"); err != nil {
		t.Fatal(err)
	}
	if out, err := kubectl("apply", "--server-side", "-k", "/tmp/flux-manifests/install"); err != nil {
		t.Fatalf("install flux: %v\n%s", err, out)
	}
	for _, c := range FluxComponents {
		if out, err := kubectl("-n", "flux-system", "rollout", "status", "deployment/"+c, "--timeout=180s"); err != nil {
			pods, _ := kubectl("-n", "flux-system", "get", "pods", "-o", "wide")
			events, _ := kubectl("-n", "flux-system", "get", "events")
			t.Fatalf("%s: %v %s\n%s\n%s", c, err, out, pods, events)
		}
	}
	t.Logf("flux: %s %s running %s after apply", strings.Join(FluxComponents, " and "), FluxControllersVersion, time.Since(start).Round(time.Millisecond))

	gw, err := b.Docker.Output(ctx, "network", "inspect", network, "--format", "{{(index .IPAM.Config 0).Gateway}}")
	if err != nil {
		t.Fatal(err)
	}
	git, err := StartGitServer(t.TempDir(), "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = git.Close() }()
	_, port, _ := strings.Cut(git.Addr, "]:")
	if port == "" {
		_, port, _ = strings.Cut(git.Addr, ":")
	}
	repo, err := git.NewRepo(ctx, "fixture", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cm := func(v string) map[string]string {
		return map[string]string{"deploy/configmap.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: flux-check, namespace: default}\ndata: {revision: \"" + v + "\"}\n"}
	}
	if _, err := repo.Commit(ctx, "first", cm("1")); err != nil {
		t.Fatal(err)
	}
	url := "http://" + strings.TrimSpace(gw) + ":" + port + "/fixture.git"
	sync := `apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: fixture, namespace: flux-system}
spec:
  interval: 5s
  url: ` + url + `
  ref: {branch: main}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: fixture, namespace: flux-system}
spec:
  interval: 5s
  path: ./deploy
  prune: true
  sourceRef: {kind: GitRepository, name: fixture}
`
	start = time.Now()
	if out, err := b.Docker.Input(ctx, strings.NewReader(sync), "exec", "-i", server, "kubectl", "apply", "-f", "-"); err != nil {
		t.Fatalf("apply sync: %v %s", err, out)
	}
	for _, o := range []string{"gitrepository/fixture", "kustomization/fixture"} {
		if out, err := kubectl("-n", "flux-system", "wait", "--for=condition=Ready", o, "--timeout=180s"); err != nil {
			status, _ := kubectl("-n", "flux-system", "get", o, "-o", "jsonpath={.status.conditions}")
			logs, _ := kubectl("-n", "flux-system", "logs", "deployment/source-controller", "--tail=10")
			t.Fatalf("%s not Ready: %v %s\n%s\n%s", o, err, out, status, logs)
		}
	}
	waitRevision := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Minute); ; {
			got, _ := kubectl("get", "configmap", "flux-check", "-o", "jsonpath={.data.revision}")
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				st, _ := kubectl("-n", "flux-system", "get", "kustomization/fixture", "-o", "jsonpath={.status.conditions}")
				t.Fatalf("configmap revision %q, want %q after 2m; kustomization: %s", got, want, st)
			}
			time.Sleep(time.Second)
		}
	}
	waitRevision("1")
	t.Logf("flux: GitRepository and Kustomization Ready, repository applied %s after creating them", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	if _, err := repo.Commit(ctx, "second", cm("2")); err != nil {
		t.Fatal(err)
	}
	waitRevision("2")
	t.Logf("flux: a pushed commit applied in %s", time.Since(start).Round(time.Millisecond))
}
