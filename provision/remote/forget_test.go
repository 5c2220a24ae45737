package remote

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // the known_hosts hash format
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func TestForgetHostKeysRemovesPlainAndHashedLinesOfThoseHostsOnly(t *testing.T) {
	salt := []byte("0123456789abcdefghij")
	mac := hmac.New(sha1.New, salt)
	mac.Write([]byte("10.0.40.102"))
	hashed := "|1|" + base64.StdEncoding.EncodeToString(salt) + "|" + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	key := " ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake\n"
	text := "10.0.40.101" + key +
		hashed + key +
		"[10.0.40.103]:2222" + key +
		"10.0.40.1,10.0.40.104" + key +
		"# 10.0.40.101 a comment\n" +
		"10.0.40.101" + " ecdsa-sha2-nistp256 AAAAE2VjZHNh\n"
	p := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := ForgetHostKeys(p, []string{"10.0.40.101", "10.0.40.102", "[10.0.40.103]:2222"})
	if err != nil || n != 4 {
		t.Fatalf("removed %d, %v; want 4", n, err)
	}
	got, _ := os.ReadFile(p)
	if want := "10.0.40.1,10.0.40.104" + key + "# 10.0.40.101 a comment\n"; string(got) != want {
		t.Errorf("left:\n%s\nwant:\n%s", got, want)
	}
	if n, err := ForgetHostKeys(filepath.Join(t.TempDir(), "none"), []string{"x"}); n != 0 || err != nil {
		t.Errorf("missing file: %d, %v", n, err)
	}
}

func TestRecordHostKeyAddsKeepsRefusesOrReplaces(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "known_hosts")
	k1, _ := ssh.ParsePublicKey(mustKey(t))
	k2, _ := ssh.ParsePublicKey(mustKey(t))
	if changed, err := RecordHostKey(p, "10.0.40.101", k1, false); !changed || err != nil {
		t.Fatalf("new file: %v %v", changed, err)
	}
	if changed, err := RecordHostKey(p, "10.0.40.101", k1, false); changed || err != nil {
		t.Errorf("same key: %v %v", changed, err)
	}
	if _, err := RecordHostKey(p, "10.0.40.101", k2, false); !errors.Is(err, ErrHostKeyMismatch) || !strings.Contains(err.Error(), ssh.FingerprintSHA256(k1)) || !strings.Contains(err.Error(), ssh.FingerprintSHA256(k2)) {
		t.Errorf("another key: %v", err)
	}
	if changed, err := RecordHostKey(p, "10.0.40.101", k2, true); !changed || err != nil {
		t.Fatalf("replace: %v %v", changed, err)
	}
	got, _ := os.ReadFile(p)
	if want := knownhosts.Line([]string{"10.0.40.101"}, k2) + "\n"; string(got) != want {
		t.Errorf("file:\n%s\nwant:\n%s", got, want)
	}
}

func mustKey(t *testing.T) []byte {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ssh.NewPublicKey(pub)
	return k.Marshal()
}
