package profiles

import (
	"bytes"
	"os"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

func compiledSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	b, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(SchemaID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(SchemaID)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// yamlToJSONValue decodes YAML into the generic form the validator takes.
func yamlToJSONValue(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSchemaAcceptsEmbeddedProfilesAndRejectsWhatTheLoaderRejects(t *testing.T) {
	s := compiledSchema(t)
	for _, n := range EmbeddedNames() {
		b, _ := EmbeddedSource(n)
		if err := s.Validate(yamlToJSONValue(t, b)); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	for _, f := range []string{"testdata/invalid/unknown-field.yaml", "testdata/invalid/inline-secret.yaml", "testdata/invalid/inline-secret-value.yaml", "testdata/invalid/k3s-version.yaml", "testdata/invalid/wrong-type.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(yamlToJSONValue(t, b)); err == nil {
			t.Errorf("%s: schema accepted what the loader rejects", f)
		}
	}
}
