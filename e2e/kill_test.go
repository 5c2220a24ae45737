//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/commands"
	"github.com/labctl/labctl/e2e/testbed"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/provision/k3s"
	"github.com/labctl/labctl/provision/remote"
)

// createFailuresAndKillsConvergeOnOneCluster forms one cluster of 3
// servers and an agent through every way a create gets interrupted:
//   - sshd stopped on node-3: create stops naming that node while the
//     reachable nodes get their prerequisites, and K3s is not started;
//   - the sudo user whose sudo asks for a password, none given: create
//     stops naming host and user;
//   - fixed (the password from the environment), the real labctl binary
//     is SIGKILLed right after the K3s inspection, after the first server
//     and after the first join; each re-run continues where the last
//     left off, the last one finishes (the agent waited for as an agent:
//     its Node Ready, no etcd member), and one more run changes nothing.
//     The sudo password never reaches the output.
func createFailuresAndKillsConvergeOnOneCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	labctl := filepath.Join(t.TempDir(), "labctl")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", labctl, "../cmd/labctl").CombinedOutput(); err != nil {
		t.Fatalf("build labctl: %v %s", err, out)
	}
	profile := k3sNodesWithAgents(t, ctx, []string{"172.30.20.71", "172.30.20.72", "172.30.20.73", "172.30.20.74"}, 3)
	state, kc := t.TempDir(), filepath.Join(t.TempDir(), "kubeconfig")
	inProcess := func(file string) (string, error) {
		var out bytes.Buffer
		err := commands.Create(ctx, commands.Env{Stdout: &out, Stderr: os.Stderr}, commands.ProfileArg{File: file},
			commands.CreateOptions{NoFlux: true, StateDir: state, Kubeconfig: kc})
		return out.String(), err
	}

	// 1. node-3 unreachable.
	if _, err := bed.Exec(ctx, "node-3", "systemctl", "stop", "ssh.socket", "ssh.service"); err != nil {
		t.Fatal(err)
	}
	out, err := inProcess(profile("root", ""))
	if err == nil || !strings.Contains(err.Error(), "node-3: connect 172.30.20.73:22 as root") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("unreachable node-3: err = %v", err)
	}
	for _, n := range []string{"node-1", "node-2"} {
		if !strings.Contains(out, n+"        Install host prerequisites: done") {
			t.Errorf("%s: prerequisites not done while node-3 was unreachable:\n%s", n, out)
		}
	}
	if strings.Contains(out, "Initialise K3s cluster ...") {
		t.Errorf("K3s started although a server was unreachable:\n%s", out)
	}
	if _, err := bed.Exec(ctx, "node-3", "systemctl", "start", "ssh.service"); err != nil {
		t.Fatal(err)
	}

	// 2. sudo asks for a password that the profile does not give.
	_, err = inProcess(profile(testbed.PasswordUser, ""))
	if !errors.Is(err, remote.ErrSudoPassword) || !strings.Contains(err.Error(), "sudo for "+testbed.PasswordUser+" asks for a password") {
		t.Fatalf("sudo without password: err = %v", err)
	}

	// 3. Fixed: the password from the environment of the labctl runs
	// below, then killed at each stage.
	file := profile(testbed.PasswordUser, "")
	text, _ := os.ReadFile(file)
	text = bytes.Replace(text, []byte("knownHostsFile:"), []byte("sudoPasswordRef: {env: LABCTL_E2E_SUDO}, knownHostsFile:"), 1)
	if err := os.WriteFile(file, text, 0o600); err != nil {
		t.Fatal(err)
	}

	// create runs labctl; killAfter names the step whose completion ends
	// it with SIGKILL ("" runs to the end). It returns the done event.
	create := func(killAfter string) (killed bool, done plan.Event) {
		cmd := exec.CommandContext(ctx, labctl, "create", "-f", file, "--no-flux", "-o", "json", "--state-dir", state, "--kubeconfig", kc)
		cmd.Env = append(os.Environ(), "LABCTL_E2E_SUDO="+testbed.PasswordUserPass)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if strings.Contains(sc.Text(), testbed.PasswordUserPass) {
				t.Error("the sudo password reached labctl's output")
			}
			var e plan.Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("not an event: %q", sc.Text())
			}
			if e.Kind == plan.KindStepDone && e.Step == killAfter {
				_ = cmd.Process.Kill()
				killed = true
				break
			}
			if e.Kind == plan.KindDone {
				done = e
			}
		}
		err = cmd.Wait()
		if !killed && err != nil {
			t.Fatalf("labctl create: %v (done event: %+v)", err, done)
		}
		return killed, done
	}
	for _, stage := range []string{"k3s-inspect", "k3s-init/node-1", "k3s-join/node-2"} {
		if killed, _ := create(stage); !killed {
			t.Fatalf("labctl finished before %s", stage)
		}
		t.Logf("killed labctl (SIGKILL) after %s", stage)
	}
	_, done := create("")
	if done.Error != "" {
		t.Fatalf("final run: %s", done.Error)
	}
	start := time.Now()
	_, again := create("")
	if again.Changes != 0 {
		t.Fatalf("run after convergence made %d changes", again.Changes)
	}
	t.Logf("converged after three kills; the next run made 0 changes in %s", time.Since(start).Round(time.Millisecond))
	out, err = bed.Exec(ctx, "node-3", "sh", "-c", "curl -sS --cacert /var/lib/rancher/k3s/server/tls/etcd/server-ca.crt --cert /var/lib/rancher/k3s/server/tls/etcd/client.crt --key /var/lib/rancher/k3s/server/tls/etcd/client.key -X POST https://127.0.0.1:2379/v3/cluster/member/list -d '{}'")
	if err != nil || strings.Count(out, `"name":"node-`) != 3 || strings.Contains(out, "isLearner") || strings.Contains(out, "node-4") {
		t.Fatalf("etcd members after convergence: %v %s", err, out)
	}
	agent, err := bed.Exec(ctx, "node-1", "sh", "-c", "curl -sS --cacert /var/lib/rancher/k3s/server/tls/server-ca.crt --cert /var/lib/rancher/k3s/server/tls/client-admin.crt --key /var/lib/rancher/k3s/server/tls/client-admin.key https://127.0.0.1:6443/api/v1/nodes/node-4")
	if kn, perr := k3s.ParseNode(agent); perr != nil || !kn.Ready || slices.Contains(kn.Roles, "etcd") {
		t.Errorf("agent node-4 after convergence: %+v %v %v", kn, perr, err)
	}
	if state, _ := bed.Exec(ctx, "node-4", "systemctl", "is-active", "k3s-agent"); state != "active" {
		t.Errorf("node-4's k3s-agent is %q", state)
	}
	ents, _ := os.ReadDir(filepath.Join(state, "production-e2e"))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 1 || names[0] != "cluster-token" {
		t.Errorf("state holds %v, want the one token kept across runs", names)
	}
}
