package k3s

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/state"
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
	return readToken(filepath.Join(dir, profile, "cluster-token"))
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
	if tok, ok, err := readToken(p); ok || err != nil {
		return tok, false, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return tok, false, err
	}
	v := hex.EncodeToString(raw)
	// Written whole or not at all, and of two labctl runs racing, one
	// token wins; the other run reads it.
	created, err = state.CreateExclusive(p, []byte(v))
	if err != nil {
		return tok, false, fmt.Errorf("create cluster token: %w", err)
	}
	if !created {
		theirs, ok, err := readToken(p)
		if !ok && err == nil {
			err = fmt.Errorf("cluster token %s appeared and vanished again", p)
		}
		return theirs, false, err
	}
	return profiles.NewSecret(v), true, nil
}

// readToken reads a kept token; ok is false when there is none. A
// symbolic link there (dangling or not) is refused, never followed.
func readToken(p string) (profiles.Secret, bool, error) {
	var tok profiles.Secret
	if err := state.CheckRegular(p); err != nil {
		return tok, false, fmt.Errorf("cluster token: %w (or point spec.k3s.tokenRef at the token)", err)
	}
	b, err := os.ReadFile(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return tok, false, nil
	case err != nil:
		return tok, false, fmt.Errorf("read cluster token: %w", err)
	}
	st, err := os.Stat(p)
	if err != nil {
		return tok, false, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return tok, false, fmt.Errorf("cluster token %s is readable by others (mode %v): chmod 600 it", p, st.Mode().Perm())
	}
	if len(b) == 0 {
		return tok, false, fmt.Errorf("cluster token %s is empty", p)
	}
	return profiles.NewSecret(string(b)), true, nil
}
