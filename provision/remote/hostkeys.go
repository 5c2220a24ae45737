package remote

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the known_hosts hash format is HMAC-SHA1
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/labctl/labctl/profiles"
)

// hostKeys checks server keys against a known_hosts file.
type hostKeys struct {
	file      string
	acceptNew bool
	// replace lets a changed key replace the host's old lines (a machine
	// reinstalled at the same address, named by the operator).
	replace bool
	check   ssh.HostKeyCallback
}

// knownHostsMu serialises appends to known_hosts files within a process.
var knownHostsMu sync.Mutex

func newHostKeys(file string, acceptNew bool) (*hostKeys, error) {
	if file == "" {
		return nil, fmt.Errorf("no known_hosts file: set ssh.knownHostsFile (labctl never skips host key checks)")
	}
	p, err := profiles.ExpandHome(file)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		if !acceptNew {
			return nil, fmt.Errorf("%w: %s does not exist; create it with the hosts' keys or accept new host keys explicitly", ErrHostKeyUnknown, p)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			return nil, err
		}
	}
	cb, err := knownhosts.New(p)
	if err != nil {
		return nil, fmt.Errorf("known_hosts %s: %w", p, err)
	}
	return &hostKeys{file: p, acceptNew: acceptNew, check: cb}, nil
}

// algorithms lists the key types known_hosts has for addr, so the server
// is asked for a key we can check (not an ECDSA key when we know its
// ed25519 one). Nil lets the library choose (unknown host).
func (k *hostKeys) algorithms(addr string) []string {
	err := k.check(addr, &net.TCPAddr{IP: net.IPv4zero}, probeKey{})
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) {
		return nil
	}
	var algos []string
	for _, w := range ke.Want {
		switch t := w.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			algos = append(algos, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			algos = append(algos, t)
		}
	}
	return algos
}

func (k *hostKeys) callback(name string) ssh.HostKeyCallback {
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := k.check(hostname, remote, key)
		var ke *knownhosts.KeyError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ke) && len(ke.Want) > 0 && k.replace:
			if _, err := ForgetHostKeys(k.file, []string{knownhosts.Normalize(hostname)}); err != nil {
				return fmt.Errorf("replace host key of %s: %w", name, err)
			}
			return k.record(hostname, key)
		case errors.As(err, &ke) && len(ke.Want) > 0:
			var known string
			for i, w := range ke.Want {
				if i > 0 {
					known += ", "
				}
				known += fmt.Sprintf("%s %s (%s:%d)", w.Key.Type(), ssh.FingerprintSHA256(w.Key), w.Filename, w.Line)
			}
			return fmt.Errorf("%w for %s (%s): it offers %s %s, known_hosts has %s; if the machine was reinstalled, say so: labctl rebuild <profile> %s --replace-host-key (or remove its old entry: ssh-keygen -R %s)",
				ErrHostKeyMismatch, name, hostname, key.Type(), ssh.FingerprintSHA256(key), known, name, knownhosts.Normalize(hostname))
		case errors.As(err, &ke):
			if !k.acceptNew {
				return fmt.Errorf("%w: %s (%s) offers %s %s, which is not in %s; check it and accept new host keys explicitly",
					ErrHostKeyUnknown, name, hostname, key.Type(), ssh.FingerprintSHA256(key), k.file)
			}
			return k.record(hostname, key)
		}
		return err
	}
}

