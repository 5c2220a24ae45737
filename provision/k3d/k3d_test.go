package k3d

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/k3d-io/k3d/v5/pkg/config"
	"github.com/k3d-io/k3d/v5/pkg/runtimes"
	"github.com/k3d-io/k3d/v5/pkg/runtimes/docker"
	k3dtypes "github.com/k3d-io/k3d/v5/pkg/types"
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

// The K3s passthrough reaches k3d as --k3s-arg per value, servers' and
// agents' options on their own nodes.
func TestPassthroughBecomesK3sArgs(t *testing.T) {
	l, err := profiles.Loader{}.Load("staging")
	if err != nil {
		t.Fatal(err)
	}
	l.Spec.K3s.Config = profiles.K3sConfig{"disable-helm-controller": true, "kubelet-arg": []any{"max-pods=150", "image-gc-high-threshold=80"}, "etcd-snapshot-retention": 28}
	l.Spec.K3s.AgentConfig = profiles.K3sConfig{"node-label": "pool=general"}
	var got []string
	for _, a := range SimpleConfig(&l.Spec).Options.K3sOptions.ExtraArgs {
		got = append(got, a.Arg+"@"+strings.Join(a.NodeFilters, ","))
	}
	want := "--cluster-cidr=10.42.0.0/16@server:* --service-cidr=10.43.0.0/16@server:* --disable-helm-controller@server:* --etcd-snapshot-retention=28@server:* --kubelet-arg=max-pods=150@server:* --kubelet-arg=image-gc-high-threshold=80@server:* --node-label=pool=general@agent:*"
	if strings.Join(got, " ") != want {
		t.Errorf("k3s args:\n got %s\nwant %s", strings.Join(got, " "), want)
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

// TestDockerHostOrContextReachK3dsDockerClient: k3d's Docker runtime
// resolves the profile's dockerHost, or its dockerContext from the Docker
// CLI's context store (over DOCKER_HOST of the environment), and the
// environment is restored afterwards.
func TestDockerHostOrContextReachK3dsDockerClient(t *testing.T) {
	cfg := t.TempDir()
	t.Setenv("DOCKER_CONFIG", cfg)
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/from-the-environment.sock")
	sum := sha256.Sum256([]byte("lab"))
	meta := filepath.Join(cfg, "contexts", "meta", hex.EncodeToString(sum[:]))
	if err := os.MkdirAll(meta, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(meta, "meta.json"), []byte(`{"Name":"lab","Metadata":{},"Endpoints":{"docker":{"Host":"tcp://127.0.0.1:2","SkipTLSVerify":false}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	host := func(k profiles.K3d) string {
		t.Helper()
		b := &Backend{Spec: &profiles.Spec{K3d: &k}}
		var got string
		if err := b.withDocker(func() error {
			c, err := docker.GetDockerClient()
			if err != nil {
				return err
			}
			got = c.DaemonHost()
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	for _, tc := range []struct {
		k    profiles.K3d
		want string
	}{
		{profiles.K3d{DockerContext: "lab"}, "tcp://127.0.0.1:2"},
		{profiles.K3d{DockerHost: "tcp://127.0.0.1:3"}, "tcp://127.0.0.1:3"},
		{profiles.K3d{}, "unix:///nonexistent/from-the-environment.sock"},
	} {
		if got := host(tc.k); got != tc.want {
			t.Errorf("%+v: Docker at %s, want %s", tc.k, got, tc.want)
		}
	}
	if h := os.Getenv("DOCKER_HOST"); h != "unix:///nonexistent/from-the-environment.sock" || os.Getenv("DOCKER_CONTEXT") != "" {
		t.Errorf("environment not restored: DOCKER_HOST %q DOCKER_CONTEXT %q", h, os.Getenv("DOCKER_CONTEXT"))
	}
}

// spec.k3d.env reaches every server and agent container, sorted by name.
func TestEnvReachesEveryNode(t *testing.T) {
	l, err := profiles.Loader{}.Load("staging")
	if err != nil {
		t.Fatal(err)
	}
	l.Spec.K3d.Env = map[string]string{"CONTAINERD_NO_PROXY": "10.0.0.0/8", "CONTAINERD_HTTPS_PROXY": "http://proxy.lan:3128"}
	var got []string
	for _, e := range SimpleConfig(&l.Spec).Env {
		got = append(got, e.EnvVar+"@"+strings.Join(e.NodeFilters, ";"))
	}
	want := "CONTAINERD_HTTPS_PROXY=http://proxy.lan:3128@server:*;agent:* CONTAINERD_NO_PROXY=10.0.0.0/8@server:*;agent:*"
	if strings.Join(got, " ") != want {
		t.Errorf("env:\n got %s\nwant %s", strings.Join(got, " "), want)
	}
}

// A cluster's containers keep the K3s arguments and environment k3d gave
// them at create: those the profile now gives and they lack are named
// (an environment variable by name only, its value can hold a password).
// The nodes are the ones k3d's own config transform makes of the
// profile, then as Docker lists them (arguments in the command).
func TestSettingsDriftNamesWhatTheContainersLack(t *testing.T) {
	l, err := profiles.Loader{}.Load("staging")
	if err != nil {
		t.Fatal(err)
	}
	l.Spec.K3s.Config = profiles.K3sConfig{"disable-helm-controller": true}
	l.Spec.K3s.AgentConfig = profiles.K3sConfig{"node-label": "pool=general"}
	l.Spec.K3d.Env = map[string]string{"CONTAINERD_HTTPS_PROXY": "http://user:s3cret@proxy.lan:3128"}
	cc, err := config.TransformSimpleToClusterConfig(context.Background(), runtimes.Docker, SimpleConfig(&l.Spec), "")
	if err != nil {
		t.Fatal(err)
	}
	created := cc.Nodes
	if len(created) < 4 {
		t.Fatalf("k3d's transform gave %d nodes", len(created))
	}
	if d := settingsDrift(&l.Spec, created); len(d) != 0 {
		t.Errorf("as created: %v", d)
	}
	// As ClusterGet lists them: the arguments are part of the command.
	var listed []*k3dtypes.Node
	for _, n := range created {
		c := *n
		c.Cmd, c.Args = append([]string{string(n.Role)}, n.Args...), nil
		listed = append(listed, &c)
	}
	if d := settingsDrift(&l.Spec, listed); len(d) != 0 {
		t.Errorf("as listed: %v", d)
	}

	l.Spec.K3s.Config["kubelet-arg"] = []any{"max-pods=150"}
	l.Spec.K3d.Env["CONTAINERD_HTTPS_PROXY"] = "http://user:n3w@proxy.lan:3128"
	l.Spec.K3d.Env["CONTAINERD_NO_PROXY"] = "10.0.0.0/8"
	got := strings.Join(settingsDrift(&l.Spec, listed), "\n")
	for _, want := range []string{
		"k3d-staging-server-0 lacks K3s argument --kubelet-arg=max-pods=150, env CONTAINERD_HTTPS_PROXY (another value), env CONTAINERD_NO_PROXY (unset)",
		"k3d-staging-agent-0 lacks env CONTAINERD_HTTPS_PROXY (another value), env CONTAINERD_NO_PROXY (unset)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("drift lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "s3cret") || strings.Contains(got, "n3w") {
		t.Errorf("an env value reached the drift:\n%s", got)
	}
	if strings.Contains(got, "serverlb") || strings.Count(got, "\n") != 3 {
		t.Errorf("want one line per server and agent (4), none for the load balancer:\n%s", got)
	}
}
