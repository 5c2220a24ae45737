package remote

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// sshd is a real OpenSSH server on loopback, started for one test.
type sshd struct {
	t       *testing.T
	dir     string
	addr    string // 127.0.0.1:port
	port    int
	hostKey ssh.PublicKey
	keyFile string // client private key authorised for the current user
	user    string
	log     *lockedBuffer
	cmd     *exec.Cmd
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// newSSHD prepares an sshd; start it with start(). The binary comes from
// Debian's openssh-server, which .ci/run installs.
func newSSHD(t *testing.T) *sshd {
	t.Helper()
	bin := "/usr/sbin/sshd"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("these tests need OpenSSH's sshd at %s (apt-get install openssh-server): %v", bin, err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &sshd{t: t, dir: dir, user: u.Username, log: &lockedBuffer{}}
	s.port = freePort(t)
	s.addr = fmt.Sprintf("127.0.0.1:%d", s.port)
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "hostkey")).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	hk, _ := os.ReadFile(filepath.Join(dir, "hostkey.pub"))
	s.hostKey, _, _, _, err = ssh.ParseAuthorizedKey(hk)
	if err != nil {
		t.Fatal(err)
	}
	s.keyFile = writeKey(t, dir, "client", "")
	pub, _ := os.ReadFile(s.keyFile + ".pub")
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		_ = os.MkdirAll("/run/sshd", 0o755) // privilege separation directory
	}
	cfg := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s/hostkey
PidFile none
AuthorizedKeysFile %s/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
LogLevel VERBOSE
`, s.port, dir, dir)
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// writeKey writes an ed25519 key pair; a non-empty passphrase encrypts it.
func writeKey(t *testing.T, dir, name, passphrase string) string {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var blk *pem.Block
	if passphrase == "" {
		blk, err = ssh.MarshalPrivateKey(priv, "")
	} else {
		blk, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	if err := os.WriteFile(path+".pub", ssh.MarshalAuthorizedKey(sp), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func (s *sshd) start() *sshd {
	s.t.Helper()
	s.cmd = exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(s.dir, "sshd_config"))
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = s.cmd.Process.Kill(); _ = s.cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			_ = c.Close()
			return s
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("sshd did not listen: %s", s.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// knownHosts writes a known_hosts file with the given key for this sshd.
func (s *sshd) knownHosts(key ssh.PublicKey) string {
	s.t.Helper()
	p := filepath.Join(s.t.TempDir(), "known_hosts")
	var data []byte
	if key != nil {
		data = []byte(fmt.Sprintf("[127.0.0.1]:%d %s", s.port, ssh.MarshalAuthorizedKey(key)))
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		s.t.Fatal(err)
	}
	return p
}

func (s *sshd) config() Config {
	return Config{
		Name: "loopback", Address: "127.0.0.1", Port: s.port, User: s.user,
		IdentityFiles: []string{s.keyFile}, KnownHostsFile: s.knownHosts(s.hostKey),
		ConnectTimeout: 5 * time.Second,
	}
}

// accepted counts the logins sshd logged.
func (s *sshd) accepted() int {
	return strings.Count(s.log.String(), "Accepted publickey")
}
