package k3s

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/labctl/labctl/profiles"
)

// StateDir is where labctl keeps per-profile state: $XDG_STATE_HOME/labctl
// or ~/.local/state/labctl.
func StateDir() (string, error) {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "labctl"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".local", "state", "labctl"), nil
}

// ExistingToken returns the token ClusterToken would, without generating
// one: ok is false when the profile has no token yet.
func ExistingToken(dir, profile string, ref *profiles.SecretRef, lookup func(string) (string, bool)) (tok profiles.Secret, ok bool, err error) {
	if ref != nil {
		tok, _, err = ClusterToken(dir, profile, ref, lookup)
		return tok, err == nil, err
	}
	if _, err := os.Lstat(filepath.Join(dir, profile, "cluster-token")); errors.Is(err, os.ErrNotExist) {
		return tok, false, nil
	}
	tok, _, err = ClusterToken(dir, profile, nil, lookup)
	return tok, err == nil, err
}

// ClusterToken returns the profile's cluster token: the one its tokenRef
// points at, else the one kept in state (dir/<profile>/cluster-token,
// 0600), generated on first use. created reports a new token.
func ClusterToken(dir, profile string, ref *profiles.SecretRef, lookup func(string) (string, bool)) (tok profiles.Secret, created bool, err error) {
	if ref != nil {
		tok, err = ref.Resolve(lookup)
		if err != nil {
			return tok, false, fmt.Errorf("cluster token (spec.k3s.tokenRef): %w", err)
		}
		return tok, false, nil
	}
	p := filepath.Join(dir, profile, "cluster-token")
	b, err := os.ReadFile(p)
	switch {
	case err == nil:
		st, serr := os.Stat(p)
		if serr != nil {
			return tok, false, serr
		}
		if st.Mode().Perm()&0o077 != 0 {
			return tok, false, fmt.Errorf("cluster token %s is readable by others (mode %v): chmod 600 it", p, st.Mode().Perm())
		}
		if len(b) == 0 {
			return tok, false, fmt.Errorf("cluster token %s is empty", p)
		}
		return profiles.NewSecret(string(b)), false, nil
	case !errors.Is(err, os.ErrNotExist):
		return tok, false, fmt.Errorf("read cluster token: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return tok, false, err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return tok, false, err
	}
	// O_EXCL: two labctl runs racing must not end up with two tokens.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return ClusterToken(dir, profile, nil, lookup)
	}
	if err != nil {
		return tok, false, fmt.Errorf("create cluster token: %w", err)
	}
	v := hex.EncodeToString(raw)
	if _, err := f.WriteString(v); err != nil {
		_ = f.Close()
		_ = os.Remove(p)
		return tok, false, err
	}
	if err := f.Close(); err != nil {
		return tok, false, err
	}
	return profiles.NewSecret(v), true, nil
}
