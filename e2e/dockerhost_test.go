//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/labctl/labctl/commands"
	"github.com/labctl/labctl/e2e/testbed"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3d"
	"github.com/labctl/labctl/provision/remote"
)

// TestCreateStagingOnARemoteDockerHostOverSSH is staging as it runs: k3d
// on a Docker host reached over SSH (a bed node running its own
// dockerd), driven from this machine. An unknown host key is refused
// before anything is made; the cluster's API answers from here at the
// Docker host's address, with a certificate for it; ports 80 and 443 on
// that address reach the cluster through k3d's load balancer; a second
// run changes nothing; a user outside the docker group, a host without
// Docker and a stopped Docker are each named; destroy leaves nothing of
// the cluster on the host; and a raw k3d create of the same config on
// the same host gives the time ratio.
func TestCreateStagingOnARemoteDockerHostOverSSH(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	logf := func(f string, a ...any) { t.Logf(f, a...) }
	images, err := bed.PrepareK3d(ctx, false, logf)
	if err != nil {
		t.Fatal(err)
	}
	const ip, plainIP = "172.30.20.95", "172.30.20.96"
	start := time.Now()
	dh, err := bed.StartDockerHost(ctx, "docker-host", ip, []string{images.K3sImage, testbed.K3dProxyImage, testbed.K3dToolsImage}, logf)
	t.Cleanup(func() { _ = bed.RemoveNode(context.Background(), "docker-host") })
	if err != nil {
		t.Fatal(err)
	}
	plain, err := bed.StartNode(ctx, "no-docker", plainIP)
	t.Cleanup(func() { _ = bed.RemoveNode(context.Background(), "no-docker") })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Docker host ready in %s", time.Since(start).Round(time.Millisecond))

	dir := t.TempDir()
	kh := filepath.Join(dir, "known_hosts")
	line := func(addr string, key ssh.PublicKey) string { return addr + " " + string(ssh.MarshalAuthorizedKey(key)) }
	kc := filepath.Join(dir, "kubeconfig")
	// tuned: staging's Docker host tuning (inotify limits) applies; the
	// profiles for the Docker failures below drop it to reach Docker.
	profile := func(name, user, host, cluster string, apiPort int, tuned bool) string {
		f := filepath.Join(dir, name+".yaml")
		hosts := "  hosts: null\n"
		if tuned {
			hosts = ""
		}
		body := fmt.Sprintf(`apiVersion: labctl.dev/v1alpha1
kind: Profile
metadata: {name: %s}
extends: staging
spec:
  k3d:
    clusterName: %s
    dockerHost: ssh://%s@%s
    image: %s
    apiHost: %s
    apiPort: %d
  ssh: {user: %s, identityFiles: [%s], knownHostsFile: %s}
  dns: {domain: e2e.labctl.test, records: []}
%s`, name, cluster, user, host, images.K3sImage, host, apiPort, user, bed.KeyFile, kh, hosts)
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	file := profile("staging-remote", testbed.DockerUser, ip, "labctl-remote", 6443, true)
	create := func(name, file string) (string, time.Duration, error) {
		return runCreate(t, ctx, name, file, commands.CreateOptions{NoFlux: true, Kubeconfig: kc})
	}
	onHost := func(script string) string {
		t.Helper()
		out, err := bed.Exec(ctx, "docker-host", "sh", "-c", script)
		if err != nil {
			t.Fatalf("docker host: %s: %v %s", script, err, out)
		}
		return out
	}
	leftovers := func(cluster string) string {
		return onHost("docker ps -aq --filter label=k3d.cluster=" + cluster + " | wc -l; docker network ls -q --filter name=k3d-" + cluster + " | wc -l; docker volume ls -q --filter label=k3d.cluster=" + cluster + " | wc -l")
	}

	// The host's key is not known yet: refused, never recorded, by
	// labctl's own SSH (tuning the host) and by Docker's SSH helper.
	if err := os.WriteFile(kh, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tuneFile := "/etc/sysctl.d/90-labctl.conf"
	onHost("rm -f " + tuneFile)
	_, _, err = create("unknown host key", file)
	if !errors.Is(err, remote.ErrHostKeyUnknown) {
		t.Fatalf("create with the Docker host's key unknown (labctl's SSH): %v", err)
	}
	_, _, err = create("unknown host key, untuned", profile("untuned", testbed.DockerUser, ip, "labctl-remote", 6443, false))
	if !errors.Is(err, k3d.ErrDockerHost) || !strings.Contains(err.Error(), "is not the one in the profile's known_hosts") {
		t.Fatalf("create with the Docker host's key unknown (Docker's SSH helper): %v", err)
	}
	if b, _ := os.ReadFile(kh); len(b) != 0 || leftovers("labctl-remote") != "0\n0\n0" || onHost("test -e "+tuneFile+" && echo tuned || echo untouched") != "untouched" {
		t.Fatalf("a refused create recorded a key (%q) or left something on the host", b)
	}
	if err := os.WriteFile(kh, []byte(line(ip, dh.HostKey)+line(plainIP, plain.HostKey)), 0o600); err != nil {
		t.Fatal(err)
	}

	preflight := func() (string, error) {
		var b bytes.Buffer
		err := commands.Preflight(ctx, commands.Env{Stdout: &b, Stderr: &b, Output: commands.OutputText, Now: time.Now}, commands.ProfileArg{File: file}, commands.PreflightOptions{})
		return b.String(), err
	}
	if pout, err := preflight(); !errors.Is(err, commands.ErrNotReady) || !strings.Contains(pout, "does not persist it") && !strings.Contains(pout, ", want 524288") {
		t.Errorf("preflight of the untuned Docker host: %v\n%s", err, pout)
	}

	pulled := registryPulls(t, images.Registry, images.K3dPulled())
	out, first, err := create("first run", file)
	if err != nil {
		t.Fatal(err)
	}
	pulled()
	// The Docker host was tuned first, over SSH as dockerop with sudo:
	// the inotify limits k3d's node containers share, live and persisted.
	if !strings.Contains(out, "Tune the Docker host") {
		t.Errorf("first run did not tune the Docker host:\n%s", out)
	}
	tuned := onHost("cat " + tuneFile + "; cat /proc/sys/fs/inotify/max_user_watches /proc/sys/fs/inotify/max_user_instances")
	for _, want := range []string{"fs.inotify.max_user_watches = 524288", "fs.inotify.max_user_instances = 512", "\n524288\n512"} {
		if !strings.Contains(tuned, want) {
			t.Errorf("Docker host tuning lacks %q:\n%s", want, tuned)
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://"+ip+":6443" {
		t.Errorf("kubeconfig server %s, want the Docker host's address", cfg.Host)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 4 {
		t.Fatalf("Nodes through the Docker host's address (TLS checked against the cluster CA): %v %v", len(nodes.Items), err)
	}

	// Ports 80 and 443 of the Docker host reach the cluster through
	// k3d's load balancer: an HTTP server on every node's port 80.
	hostNet := true
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default"},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "echo"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "echo"}},
				Spec: corev1.PodSpec{HostNetwork: hostNet, Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers: []corev1.Container{{Name: "echo", Image: testbed.PauseImage, ImagePullPolicy: corev1.PullNever, Command: []string{"/pause", "serve", ":80"}}}}}}}
	if _, err := cs.AppsV1().DaemonSets("default").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	var body string
	for {
		resp, err := (&http.Client{Timeout: 3 * time.Second}).Get("http://" + ip + ":80/")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == 200 && strings.HasPrefix(string(b), "k3d-labctl-remote-") {
				body = strings.TrimSpace(string(b))
				break
			}
		}
		if time.Since(start) > 3*time.Minute {
			t.Fatalf("http://%s:80/ through k3d's load balancer: %v", ip, err)
		}
		time.Sleep(2 * time.Second)
	}
	t.Logf("http://%s:80/ answered by %s through k3d's load balancer, %s after the DaemonSet", ip, body, time.Since(start).Round(time.Millisecond))
	if got := onHost("docker port k3d-labctl-remote-serverlb | sort"); !strings.Contains(got, "443/tcp -> 0.0.0.0:443") || !strings.Contains(got, "80/tcp -> 0.0.0.0:80") {
		t.Errorf("k3d's load balancer ports on the Docker host: %s", got)
	}

	out, second, err := create("second run", file)
	if err != nil {
		t.Fatal(err)
	}
	if pout, err := preflight(); err != nil {
		t.Errorf("preflight of the tuned Docker host: %v\n%s", err, pout)
	} else {
		t.Logf("preflight of the tuned Docker host:\n%s", pout)
	}
	if !strings.Contains(out, ", 0 changes") {
		t.Errorf("second run made changes:\n%s", out)
	}

	// verify reads the Docker host over the same SSH: its data root's
	// disk (a host full of images) and the inotify limits k3d's nodes
	// share.
	v := &verifier{file: file, opts: commands.VerifyOptions{Kubeconfig: kc}}
	_, text, took := v.run(t, ctx)
	for _, want := range []string{"disk /var/lib/docker", "inotify limits", "sysctl fs.inotify.max_user_watches", "persisted in " + tuneFile} {
		if !strings.Contains(text, want) {
			t.Errorf("verify of the remote k3d cluster lacks %q:\n%s", want, text)
		}
	}
	t.Logf("verify on the remote Docker host (%s):\n%s", took.Round(time.Millisecond), text)

	// Each way the host can be unusable, named.
	for _, tc := range []struct{ name, file, want string }{
		{"a user outside the docker group", profile("no-group", testbed.NoDockerUser, ip, "labctl-remote", 6443, false), "may not use Docker on " + ip + ": add it to the docker group (usermod -aG docker " + testbed.NoDockerUser + ")"},
		{"a host without Docker", profile("no-docker", "root", plainIP, "labctl-remote", 6443, false), "has no docker CLI in root's PATH"},
	} {
		_, _, err := create(tc.name, tc.file)
		if !errors.Is(err, k3d.ErrDockerHost) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}

	var dout bytes.Buffer
	start = time.Now()
	e := commands.Env{Stdout: &dout, Stderr: &dout, Output: commands.OutputText, Now: time.Now}
	if err := commands.Destroy(ctx, e, commands.ProfileArg{File: file}, commands.DestroyOptions{Confirm: strings.NewReader("labctl-remote\n"), Kubeconfig: kc}); err != nil {
		t.Fatalf("destroy: %v\n%s", err, dout.String())
	}
	destroyed := time.Since(start)
	if got := leftovers("labctl-remote"); got != "0\n0\n0" {
		t.Errorf("containers, networks, volumes of the cluster left on the Docker host after destroy: %q", got)
	}

	// A raw k3d create of the same config on the same host, for the
	// ratio: a measurement, not a check.
	if measuring(t, "labctl create vs a raw k3d create on the same host") {
		rl, err := profiles.Loader{}.LoadFile(profile("raw", testbed.DockerUser, ip, "labctl-raw", 6444, false))
		if err != nil {
			t.Fatal(err)
		}
		rl.Spec.K3d.Ports[0].HostPort, rl.Spec.K3d.Ports[1].HostPort = 8080, 8443
		if images.Registry != nil {
			// labctl's create pulled the images; the raw one pulls them too.
			onHost("docker image rm " + strings.Join(images.K3dPulled(), " ") + " >/dev/null")
		}
		rawTime := rawK3dCreate(t, ctx, &rl.Spec, filepath.Join(dir, "raw-kubeconfig"))
		t.Logf("ratio labctl create / raw k3d create of the same config on the same host: %s / %s = %.2f (goal ≤ 1.10; labctl also tunes the host, waits for every Node Ready and merges the kubeconfig)",
			first.Round(time.Millisecond), rawTime.Round(time.Millisecond), first.Seconds()/rawTime.Seconds())
	}

	// Docker stopped on the host.
	onHost("systemctl stop docker.socket docker")
	if _, _, err := create("Docker stopped", file); !errors.Is(err, k3d.ErrDockerHost) || !strings.Contains(err.Error(), "Docker does not run on "+ip) {
		t.Errorf("Docker stopped: %v", err)
	}
	t.Logf("remote Docker host: create %s, no-op re-run %s, destroy %s", first.Round(time.Millisecond), second.Round(time.Millisecond), destroyed.Round(time.Millisecond))
}
