package remote

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/labctl/labctl/profiles"
)

// A secret shorter than four characters (a 3-letter sudo password) is
// hidden like any other.
func TestShortSecretsAreRedactedToo(t *testing.T) {
	r := &Redactor{}
	r.Add(profiles.NewSecret("pw9"))
	if got := r.Redact("sudo: incorrect password pw9 for ronald"); strings.Contains(got, "pw9") {
		t.Fatalf("short secret printed: %q", got)
	}
}

// --replace-host-key: the reinstalled machine's new key replaces the old
// line; without it the mismatch is refused and names the flag.
func TestReplaceHostKeySwapsTheStaleLine(t *testing.T) {
	s := newSSHD(t).start()
	other := writeKey(t, t.TempDir(), "other", "")
	pub, _ := os.ReadFile(other + ".pub")
	stale, _, _, _, _ := ssh.ParseAuthorizedKey(pub)
	cfg := s.config()
	cfg.KnownHostsFile = s.KnownHosts(stale)
	if _, err := Dial(context.Background(), cfg, nil); !errors.Is(err, ErrHostKeyMismatch) || !strings.Contains(err.Error(), "--replace-host-key") {
		t.Fatalf("without the flag: %v", err)
	}
	cfg.ReplaceHostKey = true
	h, err := Dial(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = h.Close()
	lines, _ := KnownHostsLines(cfg.KnownHostsFile, "["+cfg.Address+"]:"+strconv.Itoa(cfg.Port))
	if len(lines) != 1 || !strings.Contains(lines[0], strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.HostKey)))[:40]) {
		t.Fatalf("known_hosts after the replacement: %q", lines)
	}
}

// Download copies bytes as they are (a binary snapshot, larger than
// what Run keeps).
func TestDownloadCopiesBinaryFilesWhole(t *testing.T) {
	s := newSSHD(t).start()
	h := dial(t, s.config(), nil)
	data := bytes.Repeat([]byte{0, 1, 2, 255, '\n'}, 600_000)
	p := t.TempDir() + "/snap"
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	n, err := h.Download(context.Background(), p, &got, false)
	if err != nil || n != int64(len(data)) || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("downloaded %d bytes (%v), want %d", n, err, len(data))
	}
	if _, err := h.Download(context.Background(), p+".missing", &got, false); err == nil {
		t.Fatal("a missing file downloaded")
	}
}

// A host that accepts TCP and never speaks SSH: cancelling stops the
// handshake at once, not after the connect timeout.
func TestCancelStopsAHangingHandshakeAtOnce(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
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
			defer func() { _ = c.Close() }() // hold it open, say nothing
		}
	}()
	host, port, _ := net.SplitHostPort(l.Addr().String())
	p, _ := strconv.Atoi(port)
	key := writeKey(t, t.TempDir(), "id", "")
	// The connect timeout is far away: only the cancellation can end it.
	cfg := Config{Name: "mute", Address: host, Port: p, User: "root", IdentityFiles: []string{key}, KnownHostsFile: t.TempDir() + "/kh", AcceptNewHostKeys: true, ConnectTimeout: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := Dial(ctx, cfg, nil); done <- err }()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a cancelled dial still waits for a host that never speaks")
	}
}
