// Package sshdtest runs a real OpenSSH sshd for a test: on loopback (or a
// given address), as the current user, with a fresh host key and a
// client key it authorises. The binary is Debian's openssh-server, which
// .ci/run installs.
package sshdtest

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

// Options shape the server.
type Options struct {
	// Listen is the address to listen on; default 127.0.0.1.
	Listen string
	// Extra is appended to sshd_config.
	Extra string
}

// Server is one sshd.
type Server struct {
	t       testing.TB
	Dir     string
	Host    string
	Port    int
	Addr    string // host:port
	HostKey ssh.PublicKey
	// KeyFile is a client private key authorised for User.
	KeyFile string
	User    string
	// AuthorizedKeys is the file sshd reads the keys from.
	AuthorizedKeys string
	log            *lockedBuffer
	cmd            *exec.Cmd
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

func freePort(t testing.TB, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// New prepares an sshd; Start starts it.
func New(t testing.TB, o Options) *Server {
	t.Helper()
	bin := "/usr/sbin/sshd"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("these tests need OpenSSH's sshd at %s (apt-get install openssh-server): %v", bin, err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1"
	}
	dir := t.TempDir()
	s := &Server{t: t, Dir: dir, Host: o.Listen, User: u.Username, log: &lockedBuffer{}}
	s.Port = freePort(t, o.Listen)
	s.Addr = net.JoinHostPort(o.Listen, fmt.Sprint(s.Port))
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "hostkey")).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	hk, _ := os.ReadFile(filepath.Join(dir, "hostkey.pub"))
	s.HostKey, _, _, _, err = ssh.ParseAuthorizedKey(hk)
	if err != nil {
		t.Fatal(err)
	}
	s.KeyFile = WriteKey(t, dir, "client", "")
	pub, _ := os.ReadFile(s.KeyFile + ".pub")
	s.AuthorizedKeys = filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(s.AuthorizedKeys, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		_ = os.MkdirAll("/run/sshd", 0o755) // privilege separation directory
	}
	cfg := fmt.Sprintf(`Port %d
ListenAddress %s
HostKey %s/hostkey
PidFile none
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
LogLevel VERBOSE
%s`, s.Port, o.Listen, dir, s.AuthorizedKeys, o.Extra)
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// WriteKey writes an ed25519 key pair; a non-empty passphrase encrypts it.
func WriteKey(t testing.TB, dir, name, passphrase string) string {
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

// Start runs sshd until the test ends and waits until it listens.
func (s *Server) Start() *Server {
	s.t.Helper()
	s.cmd = exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(s.Dir, "sshd_config"))
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = s.cmd.Process.Kill(); _ = s.cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
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

// KnownHostsLine is a known_hosts line giving this server key.
func (s *Server) KnownHostsLine(key ssh.PublicKey) string {
	return fmt.Sprintf("[%s]:%d %s", s.Host, s.Port, ssh.MarshalAuthorizedKey(key))
}

// KnownHosts writes a known_hosts file with key for this sshd (none for
// a nil key).
func (s *Server) KnownHosts(key ssh.PublicKey) string {
	s.t.Helper()
	p := filepath.Join(s.t.TempDir(), "known_hosts")
	var data []byte
	if key != nil {
		data = []byte(s.KnownHostsLine(key))
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// Accepted counts the logins sshd logged.
func (s *Server) Accepted() int {
	return strings.Count(s.log.String(), "Accepted publickey")
}

// Log is sshd's output so far.
func (s *Server) Log() string { return s.log.String() }
