// Package golden compares test output with files under testdata/; run the
// tests with -update to rewrite the files after an intended change.
package golden

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// Assert fails the test when got differs from the golden file at path.
func Assert(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test -update to create it): %v", err)
	}
	if string(want) != string(got) {
		t.Errorf("output differs from %s (go test -update rewrites it after an intended change)\n--- want\n%s\n--- got\n%s", path, want, got)
	}
}
