package remote

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the known_hosts hash format
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
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
