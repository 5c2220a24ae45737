//go:build e2e

package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/labctl/labctl/e2e/testbed"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/remote"
)

func sudoOverSSHForEachKindOfUser(t *testing.T) {
	ctx := context.Background()
	n, err := bed.StartNode(ctx, "sudo-1", "172.30.20.11")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bed.RemoveNode(ctx, n.Name) }()
	asRoot := func(h *remote.Host) string {
		t.Helper()
		res, err := h.Run(ctx, remote.Cmd{Script: "id -u", Sudo: true})
		if err != nil {
			t.Fatalf("%s: %v", h.Name(), err)
		}
		return res.Stdout
	}

	t.Run("passwordless sudo user", func(t *testing.T) {
		h, err := remote.Dial(ctx, sshConfig(t, n, testbed.SudoUser), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = h.Close() }()
		if got := asRoot(h); got != "0" {
			t.Fatalf("sudo id -u = %q", got)
		}
	})

	t.Run("sudo user with password", func(t *testing.T) {
		cfg := sshConfig(t, n, testbed.PasswordUser)
		cfg.SudoPassword = profiles.NewSecret(testbed.PasswordUserPass)
		var lines []string
		h, err := remote.Dial(ctx, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = h.Close() }()
		if got := asRoot(h); got != "0" {
			t.Fatalf("sudo id -u = %q", got)
		}
		// Twice in a row: sudo's cached timestamp must not let the password
		// line reach the command's stdin.
		for range 2 {
			if err := h.Upload(ctx, "/etc/labctl-test/secret.conf", []byte("payload\n"), 0o600, true); err != nil {
				t.Fatal(err)
			}
		}
		got, err := bed.Exec(ctx, n.Name, "sh", "-c", "stat -c '%U %a' /etc/labctl-test/secret.conf; cat /etc/labctl-test/secret.conf")
		if err != nil || got != "root 600\npayload" {
			t.Fatalf("uploaded file: %q %v", got, err)
		}
		res, err := h.Run(ctx, remote.Cmd{Script: "echo pw is " + testbed.PasswordUserPass, Sudo: true, Output: func(_, l string) { lines = append(lines, l) }})
		if err != nil || strings.Contains(res.Stdout+strings.Join(lines, ""), testbed.PasswordUserPass) {
			t.Fatalf("sudo password not redacted: %q %q %v", res.Stdout, lines, err)
		}
	})

	t.Run("sudo user without the password", func(t *testing.T) {
		h, err := remote.Dial(ctx, sshConfig(t, n, testbed.PasswordUser), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = h.Close() }()
		_, err = h.Run(ctx, remote.Cmd{Script: "true", Sudo: true})
		if !errors.Is(err, remote.ErrSudoPassword) || !strings.Contains(err.Error(), "sudo-1: sudo for "+testbed.PasswordUser+" asks for a password") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("wrong sudo password", func(t *testing.T) {
		cfg := sshConfig(t, n, testbed.PasswordUser)
		cfg.SudoPassword = profiles.NewSecret("not-the-password")
		h, err := remote.Dial(ctx, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = h.Close() }()
		_, err = h.Run(ctx, remote.Cmd{Script: "true", Sudo: true})
		if !errors.Is(err, remote.ErrSudoPassword) || !strings.Contains(err.Error(), "rejected the password") || strings.Contains(err.Error(), "not-the-password") {
			t.Fatalf("err = %v", err)
		}
	})
}

// A rebuilt node comes back with new host keys on the same address:
// labctl refuses it until the operator removes the old entry.
func rebuiltNodeWithNewHostKeyIsRefused(t *testing.T) {
	ctx := context.Background()
	n, err := bed.StartNode(ctx, "rekey-1", "172.30.20.12")
	if err != nil {
		t.Fatal(err)
	}
	cfg := sshConfig(t, n, "root")
	old := n.HostKey
	if err := bed.RemoveNode(ctx, n.Name); err != nil {
		t.Fatal(err)
	}
	n2, err := bed.StartNode(ctx, "rekey-1", "172.30.20.12")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bed.RemoveNode(ctx, n2.Name) }()
	_, err = remote.Dial(ctx, cfg, nil)
	if !errors.Is(err, remote.ErrHostKeyMismatch) {
		t.Fatalf("err = %v, want ErrHostKeyMismatch", err)
	}
	for _, want := range []string{"rekey-1", ssh.FingerprintSHA256(old), ssh.FingerprintSHA256(n2.HostKey), "ssh-keygen -R 172.30.20.12"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message lacks %q: %v", want, err)
		}
	}
}
