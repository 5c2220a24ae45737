package k3d

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/profiles"
)

// A Docker host at ssh://user@host is reached the way the Docker CLI
// reaches it: its SSH helper runs the system ssh client with `docker
// system dial-stdio` on the host. labctl does not let that ssh decide
// about host keys on its own: during k3d's calls, the ssh found first in
// PATH is a shim that runs the real client with strict host key checking
// against the profile's known_hosts (spec.ssh.knownHostsFile, default
// ~/.ssh/known_hosts), no prompt (BatchMode) and the profile's identity
// files. An unknown or changed key fails the connection, never asks.

// sshShim writes the shim for the profile's ssh:// Docker host into a new
// directory and returns it; cleanup removes it.
func sshShim(s *profiles.Spec) (dir string, cleanup func(), err error) {
	real, err := exec.LookPath("ssh")
	if err != nil {
		return "", nil, fmt.Errorf("spec.k3d.dockerHost %s: Docker's SSH helper runs the system ssh client, and none is installed (apt-get install openssh-client)", s.K3d.DockerHost)
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return "", nil, err
	}
	kh := "~/.ssh/known_hosts"
	var ids []string
	if s.SSH != nil {
		if s.SSH.KnownHostsFile != "" {
			kh = s.SSH.KnownHostsFile
		}
		ids = s.SSH.IdentityFiles
	}
	if kh, err = profiles.ExpandHome(kh); err != nil {
		return "", nil, err
	}
	if _, err := os.Stat(kh); err != nil {
		return "", nil, fmt.Errorf("spec.k3d.dockerHost %s: the Docker host's key is checked against %s: %w (add the host's key to it: ssh-keyscan -H <host> after checking its fingerprint)", s.K3d.DockerHost, kh, err)
	}
	args := []string{shq(real), "-o StrictHostKeyChecking=yes", "-o UserKnownHostsFile=" + shq(kh), "-o GlobalKnownHostsFile=/dev/null", "-o BatchMode=yes"}
	for _, id := range ids {
		p, err := profiles.ExpandHome(id)
		if err != nil {
			return "", nil, err
		}
		args = append(args, "-o IdentitiesOnly=yes", "-i "+shq(p))
	}
	dir, err = os.MkdirTemp("", "labctl-ssh-")
	if err != nil {
		return "", nil, err
	}
	script := "#!/bin/sh\n# labctl: Docker's SSH helper, with the profile's host key policy.\nexec " + strings.Join(args, " ") + ` "$@"` + "\n"
	if err := os.WriteFile(filepath.Join(dir, "ssh"), []byte(script), 0o700); err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, err
	}
	return dir, func() { _ = os.RemoveAll(dir) }, nil
}

// diagnoseSSHHost asks the Docker host once more, through the shim,
// with a command whose errors reach its standard error whole (the
// helper's connection can end before ssh's stderr is read), and names
// the problem, or "".
func diagnoseSSHHost(shimDir, dockerHost string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	cmd, err := sshCommand(ctx, shimDir, dockerHost, "docker version --format '{{.Server.Version}}'")
	if err != nil {
		return ""
	}
	out, _ := cmd.CombinedOutput()
	return sshHostProblem(dockerHost, "stderr="+string(out))
}

// sshCommand runs script on the Docker host through the shim (the
// profile's host key policy and identities).
func sshCommand(ctx context.Context, shimDir, dockerHost, script string) (*exec.Cmd, error) {
	u, err := url.Parse(dockerHost)
	if err != nil {
		return nil, err
	}
	args := []string{"-T", "-o", "ConnectTimeout=30"}
	if u.User != nil {
		args = append(args, "-l", u.User.Username())
	}
	if p := u.Port(); p != "" {
		args = append(args, "-p", p)
	}
	return exec.CommandContext(ctx, filepath.Join(shimDir, "ssh"), append(args, "--", u.Hostname(), script)...), nil
}

// remoteHostFacts reads, over SSH, the free space of the Docker host's
// data root and its inotify limits (k3d's node containers share them).
func remoteHostFacts(ctx context.Context, s *profiles.Spec, dataRoot string, d *facts.DockerHost) error {
	dir, cleanup, err := sshShim(s)
	if err != nil {
		return err
	}
	defer cleanup()
	cmd, err := sshCommand(ctx, dir, s.K3d.DockerHost, "df -Pk "+shq(dataRoot)+" | awk 'NR==2 {print $2, $4}'; cat /proc/sys/fs/inotify/max_user_watches /proc/sys/fs/inotify/max_user_instances")
	if err != nil {
		return err
	}
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("read the Docker host's disk and inotify limits over SSH: %w", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 4 {
		return fmt.Errorf("read the Docker host's disk and inotify limits over SSH: unexpected output %q", firstLine(string(out)))
	}
	d.SizeKB, _ = strconv.ParseInt(f[0], 10, 64)
	d.FreeKB, _ = strconv.ParseInt(f[1], 10, 64)
	d.InotifyWatches, _ = strconv.Atoi(f[2])
	d.InotifyInstances, _ = strconv.Atoi(f[3])
	return nil
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// ErrDockerHost is a remote Docker host that answered, but not as Docker.
var ErrDockerHost = errors.New("the Docker host cannot be used")

// sshHostProblem reads what the Docker host's ssh session said (the
// helper's "stderr=…") and names the problem and its fix, or "".
func sshHostProblem(dockerHost, msg string) string {
	_, stderr, ok := strings.Cut(msg, "stderr=")
	if !ok {
		return ""
	}
	user, host := "", dockerHost
	if u, err := url.Parse(dockerHost); err == nil {
		user, host = u.User.Username(), u.Host
	}
	switch {
	case strings.Contains(stderr, "Host key verification failed") || strings.Contains(stderr, "REMOTE HOST IDENTIFICATION HAS CHANGED") || strings.Contains(stderr, "No ED25519 host key is known") || strings.Contains(stderr, "host key is known"):
		return fmt.Sprintf("the SSH host key of %s is not the one in the profile's known_hosts (spec.ssh.knownHostsFile): labctl never accepts a key on first use; check the host's fingerprint, then add it", host)
	case strings.Contains(stderr, "Permission denied (publickey"):
		return fmt.Sprintf("%s refused the SSH login of %s: authorise one of spec.ssh.identityFiles (or the agent's keys) for that user", host, user)
	case strings.Contains(stderr, "docker: command not found") || strings.Contains(stderr, "docker: not found") || strings.Contains(stderr, "exec: docker: not found") || strings.Contains(stderr, "\"docker\": executable file not found"):
		return fmt.Sprintf("%s has no docker CLI in %s's PATH: install Docker there (apt-get install docker.io)", host, user)
	case strings.Contains(stderr, "permission denied while trying to connect to the Docker daemon"):
		return fmt.Sprintf("%s may not use Docker on %s: add it to the docker group (usermod -aG docker %s), then log in anew", user, host, user)
	case strings.Contains(stderr, "Cannot connect to the Docker daemon") || strings.Contains(stderr, "Is the docker daemon running"):
		return fmt.Sprintf("Docker does not run on %s: start it there (systemctl enable --now docker)", host)
	case strings.Contains(stderr, "Connection refused") || strings.Contains(stderr, "No route to host") || strings.Contains(stderr, "Connection timed out") || strings.Contains(stderr, "Could not resolve hostname"):
		return fmt.Sprintf("no SSH connection to %s: %s", host, firstLine(stderr))
	}
	return ""
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
