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
	"sort"
	"strconv"
	"strings"
	"time"

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
// directory (0700): the data is written to an unnamed file in the same
// directory (a named temporary one where the file system has no unnamed
// files), synced, named and renamed over the target, so a crash leaves
// the old file or the new one, never half of one, and a run killed while
// writing leaves no temporary file. A symlink at path is replaced, not
// followed.
func WriteFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	sweepStale(path)
	done, err := viaUnnamed(dir, data, func(f *os.File) error {
		tmp := filepath.Join(dir, tempPrefix(path)+strconv.FormatInt(time.Now().UnixNano(), 36))
		if err := linkUnnamed(f, tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			_ = os.Remove(tmp)
			return err
		}
		return nil
	})
	if done {
		return err
	}
	tmp, err := namedTemp(path, data)
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp) }()
	return os.Rename(tmp, path)
}

// useUnnamed is off in tests of the named way only.
var useUnnamed = true

// viaUnnamed writes data to an unnamed file in dir and has name give it
// its name. done is false where unnamed files cannot be used (no
// O_TMPFILE, or no /proc to link through): the caller then takes a named
// temporary file.
func viaUnnamed(dir string, data []byte, name func(*os.File) error) (done bool, err error) {
	if !useUnnamed {
		return false, nil
	}
	f, ok := openUnnamed(dir)
	if !ok {
		return false, nil
	}
	err = fill(f, data)
	if err == nil {
		err = name(f)
	}
	_ = f.Close()
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return true, err
}

// namedTemp writes data to a new temporary file beside path (the named
// way: a killed run leaves it, for sweepStale) and returns its name.
func namedTemp(path string, data []byte) (string, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), tempPrefix(path)+"*")
	if err != nil {
		return "", err
	}
	err = fill(tmp, data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return "", err
	}
	return tmp.Name(), nil
}

// fill makes f owner-only and writes and syncs data.
func fill(f *os.File, data []byte) error {
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Sync()
}

// tempPrefix is the name of path's temporary files: ".<name>.".
func tempPrefix(path string) string { return "." + filepath.Base(path) + "." }

// staleAfter is the age from which a temporary file of labctl's is left
// over from a run that was killed (writing one takes milliseconds).
const staleAfter = time.Minute

// sweepStale removes path's temporary files that a killed run left (the
// named way, or labctl before unnamed files): regular files named
// ".<name>.*" older than staleAfter. Younger ones may be another run's.
func sweepStale(path string) {
	dir, prefix := filepath.Dir(path), tempPrefix(path)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), prefix) || !e.Type().IsRegular() {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleAfter {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
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
// two runs racing, one wins. It reports whether this call created it. A
// run killed while writing leaves no temporary file (see WriteFile).
func CreateExclusive(path string, data []byte) (bool, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	sweepStale(path)
	done, err := viaUnnamed(dir, data, func(f *os.File) error { return linkUnnamed(f, path) })
	if !done {
		tmp, terr := namedTemp(path, data)
		if terr != nil {
			return false, terr
		}
		defer func() { _ = os.Remove(tmp) }()
		// link(2) fails when path exists, also as a dangling symlink.
		err = os.Link(tmp, path)
	}
	if errors.Is(err, os.ErrExist) {
		return false, nil
	}
	return err == nil, err
}

// SnapshotMeta is what local state knows of a snapshot it keeps, in
// <snapshot>.json beside it.
type SnapshotMeta struct {
	facts.Snapshot
	Reason string `json:"reason"`
	// Token says where the cluster token the snapshot needs is: a
	// restore onto new hosts needs it (K3s encrypts its bootstrap data
	// with it).
	Token string `json:"token"`
}

// RecordSnapshot writes the meta file of a snapshot kept locally.
func (d Dir) RecordSnapshot(s facts.Snapshot, reason, token string, taken time.Time) error {
	s.Taken = taken.UTC()
	b, err := json.MarshalIndent(SnapshotMeta{Snapshot: s, Reason: reason, Token: token}, "", "  ")
	if err != nil {
		return err
	}
	return WriteFile(s.Path+".json", append(b, '\n'))
}

// Snapshots lists the snapshots kept locally, newest first.
func (d Dir) Snapshots() ([]SnapshotMeta, error) {
	dir := filepath.Join(d.Path(), "snapshots")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []SnapshotMeta
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".json") || strings.HasPrefix(name, ".") || e.IsDir() {
			continue
		}
		p := filepath.Join(dir, name)
		m := SnapshotMeta{Snapshot: facts.Snapshot{Name: name, Path: p}}
		if b, err := os.ReadFile(p + ".json"); err == nil {
			_ = json.Unmarshal(b, &m)
			m.Path = p
		}
		if st, err := os.Stat(p); err == nil {
			m.Size = st.Size()
			if m.Taken.IsZero() {
				m.Taken = st.ModTime().UTC()
			}
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Taken.After(out[j].Taken) })
	return out, nil
}

// ForgetSnapshot removes a local snapshot and its meta file.
func (d Dir) ForgetSnapshot(name string) error {
	p := d.SnapshotPath(name)
	for _, f := range []string{p, p + ".json"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// Restore reads the journal of a restore in progress.
func (d Dir) Restore() (facts.Restore, bool, error) {
	var r facts.Restore
	b, err := os.ReadFile(filepath.Join(d.Path(), "restore.json"))
	if errors.Is(err, os.ErrNotExist) {
		return r, false, nil
	}
	if err != nil {
		return r, false, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, false, fmt.Errorf("restore journal: %w (remove it to start the restore over)", err)
	}
	return r, true, nil
}

// SaveRestore writes the restore journal.
func (d Dir) SaveRestore(r facts.Restore) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return WriteFile(filepath.Join(d.Path(), "restore.json"), append(b, '\n'))
}

// ForgetRestore removes the restore journal.
func (d Dir) ForgetRestore() error {
	err := os.Remove(filepath.Join(d.Path(), "restore.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
