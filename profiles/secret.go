package profiles

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// SecretRef points at a secret without holding it: exactly one of Env (an
// environment variable) or File (a path, ~ expanded) is set. Inline values
// are rejected when the profile is loaded.
type SecretRef struct {
	Env  string `yaml:"env,omitempty" json:"env,omitempty"`
	File string `yaml:"file,omitempty" json:"file,omitempty"`
}

// IsZero reports whether the reference is empty.
func (r SecretRef) IsZero() bool { return r.Env == "" && r.File == "" }

// String says where the secret lives, never what it is.
func (r SecretRef) String() string {
	switch {
	case r.Env != "":
		return "env:" + r.Env
	case r.File != "":
		return "file:" + r.File
	}
	return "(none)"
}

// ErrSecretMissing is returned by Resolve when the variable is unset or
// empty, or the file is missing.
var ErrSecretMissing = errors.New("secret not found")

// Resolve reads the secret. lookup is os.LookupEnv in production code.
func (r SecretRef) Resolve(lookup func(string) (string, bool)) (Secret, error) {
	switch {
	case r.Env != "":
		v, ok := lookup(r.Env)
		if !ok || v == "" {
			return Secret{}, fmt.Errorf("environment variable %s: %w (export it, or point the profile at a file)", r.Env, ErrSecretMissing)
		}
		return Secret{v: v}, nil
	case r.File != "":
		p, err := ExpandHome(r.File)
		if err != nil {
			return Secret{}, err
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			return Secret{}, fmt.Errorf("file %s: %w", p, ErrSecretMissing)
		}
		if err != nil {
			return Secret{}, fmt.Errorf("read secret: %w", err)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return Secret{}, fmt.Errorf("file %s is empty: %w", p, ErrSecretMissing)
		}
		return Secret{v: v}, nil
	}
	return Secret{}, fmt.Errorf("empty secret reference: %w", ErrSecretMissing)
}

// Secret is a resolved secret value. Every way of printing it (fmt verbs,
// JSON, slog) yields a redaction marker; only Reveal returns the value.
type Secret struct{ v string }

const redacted = "[redacted]"

// NewSecret wraps a value, e.g. a generated token.
func NewSecret(v string) Secret { return Secret{v: v} }

// Reveal returns the value, for the one place that must send it.
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether no value is held.
func (s Secret) IsZero() bool { return s.v == "" }

func (s Secret) String() string               { return redacted }
func (s Secret) GoString() string             { return redacted }
func (s Secret) Format(f fmt.State, _ rune)   { _, _ = f.Write([]byte(redacted)) }
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
func (s Secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (s Secret) MarshalYAML() (any, error)    { return redacted, nil }

// ExpandHome turns a leading ~/ into the user's home directory.
func ExpandHome(p string) (string, error) {
	if p != "~" && !strings.HasPrefix(p, "~/") {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("expand %s: %w", p, err)
	}
	return filepath.Join(home, strings.TrimPrefix(p, "~")), nil
}
