//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/labctl/labctl/commands"
	"github.com/labctl/labctl/e2e/testbed"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3d"
)

// TestCreateLocalK3dNoOpAnotherShapeRefusedThenDestroy runs `labctl create`
// on a profile extending the embedded `local` (staging's shape: k3d 1
// server + 3 agents, 80/443 on the load balancer) against the bed's
// Docker, named as a Docker host: the cluster and kubeconfig are created,
// a second run changes nothing, a profile asking another shape of the
// same cluster is refused with both shapes, one adding spec.k3d.env is
// refused naming the variable, `labctl destroy` (confirmed by
// name) removes the cluster and the context, and a raw k3d create of the
// same config in the same run gives the time ratio.
func TestCreateLocalK3dNoOpAnotherShapeRefusedThenDestroy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	images, err := bed.PrepareK3d(ctx, false, func(f string, a ...any) { t.Logf(f, a...) })
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	profile := func(name, cluster string, agents int) string {
		f := filepath.Join(dir, name+".yaml")
		body := `apiVersion: labctl.dev/v1alpha1
kind: Profile
metadata: {name: ` + name + `}
extends: local
spec:
  k3d:
    clusterName: ` + cluster + `
    dockerHost: ` + bed.Docker.Host + `
    image: ` + images.K3sImage + `
    apiHost: 127.0.0.1
    apiPort: 16445
    agents: ` + string(rune('0'+agents)) + `
    ports:
      - {hostPort: 18082, containerPort: 80, nodeFilter: loadbalancer}
      - {hostPort: 18445, containerPort: 443, nodeFilter: loadbalancer}
`
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	file := profile("local-e2e", "labctl-e2e", 3)
	l, err := profiles.Loader{}.LoadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(dir, "kubeconfig")
	backend := &k3d.Backend{Spec: &l.Spec, Profile: l.Metadata.Name, Kubeconfig: kc}
	_ = backend.Delete(ctx)
	defer func() {
		if err := backend.Delete(context.WithoutCancel(ctx)); err != nil {
			t.Errorf("delete: %v", err)
		}
		_, _ = bed.Docker.Output(context.WithoutCancel(ctx), "volume", "prune", "-f")
	}()

	create := func(name, file string) (string, time.Duration, error) {
		return runCreate(t, ctx, name, file, commands.CreateOptions{NoFlux: true, Kubeconfig: kc})
	}
	// k3d leaves a k3d-hostsfile-* per node in the temporary directory;
	// labctl gives it one of its own, so none is added to the operator's.
	leaked := func() int {
		m, _ := filepath.Glob(filepath.Join(os.TempDir(), "k3d-hostsfile-*"))
		return len(m)
	}
	before := leaked()
	pulled := registryPulls(t, images.Registry, images.K3dPulled())
	_, first, err := create("first run", file)
	if n := leaked() - before; n != 0 {
		t.Errorf("create left %d k3d-hostsfile-* files in %s", n, os.TempDir())
	}
	if err != nil {
		t.Fatal(err)
	}
	pulled()
	cfg, err := clientcmd.LoadFromFile(kc)
	if err != nil {
		t.Fatal(err)
	}
	if c := cfg.Clusters["local-e2e"]; c == nil || c.Server != "https://127.0.0.1:16445" {
		t.Fatalf("kubeconfig cluster local-e2e: %+v", c)
	}
	out, second, err := create("second run", file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, ", 0 changes") {
		t.Errorf("second run made changes:\n%s", out)
	}
	t.Logf("k3d create: first %s, second (no-op) %s", first.Round(time.Millisecond), second.Round(time.Millisecond))

	// A dead agent is rebuilt through the k3d library: a new container of
	// the same name joins and its Node is Ready; the server is refused.
	if _, err := bed.Docker.Output(ctx, "kill", "k3d-labctl-e2e-agent-1"); err != nil {
		t.Fatal(err)
	}
	var rout bytes.Buffer
	renv := commands.Env{Stdout: &rout, Stderr: &rout, Output: commands.OutputText, Now: time.Now}
	start := time.Now()
	err = commands.Rebuild(ctx, renv, commands.ProfileArg{File: file}, commands.RebuildOptions{Node: "agent-1", Kubeconfig: kc, StateDir: dir})
	t.Logf("rebuild agent-1 (%s):\n%s", time.Since(start).Round(time.Millisecond), rout.String())
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := bed.Docker.Output(ctx, "inspect", "-f", "{{.State.Running}}", "k3d-labctl-e2e-agent-1"); strings.TrimSpace(st) != "true" {
		t.Errorf("agent-1 after its rebuild: running=%s", st)
	}
	if err := backend.WaitNodes(ctx); err != nil {
		t.Errorf("after the agent's rebuild: %v", err)
	}
	err = commands.Rebuild(ctx, renv, commands.ProfileArg{File: file}, commands.RebuildOptions{Node: "server-0", Kubeconfig: kc, StateDir: dir, Yes: true})
	if err == nil || !strings.Contains(err.Error(), "a k3d server cannot be rebuilt in place (staging is not HA") {
		t.Errorf("rebuild of the k3d server: %v", err)
	}

	// Same cluster name, another shape: refused, nothing touched.
	other := profile("local-e2e-2", "labctl-e2e", 2)
	if _, _, err := create("other shape", other); !errors.Is(err, k3d.ErrShape) || !strings.Contains(err.Error(), "it has 1 server(s) + 3 agent(s)") || !strings.Contains(err.Error(), "wants 1 server(s) + 2 agent(s)") {
		t.Fatalf("another shape: %v", err)
	}
	// Same shape, an environment the containers were not created with:
	// refused, the variable named, nothing touched.
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	withEnv := filepath.Join(dir, "local-e2e-env.yaml")
	if err := os.WriteFile(withEnv, append(text, "    env: {LABCTL_E2E_PROXY: \"http://user:pw@proxy.test:3128\"}\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err = create("other settings", withEnv)
	t.Logf("other settings refused: %v", err)
	if !errors.Is(err, k3d.ErrSettings) || !strings.Contains(err.Error(), "k3d-labctl-e2e-agent-1 lacks env LABCTL_E2E_PROXY (unset)") || strings.Contains(out+err.Error(), "user:pw") {
		t.Fatalf("another environment: %v\n%s", err, out)
	}

	// destroy: the cluster and its context go; a second destroy finds
	// nothing to do.
	var out2 bytes.Buffer
	e := commands.Env{Stdout: &out2, Stderr: &out2, Output: commands.OutputText, Now: time.Now}
	if err := commands.Destroy(ctx, e, commands.ProfileArg{File: file}, commands.DestroyOptions{Confirm: strings.NewReader("labctl-e2e\n"), Kubeconfig: kc}); err != nil {
		t.Fatalf("destroy: %v\n%s", err, out2.String())
	}
	if c, err := backend.Observe(ctx); c.Exists || err != nil {
		t.Errorf("after destroy: exists=%v %v", c.Exists, err)
	}
	if cfg, _ := clientcmd.LoadFromFile(kc); cfg.Contexts["local-e2e"] != nil {
		t.Error("context local-e2e left in the kubeconfig")
	}
	if err := commands.Destroy(ctx, e, commands.ProfileArg{File: file}, commands.DestroyOptions{Yes: true, Kubeconfig: kc}); err != nil || !strings.Contains(out2.String(), `= no k3d cluster "labctl-e2e"`) {
		t.Errorf("second destroy: %v\n%s", err, out2.String())
	}
	t.Logf("destroy:\n%s", out2.String())

	// A raw k3d create of the same configuration, for the ratio: a
	// measurement, not a check.
	if !measuring(t, "labctl create vs a raw k3d create") {
		return
	}
	raw := profile("raw", "labctl-raw", 3)
	rl, err := profiles.Loader{}.LoadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	rl.Spec.K3d.APIPort, rl.Spec.K3d.Ports[0].HostPort, rl.Spec.K3d.Ports[1].HostPort = 16446, 18083, 18446
	rawTime := rawK3dCreate(t, ctx, &rl.Spec, filepath.Join(dir, "raw-kubeconfig"))
	t.Logf("labctl create %s vs raw k3d cluster run %s: ratio %.2f (labctl also waits for every Node Ready and merges the kubeconfig)", first.Round(time.Millisecond), rawTime.Round(time.Millisecond), first.Seconds()/rawTime.Seconds())
}

// registryPulls, in real-images mode on the bed (r not nil), returns a
// check that each image was pulled from the bed's registry since (a
// request for its manifest in the registry's access log; the blobs a
// Docker engine already holds are not downloaded again).
func registryPulls(t *testing.T, r *testbed.Registry, images []string) func() {
	t.Helper()
	if r == nil {
		return func() {}
	}
	before := map[string][2]int{}
	for _, img := range images {
		before[img] = [2]int{r.ManifestRequests(img), r.Blobs(img)}
	}
	return func() {
		t.Helper()
		for _, img := range images {
			if n := r.ManifestRequests(img) - before[img][0]; n < 1 {
				t.Errorf("real-images mode: %s was not pulled from the bed's registry (log %s)", img, r.Log)
			} else {
				t.Logf("pulled from the bed's registry: %s (%d manifest requests, %d blobs downloaded)", img, n, r.Blobs(img)-before[img][1])
			}
		}
	}
}

// k3dEnv is spec.k3d.env for a test profile (indented under k3d:).
func k3dEnv(env map[string]string) string {
	if len(env) == 0 {
		return ""
	}
	out := "    env:\n"
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out += "      " + k + ": " + strconv.Quote(env[k]) + "\n"
	}
	return out
}

// rawK3dCreate times k3d's own cluster create (the library, no labctl
// steps around it) of spec, then deletes the cluster.
func rawK3dCreate(t *testing.T, ctx context.Context, spec *profiles.Spec, kubeconfig string) time.Duration {
	t.Helper()
	rb := &k3d.Backend{Spec: spec, Profile: "raw", Kubeconfig: kubeconfig}
	_ = rb.Delete(ctx)
	start := time.Now()
	if err := rb.CreateCluster(ctx); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if err := rb.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	return took
}

// runCreate runs `labctl create` on a profile file, logs its output and
// returns it with the wall time.
func runCreate(t *testing.T, ctx context.Context, name, file string, o commands.CreateOptions) (string, time.Duration, error) {
	t.Helper()
	var out bytes.Buffer
	e := commands.Env{Stdout: &out, Stderr: &out, Output: commands.OutputText, Now: time.Now}
	start := time.Now()
	err := commands.Create(ctx, e, commands.ProfileArg{File: file}, o)
	d := time.Since(start)
	t.Logf("%s: %s\n%s", name, d.Round(time.Millisecond), out.String())
	return out.String(), d, err
}
