//go:build e2e

package testbed

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func logf(t *testing.T) func(string, ...any) {
	return func(format string, args ...any) { t.Logf(format, args...) }
}

// sshRun logs in over real SSH, verifying the node's host key.
func sshRun(t *testing.T, b *Bed, n *Node, user, cmd string) (string, error) {
	t.Helper()
	cfg := &ssh.ClientConfig{
		User:              user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(b.Signer)},
		HostKeyCallback:   ssh.FixedHostKey(n.HostKey),
		HostKeyAlgorithms: []string{n.HostKey.Type()},
		Timeout:           10 * time.Second,
	}
	c, err := ssh.Dial("tcp", n.IP+":22", cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	return strings.TrimSpace(string(out)), err
}

// TestNodesBootAndAnswerSSH is the bed's self-test for its nodes: three
// containers boot systemd, answer SSH with their own host keys for root,
// the sudo user and the password-sudo user, and lack the Longhorn
// prerequisites that labctl is to install.
func TestNodesBootAndAnswerSSH(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	b, err := New(ctx, Options{Name: "labctl-tb-self", Subnet: "172.30.10.0/24", Log: logf(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	t.Logf("bed ready in %s", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	var nodes []*Node
	for i, name := range []string{"node-1", "node-2", "node-3"} {
		n, err := b.StartNode(ctx, name, fmt.Sprintf("172.30.10.%d", 11+i))
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	t.Logf("3 nodes booted and answering SSH in %s", time.Since(start).Round(time.Millisecond))

	keys := map[string]bool{}
	for _, n := range nodes {
		fp := ssh.FingerprintSHA256(n.HostKey)
		if keys[fp] {
			t.Errorf("%s shares host key %s with another node", n.Name, fp)
		}
		keys[fp] = true
		if out, err := sshRun(t, b, n, "root", "hostname; systemctl is-system-running"); err != nil || out != n.Name+"\nrunning" {
			t.Errorf("%s as root: %q %v", n.Name, out, err)
		}
		if out, err := sshRun(t, b, n, SudoUser, "sudo -n id -u"); err != nil || out != "0" {
			t.Errorf("%s: passwordless sudo for %s: %q %v", n.Name, SudoUser, out, err)
		}
		if out, err := sshRun(t, b, n, PasswordUser, "sudo -n true"); err == nil || !strings.Contains(out, "password is required") {
			t.Errorf("%s: sudo for %s should need a password: %q %v", n.Name, PasswordUser, out, err)
		}
		if out, err := sshRun(t, b, n, PasswordUser, "echo "+PasswordUserPass+" | sudo -S -p '' id -u"); err != nil || out != "0" {
			t.Errorf("%s: sudo with password for %s: %q %v", n.Name, PasswordUser, out, err)
		}
		if out, _ := sshRun(t, b, n, "root", "dpkg-query -W -f='${Status}' open-iscsi nfs-common cryptsetup 2>&1"); strings.Contains(out, "install ok installed") {
			t.Errorf("%s: the image must not carry Longhorn prerequisites: %q", n.Name, out)
		}
	}
	// A wrong host key is refused by the client: the nodes' keys are real.
	cfg := &ssh.ClientConfig{User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(b.Signer)}, HostKeyCallback: ssh.FixedHostKey(nodes[1].HostKey), HostKeyAlgorithms: []string{ssh.KeyAlgoED25519}, Timeout: 5 * time.Second}
	if c, err := ssh.Dial("tcp", nodes[0].IP+":22", cfg); err == nil {
		_ = c.Close()
		t.Error("node-1 accepted a login checked against node-2's host key")
	}
	// apt inside a node reaches the Debian mirror (labctl installs packages there).
	if out, err := sshRun(t, b, nodes[0], "root", "apt-get update -qq && apt-cache policy open-iscsi | head -3"); err != nil || !strings.Contains(out, "Candidate") {
		t.Errorf("apt in a node: %q %v", out, err)
	}
	if du, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(du), "\n") {
			if strings.HasPrefix(l, "VmHWM") {
				t.Logf("test process peak memory: %s", strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:")))
			}
		}
	}
}