func (k *hostKeys) record(hostname string, key ssh.PublicKey) error {
	knownHostsMu.Lock()
	defer knownHostsMu.Unlock()
	f, err := os.OpenFile(k.file, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("record host key: %w", err)
	}
	line := knownhosts.Line([]string{knownhosts.Normalize(hostname)}, key) + "\n"
	if _, err := f.WriteString(line); err != nil {
		_ = f.Close()
		return fmt.Errorf("record host key: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	// Later connections in this run must see the new line.
	cb, err := knownhosts.New(k.file)
	if err != nil {
		return err
	}
	k.check = cb
	return nil
}

// probeKey is a key no host has; checking it reveals the known ones.
type probeKey struct{}

func (probeKey) Type() string                        { return "labctl-probe" }
func (probeKey) Marshal() []byte                     { return []byte("labctl-probe") }
func (probeKey) Verify([]byte, *ssh.Signature) error { return errors.New("probe key") }

// ForgetHostKeys removes the known_hosts lines of hosts (addresses as
// knownhosts.Normalize writes them, e.g. "10.0.40.101" or "[h]:2222"),
// plain or hashed. A destroyed VM's successor has a new key, which would
// otherwise be refused as changed. It returns how many lines went.
func ForgetHostKeys(file string, hosts []string) (int, error) {
	p, err := profiles.ExpandHome(file)
	if err != nil {
		return 0, err
	}
	knownHostsMu.Lock()
	defer knownHostsMu.Unlock()
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	lines := strings.SplitAfter(string(data), "\n")
	var keep strings.Builder
	removed := 0
	for _, line := range lines {
		if matchesHost(line, hosts) {
			removed++
			continue
		}
		keep.WriteString(line)
	}
	if removed == 0 {
		return 0, nil
	}
	return removed, os.WriteFile(p, []byte(keep.String()), 0o600)
}

// KnownHostsLines returns the lines of file that hold keys for hosts
// (plain or hashed; markers and comments skipped).
func KnownHostsLines(file string, hosts ...string) ([]string, error) {
	p, err := profiles.ExpandHome(file)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if matchesHost(line, hosts) {
			if !strings.HasSuffix(line, "\n") {
				line += "\n"
			}
			out = append(out, line)
		}
	}
	return out, nil
}

func matchesHost(line string, hosts []string) bool {
	f := strings.Fields(line)
	if len(f) < 3 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], "@") {
		return false
	}
	for _, pattern := range strings.Split(f[0], ",") {
		for _, h := range hosts {
			if pattern == h || hashedMatch(pattern, h) {
				return true
			}
		}
	}
	return false
}

// hashedMatch checks a HashKnownHosts entry, |1|salt|hmac-sha1(host).
func hashedMatch(pattern, host string) bool {
	parts := strings.Split(pattern, "|")
	if len(parts) != 4 || parts[1] != "1" {
		return false
	}
	salt, err1 := base64.StdEncoding.DecodeString(parts[2])
	want, err2 := base64.StdEncoding.DecodeString(parts[3])
	if err1 != nil || err2 != nil {
		return false
	}
	mac := hmac.New(sha1.New, salt)
	mac.Write([]byte(host))
	return hmac.Equal(mac.Sum(nil), want)
}

// RecordHostKey writes key for host (as knownhosts.Normalize writes it)
// into file, which it creates if missing. A line with the same key means
// nothing to do. Another key of the same type is ErrHostKeyMismatch,
// unless replace says the old one is stale (its machine was replaced):
// then the host's lines give way to the new key. It reports whether the
// file changed.
func RecordHostKey(file, host string, key ssh.PublicKey, replace bool) (bool, error) {
	p, err := profiles.ExpandHome(file)
	if err != nil {
		return false, err
	}
	lines, err := KnownHostsLines(p, host)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if f[1] != key.Type() {
			continue
		}
		known, _, _, _, perr := ssh.ParseAuthorizedKey([]byte(strings.Join(f[1:], " ")))
		if perr == nil && string(known.Marshal()) == string(key.Marshal()) {
			return false, nil
		}
		if !replace {
			return false, fmt.Errorf("%w: %s has %s %s in %s, and now %s", ErrHostKeyMismatch, host, key.Type(), ssh.FingerprintSHA256(known), p, ssh.FingerprintSHA256(key))
		}
	}
	if len(lines) > 0 && replace {
		if _, err := ForgetHostKeys(p, []string{host}); err != nil {
			return false, err
		}
	}
	knownHostsMu.Lock()
	defer knownHostsMu.Unlock()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return false, err
	}
	f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return false, err
	}
	if _, err := f.WriteString(knownhosts.Line([]string{host}, key) + "\n"); err != nil {
		_ = f.Close()
		return false, err
	}
	return true, f.Close()
}
