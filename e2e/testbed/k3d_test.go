//go:build e2e

package testbed

import (
	"context"
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

// TestK3dCreatesOneServerThreeAgentsOnTheStandInImage drives the real k3d
// library (v5.8.3) against the bed's Docker with the locally built node,
// load-balancer and tools images: 1 server + 3 agents, all Ready, the API
// reached from the host through k3d's load balancer.
func TestK3dCreatesOneServerThreeAgentsOnTheStandInImage(t *testing.T) {
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
	t.Setenv("DOCKER_HOST", b.Docker.Host)
	k3dversion.Version = K3dVersion

	simple := conf.SimpleConfig{
		ObjectMeta: configtypes.ObjectMeta{Name: "labctl-tb"},
		Servers:    1, Agents: 3,
		Image:     K3sImage,
		ExposeAPI: conf.SimpleExposureOpts{Host: "127.0.0.1", HostIP: "127.0.0.1", HostPort: "16443"},
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
}
