package testbed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// NodePackages is what a Debian cloud image has that matters here:
// systemd, sshd, sudo, curl. Deliberately absent: open-iscsi, nfs-common,
// cryptsetup, multipath-tools — labctl installs those.
var NodePackages = []string{
	"systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "curl", "ca-certificates",
	"iproute2", "iputils-ping", "kmod", "procps", "less", "gnupg", "netbase",
	// What the K3s binary bundles and the stand-in takes from Debian:
	// containerd (its service masked: K3s runs its own), runc, the CNI
	// plugins and the tools kube-proxy and the kubelet call.
	"containerd", "runc", "containernetworking-plugins", "iptables", "conntrack", "ethtool", "socat",
}

// Users of a node, besides root.
const (
	SudoUser     = "labctl"  // sudo without a password
	PasswordUser = "opsuser" // sudo asks for PasswordUserPass
	// PasswordUserPass is a throwaway test password for the bed's own nodes.
	PasswordUserPass = "testbed-sudo-pass"
)

// nodeSetup runs in the debootstrapped root (chroot) to finish the image.
var nodeSetup = `set -eu
# Each node makes its own host keys at first boot.
rm -f /etc/ssh/ssh_host_*
mkdir -p /etc/systemd/system/ssh.service.d
cat > /etc/systemd/system/ssh.service.d/hostkeys.conf <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
systemctl enable ssh.service
# Units that have nothing to do in a container.
for u in getty@tty1.service console-getty.service serial-getty@console.service \
         systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
         apt-daily.timer apt-daily-upgrade.timer e2scrub_reap.service systemd-firstboot.service \
         containerd.service; do
  systemctl mask "$u"
done
useradd -m -s /bin/bash ` + SudoUser + `
echo '` + SudoUser + ` ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/` + SudoUser + `
useradd -m -s /bin/bash -G sudo ` + PasswordUser + `
echo '` + PasswordUser + `:` + PasswordUserPass + `' | chpasswd
chmod 0440 /etc/sudoers.d/` + SudoUser + `
passwd -l root
: > /etc/machine-id
rm -f /etc/hostname
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
`

// imageInputs is everything that determines the node image.
func imageInputs() string {
	return strings.Join([]string{"bookworm", DebianMirror, strings.Join(NodePackages, ","), nodeSetup}, "\n")
}

// DebianMirror is where debootstrap and the nodes' apt get packages.
const DebianMirror = "http://deb.debian.org/debian"

// NodeImage returns the tag of the node image, building it when no image
// or cached root tarball with the same input hash exists.
func NodeImage(ctx context.Context, d *Docker, cache string, log func(string, ...any)) (string, error) {
	sum := sha256.Sum256([]byte(imageInputs()))
	hash := hex.EncodeToString(sum[:])[:12]
	tag := "labctl-testbed/node:" + hash
	if _, err := d.Output(ctx, "image", "inspect", "--format", "{{.Id}}", tag); err == nil {
		log("image: %s present", tag)
		return tag, nil
	}
	tarball := filepath.Join(cache, "node-"+hash+".tar")
	if _, err := os.Stat(tarball); err != nil {
		start := time.Now()
		if err := debootstrap(ctx, tarball, log); err != nil {
			return "", err
		}
		log("image: debootstrapped root in %s", time.Since(start).Round(time.Second))
	}
	start := time.Now()
	f, err := os.Open(tarball)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, _ := f.Stat()
	if _, err := d.Input(ctx, f, "import",
		"--change", `CMD ["/sbin/init"]`,
		"--change", "ENV container=docker",
		"-", tag); err != nil {
		return "", err
	}
	log("image: imported %s (%d MiB) in %s", tag, st.Size()>>20, time.Since(start).Round(time.Millisecond))
	return tag, nil
}

func debootstrap(ctx context.Context, tarball string, log func(string, ...any)) error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		log("image: installing debootstrap")
		if err := aptInstall(ctx, "debootstrap"); err != nil {
			return err
		}
	}
	root, err := os.MkdirTemp(filepath.Dir(tarball), "rootfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	log("image: debootstrap bookworm (%d packages)", len(NodePackages))
	steps := [][]string{
		{"debootstrap", "--variant=minbase", "--include=" + strings.Join(NodePackages, ","), "bookworm", root, DebianMirror},
		{"chroot", root, "/bin/sh", "-c", nodeSetup},
	}
	for _, s := range steps {
		cmd := exec.CommandContext(ctx, s[0], s[1:]...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w: %s", s[0], err, lastLines(string(b), 15))
		}
	}
	tmp := tarball + ".tmp"
	cmd := exec.CommandContext(ctx, "tar", "-C", root, "--numeric-owner", "-cf", tmp, ".")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("tar: %w: %s", err, b)
	}
	return os.Rename(tmp, tarball)
}

// sourceDir is a directory of this package's source tree (for helpers the
// bed compiles, like the runtime wrapper).
func sourceDir(sub string) (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cannot locate the test bed's source")
	}
	return filepath.Join(filepath.Dir(file), sub), nil
}
