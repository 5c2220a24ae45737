package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/labctl/labctl/profiles"
)

func dial(t *testing.T, cfg Config, r *Redactor) *Host {
	t.Helper()
	h, err := Dial(context.Background(), cfg, r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func TestRunStreamsOutputLinesWithSecretsRedacted(t *testing.T) {
	s := newSSHD(t).start()
	r := &Redactor{}
	r.Add(profiles.NewSecret("K10abc::server:topsecret"))
	h := dial(t, s.config(), r)
	var mu sync.Mutex
	var lines []string
	res, err := h.Run(context.Background(), Cmd{
		Script: "echo token=K10abc::server:topsecret; echo warn >&2; cat",
		Stdin:  []byte("from stdin\n"),
		Output: func(stream, line string) { mu.Lock(); lines = append(lines, stream+": "+line); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stdout != "token=[redacted]\nfrom stdin" || res.Stderr != "warn" {
		t.Fatalf("result = %+v", res)
	}
	joined := strings.Join(lines, "\n")
	if strings.Contains(joined, "topsecret") || !strings.Contains(joined, "stderr: warn") || !strings.Contains(joined, "stdout: token=[redacted]") {
		t.Fatalf("streamed lines = %q", lines)
	}
}

func TestNonZeroExitNamesHostCommandAndStderr(t *testing.T) {
	s := newSSHD(t).start()
	h := dial(t, s.config(), nil)
	_, err := h.Run(context.Background(), Cmd{Script: "echo 'E: Unable to locate package nope' >&2; exit 100"})
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Status != 100 {
		t.Fatalf("err = %v", err)
	}
	want := "loopback: `echo 'E: Unable to locate package nope' >&2; exit 100`: exit status 100: E: Unable to locate package nope"
	if err.Error() != want {
		t.Fatalf("message\n got %s\nwant %s", err, want)
	}
}

func TestUnknownHostIsRefusedUnlessAcceptedThenRecorded(t *testing.T) {
	s := newSSHD(t).start()
	cfg := s.config()
	cfg.KnownHostsFile = s.KnownHosts(nil)
	_, err := Dial(context.Background(), cfg, nil)
	if !errors.Is(err, ErrHostKeyUnknown) || !strings.Contains(err.Error(), ssh.FingerprintSHA256(s.HostKey)) {
		t.Fatalf("err = %v, want ErrHostKeyUnknown with the offered fingerprint", err)
	}
	cfg.AcceptNewHostKeys = true
	h := dial(t, cfg, nil)
	_ = h.Close()
	data, _ := os.ReadFile(cfg.KnownHostsFile)
	if !strings.Contains(string(data), fmt.Sprintf("[127.0.0.1]:%d ssh-ed25519", s.Port)) {
		t.Fatalf("known_hosts = %q", data)
	}
	cfg.AcceptNewHostKeys = false // now known: strict mode connects
	_ = dial(t, cfg, nil)
}

func TestChangedHostKeyIsRefusedNamingBothFingerprints(t *testing.T) {
	s := newSSHD(t).start()
	other := writeKey(t, t.TempDir(), "other", "")
	pub, _ := os.ReadFile(other + ".pub")
	otherKey, _, _, _, _ := ssh.ParseAuthorizedKey(pub)
	cfg := s.config()
	cfg.KnownHostsFile = s.KnownHosts(otherKey)
	cfg.AcceptNewHostKeys = true // never overrides a mismatch
	_, err := Dial(context.Background(), cfg, nil)
	if !errors.Is(err, ErrHostKeyMismatch) {
		t.Fatalf("err = %v, want ErrHostKeyMismatch", err)
	}
	for _, want := range []string{"loopback", ssh.FingerprintSHA256(s.HostKey), ssh.FingerprintSHA256(otherKey)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message lacks %q: %v", want, err)
		}
	}
	if s.Accepted() != 0 {
		t.Error("authenticated to a host whose key did not match")
	}
}

func TestUploadIsAtomicWithModeAndCreatesParents(t *testing.T) {
	s := newSSHD(t).start()
	h := dial(t, s.config(), nil)
	dst := filepath.Join(t.TempDir(), "etc", "rancher", "k3s", "config.yaml")
	if err := h.Upload(context.Background(), dst, []byte("cluster-init: true\n"), 0o600, true); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dst)
	if st.Mode().Perm() != 0o600 || string(b) != "cluster-init: true\n" {
		t.Fatalf("mode %v content %q", st.Mode().Perm(), b)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), ".labctl-upload.*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	if err := h.Upload(context.Background(), "relative/path", nil, 0o644, false); err == nil {
		t.Fatal("relative upload path accepted")
	}
}

func TestPoolMakesOneConnectionPerHostForManyCommands(t *testing.T) {
	s := newSSHD(t).start()
	p := NewPool(nil)
	defer p.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := p.Get(context.Background(), s.config())
			if err == nil {
				_, err = h.Run(context.Background(), Cmd{Script: "true"})
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Accepted(); got != 1 {
		t.Fatalf("sshd accepted %d connections for 20 commands, want 1", got)
	}
	for k, n := range p.Connections() {
		if n != 1 {
			t.Errorf("%s: %d dials", k, n)
		}
	}
}

func TestConnectRetriesUntilSSHDAnswers(t *testing.T) {
	s := newSSHD(t)
	cfg := s.config()
	cfg.ConnectAttempts = 6
	go func() { time.Sleep(700 * time.Millisecond); s.start() }()
	h, err := Dial(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("dial while sshd starts: %v", err)
	}
	_ = h.Close()
}

func TestUnreachableHostFailsAfterAttemptsNamingHost(t *testing.T) {
	s := newSSHD(t) // never started: the port refuses
	cfg := s.config()
	cfg.ConnectAttempts = 2
	_, err := Dial(context.Background(), cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "loopback: connect 127.0.0.1:") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v", err)
	}
}

func TestJumpHostForwardsToTheTarget(t *testing.T) {
	jump := newSSHD(t).start()
	target := newSSHD(t).start()
	cfg := target.config()
	// One known_hosts for both, as a user's would be.
	kh := filepath.Join(t.TempDir(), "known_hosts")
	lines := fmt.Sprintf("[127.0.0.1]:%d %s[127.0.0.1]:%d %s", jump.Port, ssh.MarshalAuthorizedKey(jump.HostKey), target.Port, ssh.MarshalAuthorizedKey(target.HostKey))
	if err := os.WriteFile(kh, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.KnownHostsFile = kh
	// Both servers authorise the same client key.
	b, _ := os.ReadFile(filepath.Join(target.Dir, "authorized_keys"))
	if err := os.WriteFile(filepath.Join(jump.Dir, "authorized_keys"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.JumpHost = fmt.Sprintf("%s@127.0.0.1:%d", jump.User, jump.Port)
	h := dial(t, cfg, nil)
	if _, err := h.Run(context.Background(), Cmd{Script: "true"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(jump.Log(), fmt.Sprintf("127.0.0.1 port %d", target.Port)) && !strings.Contains(jump.Log(), "direct-tcpip") {
		t.Logf("jump log: %s", jump.Log())
	}
	if jump.Accepted() != 1 || target.Accepted() != 1 {
		t.Fatalf("logins: jump %d, target %d; want 1 each", jump.Accepted(), target.Accepted())
	}
}

func TestEncryptedKeyFileSaysToUseTheAgent(t *testing.T) {
	s := newSSHD(t)
	cfg := s.config()
	cfg.IdentityFiles = []string{writeKey(t, t.TempDir(), "enc", "passphrase")}
	_, err := Dial(context.Background(), cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "is encrypted: load it into ssh-agent") {
		t.Fatalf("err = %v", err)
	}
}

func TestAgentKeysAuthenticate(t *testing.T) {
	s := newSSHD(t).start()
	b, _ := os.ReadFile(s.KeyFile)
	raw, err := ssh.ParseRawPrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	kr := agent.NewKeyring()
	if err := kr.Add(agent.AddedKey{PrivateKey: raw}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _ = agent.ServeAgent(kr, c) }()
		}
	}()
	t.Setenv("SSH_AUTH_SOCK", sock)
	cfg := s.config()
	cfg.IdentityFiles, cfg.Agent = nil, true
	h := dial(t, cfg, nil)
	if _, err := h.Run(context.Background(), Cmd{Script: "true"}); err != nil {
		t.Fatal(err)
	}
}

func TestCancelledCommandReturnsPromptly(t *testing.T) {
	s := newSSHD(t).start()
	h := dial(t, s.config(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := h.Run(ctx, Cmd{Script: "sleep 30"})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
		t.Fatalf("err = %v after %s", err, time.Since(start))
	}
}

func TestShellQuoteSurvivesTheShell(t *testing.T) {
	s := newSSHD(t).start()
	h := dial(t, s.config(), nil)
	weird := `it's "quoted" $HOME ` + "`x`" + ` \n`
	res, err := h.Run(context.Background(), Cmd{Script: "printf '%s' " + shellQuote(weird)})
	if err != nil || res.Stdout != weird {
		t.Fatalf("got %q, %v", res.Stdout, err)
	}
}
