// Package state is labctl's local state of one profile, under
// ~/.local/state/labctl/<profile>/ (or $XDG_STATE_HOME/labctl): the
// cluster token and generated deploy key (written by their own packages),
// the etcd snapshots labctl took (snapshots/, 0600), and the journal of a
// node rebuild in progress (rebuild-<node>.json), which lets an
// interrupted rebuild continue where it stopped. Everything is written
// atomically and readable by the owner only.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/labctl/labctl/facts"
)

// Dir is one profile's state directory.
type Dir struct {
	// Root is the state root (k3s.StateDir()); Profile names the subdir.
	Root, Profile string
}

// Path is the profile's directory.
func (d Dir) Path() string { return filepath.Join(d.Root, d.Profile) }

// SnapshotPath is where a snapshot of that name is kept locally.
func (d Dir) SnapshotPath(name string) string {
	return filepath.Join(d.Path(), "snapshots", name)
}

func (d Dir) journal(node string) string {
	return filepath.Join(d.Path(), "rebuild-"+node+".json")
}

// Rebuild reads the journal of node's rebuild, if one is in progress.
func (d Dir) Rebuild(node string) (facts.Rebuild, bool, error) {
	var r facts.Rebuild
	b, err := os.ReadFile(d.journal(node))
	if errors.Is(err, os.ErrNotExist) {
		return r, false, nil
	}
	if err != nil {
		return r, false, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, false, fmt.Errorf("rebuild journal %s: %w (remove it to start the rebuild over)", d.journal(node), err)
	}
	return r, true, nil
}

// SaveRebuild writes the journal.
func (d Dir) SaveRebuild(r facts.Rebuild) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return WriteFile(d.journal(r.Node), append(b, '\n'))
}

// ForgetRebuild removes node's journal: the rebuild is over.
func (d Dir) ForgetRebuild(node string) error {
	err := os.Remove(d.journal(node))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// WriteFile replaces path atomically with data, mode 0600, creating its
// directory (0700): a temporary file in the same directory, synced, then
// renamed over the target, so a crash leaves the old file or the new one,
// never half of one. A symlink at path is replaced, not followed.
func WriteFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ErrSymlink says a state file is a symbolic link: labctl keeps its state
// in regular files and follows no link there.
var ErrSymlink = errors.New("is a symbolic link")

// CheckRegular refuses a path that is a symbolic link (dangling or not);
// a missing path is fine.
func CheckRegular(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("%s %w: labctl keeps its state in regular files; remove it", path, ErrSymlink)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	return nil
}

// CreateExclusive writes data to path (0600) only if path does not exist
// yet, atomically: the whole file appears at once or not at all, and of
// two runs racing, one wins. It reports whether this call created it.
func CreateExclusive(path string, data []byte) (bool, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return false, err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return false, err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	// link(2) fails when path exists, also as a dangling symlink.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}
