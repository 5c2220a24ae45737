package kubeconfig

import (
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/labctl/labctl/internal/golden"
)

func renamed(t *testing.T) []byte {
	t.Helper()
	raw, err := os.ReadFile("testdata/k3s.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Rename(raw, "production", "https://10.0.40.101:6443")
	if err != nil {
		t.Fatal(err)
	}
	b, err := clientcmd.Write(*c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRenameNamesEverythingAfterTheProfileAndRewritesTheServer(t *testing.T) {
	golden.Assert(t, "testdata/renamed.golden.yaml", renamed(t))
}

func TestMergeReplacesOnlyTheProfilesEntriesAndIsIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	old, _ := os.ReadFile("testdata/existing.yaml")
	if err := os.WriteFile(path, old, 0o644); err != nil {
		t.Fatal(err)
	}
	add, err := clientcmd.Load(renamed(t))
	if err != nil {
		t.Fatal(err)
	}
	changed, err := Merge(path, add, false)
	if err != nil || !changed {
		t.Fatalf("first merge: changed=%v %v", changed, err)
	}
	got, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.CurrentContext != "home" {
		t.Errorf("current context switched to %q without asking", got.CurrentContext)
	}
	if got.AuthInfos["home"].Token != "home-token" || got.Clusters["home"].Server != "https://home.example:6443" {
		t.Error("another context was touched")
	}
	if got.Clusters["production"].Server != "https://10.0.40.101:6443" || got.AuthInfos["production"].Token != "" || string(got.AuthInfos["production"].ClientKeyData) != "KEY DATA" {
		t.Errorf("production entry not replaced: %+v %+v", got.Clusters["production"], got.AuthInfos["production"])
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600 (it holds a client key)", st.Mode().Perm())
	}
	changed, err = Merge(path, add, false)
	if err != nil || changed {
		t.Fatalf("second merge: changed=%v %v; want no change", changed, err)
	}
	if _, err := Merge(path, add, true); err != nil {
		t.Fatal(err)
	}
	if got, _ := clientcmd.LoadFromFile(path); got.CurrentContext != "production" {
		t.Errorf("switch: current context %q", got.CurrentContext)
	}
}

func TestMergeCreatesAMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".kube", "config")
	add, _ := clientcmd.Load(renamed(t))
	if _, err := Merge(path, add, false); err != nil {
		t.Fatal(err)
	}
	got, err := clientcmd.LoadFromFile(path)
	if err != nil || got.CurrentContext != "production" {
		t.Fatalf("%v %+v", err, got)
	}
}

// Remove takes out exactly the profile's context, cluster and user, clears
// the current context only if it was that one, and is a no-op the second
// time (and for a missing file).
func TestRemoveTakesOutOnlyTheProfilesEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	old, _ := os.ReadFile("testdata/existing.yaml")
	if err := os.WriteFile(path, old, 0o644); err != nil {
		t.Fatal(err)
	}
	add, err := clientcmd.Load(renamed(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Merge(path, add, true); err != nil {
		t.Fatal(err)
	}
	changed, err := Remove(path, "production")
	if err != nil || !changed {
		t.Fatalf("remove: changed=%v %v", changed, err)
	}
	got, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Contexts["production"] != nil || got.Clusters["production"] != nil || got.AuthInfos["production"] != nil {
		t.Error("production entries left")
	}
	if got.Contexts["home"] == nil || got.AuthInfos["home"].Token != "home-token" {
		t.Error("another context was touched")
	}
	if got.CurrentContext != "" {
		t.Errorf("current context %q, want cleared", got.CurrentContext)
	}
	if changed, err := Remove(path, "production"); err != nil || changed {
		t.Errorf("second remove: changed=%v %v", changed, err)
	}
	if changed, err := Remove(filepath.Join(t.TempDir(), "none"), "production"); err != nil || changed {
		t.Errorf("missing file: changed=%v %v", changed, err)
	}
}
