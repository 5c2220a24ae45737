package k3d

import (
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/labctl/labctl/internal/golden"
	"github.com/labctl/labctl/profiles"
)

// The k3d configuration each embedded k3d profile renders is pinned: 1
// server + 3 agents, 80/443 on the load balancer, the API where the
// profile says (bound to all interfaces on a remote Docker host, to
// loopback for a loopback API host).
func TestGoldenSimpleConfigPerK3dProfile(t *testing.T) {
	for _, name := range []string{"staging", "local"} {
		l, err := profiles.Loader{}.Load(name)
		if err != nil {
			t.Fatal(err)
		}
		b, err := yaml.Marshal(SimpleConfig(&l.Spec))
		if err != nil {
			t.Fatal(err)
		}
		golden.Assert(t, "testdata/"+name+".k3d.yaml", b)
		if got := Want(&l.Spec).String(); got != "1 server(s) + 3 agent(s), image rancher/k3s:v1.33.4-k3s1, ports 443:443 6443:6443 80:80" {
			t.Errorf("%s shape: %s", name, got)
		}
	}
}

// k3d names its helper images after its version: Version must be the
// version go.mod builds with.
func TestVersionIsTheK3dModuleVersion(t *testing.T) {
	b, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "github.com/k3d-io/k3d/v5" {
			if f[1] != Version {
				t.Fatalf("go.mod has k3d %s, k3d.Version is %s", f[1], Version)
			}
			return
		}
	}
	t.Fatal("go.mod does not require github.com/k3d-io/k3d/v5")
}
