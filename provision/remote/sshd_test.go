package remote

import (
	"testing"
	"time"

	"github.com/labctl/labctl/internal/sshdtest"
)

// sshd is a real OpenSSH server on loopback, started for one test.
type sshd struct {
	*sshdtest.Server
}

func newSSHD(t *testing.T) *sshd { return &sshd{sshdtest.New(t, sshdtest.Options{})} }

func (s *sshd) start() *sshd { s.Start(); return s }

func writeKey(t *testing.T, dir, name, passphrase string) string {
	return sshdtest.WriteKey(t, dir, name, passphrase)
}

func (s *sshd) config() Config {
	return Config{
		Name: "loopback", Address: "127.0.0.1", Port: s.Port, User: s.User,
		IdentityFiles: []string{s.KeyFile}, KnownHostsFile: s.KnownHosts(s.HostKey),
		ConnectTimeout: 5 * time.Second,
	}
}
