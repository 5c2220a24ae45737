package profiles

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzLoad feeds arbitrary bytes to the loader. It must never panic; a
// failure must be an *InvalidError; and whatever loads must print (as
// `profiles show` does) to YAML that loads again to the same profile.
// The seeds (embedded profiles, every invalid fixture) run in plain
// `go test`; `go test -fuzz FuzzLoad ./profiles` explores further.
func FuzzLoad(f *testing.F) {
	for _, n := range EmbeddedNames() {
		b, _ := EmbeddedSource(n)
		f.Add(b)
	}
	files, _ := filepath.Glob("testdata/invalid/*.yaml")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Loader{}.LoadBytes("fuzz.yaml", data)
		if err != nil {
			var inv *InvalidError
			if !errors.As(err, &inv) || len(inv.Problems) == 0 {
				t.Fatalf("error is not a located InvalidError: %T %v", err, err)
			}
			return
		}
		out, err := yaml.Marshal(l.Profile)
		if err != nil {
			t.Fatalf("marshal loaded profile: %v", err)
		}
		again, err := Loader{}.LoadBytes("fuzz-shown.yaml", out)
		if err != nil {
			t.Fatalf("shown profile does not load: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(l.Profile, again.Profile) {
			t.Fatalf("round trip changed the profile:\n%s", out)
		}
	})
}
