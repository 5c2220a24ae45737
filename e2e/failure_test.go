//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/commands"
	"github.com/labctl/labctl/e2e/testbed"
	"github.com/labctl/labctl/provision/remote"
)

// TestCreateReportsUnreachableHostAndSudoFailureThenReRunFinishes: with
// sshd stopped on one node, create stops with an error naming that node
// while the reachable nodes get their prerequisites; with the sudo user
// whose sudo asks for a password and none given, create stops naming host
// and user; once both are fixed, the re-run finishes the cluster.
func TestCreateReportsUnreachableHostAndSudoFailureThenReRunFinishes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	profile := k3sNodes(t, ctx, []string{"172.30.20.71", "172.30.20.72", "172.30.20.73"})
	state, kc := t.TempDir(), filepath.Join(t.TempDir(), "kubeconfig")
	create := func(file string) (string, error) {
		var out bytes.Buffer
		err := commands.Create(ctx, commands.Env{Stdout: &out, Stderr: os.Stderr}, commands.ProfileArg{File: file},
			commands.CreateOptions{NoFlux: true, StateDir: state, Kubeconfig: kc})
		return out.String(), err
	}

	// 1. node-3 unreachable.
	if _, err := bed.Exec(ctx, "node-3", "systemctl", "stop", "ssh.socket", "ssh.service"); err != nil {
		t.Fatal(err)
	}
	root := profile("root", "")
	out, err := create(root)
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
	_, err = create(profile(testbed.PasswordUser, ""))
	if !errors.Is(err, remote.ErrSudoPassword) || !strings.Contains(err.Error(), "sudo for "+testbed.PasswordUser+" asks for a password") {
		t.Fatalf("sudo without password: err = %v", err)
	}

	// 3. Fixed: the password from the environment; the re-run finishes.
	t.Setenv("LABCTL_E2E_SUDO", testbed.PasswordUserPass)
	withPass := profile(testbed.PasswordUser, "")
	text, _ := os.ReadFile(withPass)
	text = bytes.Replace(text, []byte("knownHostsFile:"), []byte("sudoPasswordRef: {env: LABCTL_E2E_SUDO}, knownHostsFile:"), 1)
	if err := os.WriteFile(withPass, text, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = create(withPass)
	if err != nil {
		t.Fatalf("re-run after the fixes: %v\n%s", err, out)
	}
	if strings.Contains(out, testbed.PasswordUserPass) {
		t.Error("the sudo password reached the output")
	}
	if !strings.Contains(out, "Join K3s server: done") || !strings.Contains(out, "finished in") {
		t.Fatalf("re-run did not finish the cluster:\n%s", out)
	}
}
