package kubeconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A symlinked ~/.kube/config stays a link: the merge writes its target,
// as kubectl does.
func TestMergeWritesThroughASymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "dotfiles", "kubeconfig")
	if err := os.MkdirAll(filepath.Dir(real), 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, ".kube", "config")
	if err := os.MkdirAll(filepath.Dir(link), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../dotfiles/kubeconfig", link); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("testdata/k3s.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Rename(raw, "production", "https://10.0.40.101:6443")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Merge(link, cfg, false); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", fi.Mode(), err)
	}
	if b, err := os.ReadFile(real); err != nil || !strings.Contains(string(b), "production") {
		t.Fatalf("target not written: %v", err)
	}
}

// Without HOME and KUBECONFIG there is no default kubeconfig, rather
// than ./.kube/config in the working directory.
func TestNoHomeMeansNoDefaultKubeconfig(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	t.Setenv("HOME", "")
	if p, err := DefaultPath(); err == nil {
		t.Fatalf("default kubeconfig %q without a home", p)
	}
}

// Whether the kubeconfig can be written is known before the first
// change.
func TestCheckWritableBeforeAnythingChanges(t *testing.T) {
	dir := t.TempDir()
	if err := CheckWritable(filepath.Join(dir, "new", "deeper", "config")); err != nil {
		t.Errorf("a new file in a writable tree: %v", err)
	}
	// A directory that is a file cannot hold the kubeconfig, for root
	// too.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckWritable(filepath.Join(file, "config")); err == nil {
		t.Error("a kubeconfig under a regular file reported writable")
	}
}
