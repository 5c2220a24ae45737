package state

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestCreateExclusiveOnceOwnerOnlyNoTemporaryFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "profile")
	p := filepath.Join(dir, "cluster-token")
	created, err := CreateExclusive(p, []byte("first"))
	if err != nil || !created {
		t.Fatalf("first create: %v %v", created, err)
	}
	created, err = CreateExclusive(p, []byte("second"))
	if err != nil || created {
		t.Fatalf("second create: %v %v", created, err)
	}
	b, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(b) != "first" || fi.Mode().Perm() != 0o600 {
		t.Errorf("token %q mode %v, want the first value, 0600", b, fi.Mode().Perm())
	}
	if got := names(t, dir); !slices.Equal(got, []string{"cluster-token"}) {
		t.Errorf("directory holds %v", got)
	}
	// A dangling symlink counts as existing: never followed.
	l := filepath.Join(dir, "link")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), l); err != nil {
		t.Fatal(err)
	}
	if created, err := CreateExclusive(l, []byte("x")); err != nil || created {
		t.Errorf("create over a dangling symlink: %v %v", created, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "nowhere")); !os.IsNotExist(err) {
		t.Errorf("the symlink was followed: %v", err)
	}
}

func TestWriteFileReplacesWithoutTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "rebuild-node-2.json")
	for _, v := range []string{"one", "two"} {
		if err := WriteFile(p, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(b) != "two" || fi.Mode().Perm() != 0o600 {
		t.Errorf("file %q mode %v", b, fi.Mode().Perm())
	}
	if got := names(t, dir); !slices.Equal(got, []string{"rebuild-node-2.json"}) {
		t.Errorf("directory holds %v", got)
	}
}

// A run killed between creating its named temporary file and renaming it
// (labctl before unnamed files, or a file system without them) left
// ".<name>.<random>": the next write removes it once it is old enough
// not to be another run's, and keeps younger ones and other files.
func TestStaleTemporaryFilesAreSwept(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "cluster-token")
	old, young, other := filepath.Join(dir, ".cluster-token.123"), filepath.Join(dir, ".cluster-token.456"), filepath.Join(dir, ".flux-deploy-key.789")
	for _, f := range []string{old, young, other} {
		if err := os.WriteFile(f, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * staleAfter)
	for _, f := range []string{old, other} {
		if err := os.Chtimes(f, past, past); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := CreateExclusive(p, []byte("token")); err != nil {
		t.Fatal(err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{".cluster-token.456", ".flux-deploy-key.789", "cluster-token"}) {
		t.Errorf("directory holds %v", got)
	}
}

// The named way (file systems without unnamed files) gives the same
// results.
func TestNamedTemporaryFilesWhereNoUnnamedOnes(t *testing.T) {
	useUnnamed = false
	defer func() { useUnnamed = true }()
	t.Run("CreateExclusive", TestCreateExclusiveOnceOwnerOnlyNoTemporaryFiles)
	t.Run("WriteFile", TestWriteFileReplacesWithoutTemporaryFiles)
	t.Run("Sweep", TestStaleTemporaryFilesAreSwept)
}
