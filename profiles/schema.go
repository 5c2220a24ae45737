package profiles

import (
	"encoding/json"
	"reflect"
	"strings"
)

// SchemaID is where editors find the profile schema.
const SchemaID = "https://raw.githubusercontent.com/labctl/labctl/main/profiles/profile.schema.json"

// Schema returns the JSON Schema (2020-12) of a profile file, derived from
// the Go types so it cannot drift from what the loader accepts. Enums and
// patterns come from `enum` and `pattern` struct tags. Only the header is
// required: a file that extends another profile may give any part of spec.
func Schema() ([]byte, error) {
	s := schemaOf(profileType)
	s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	s["$id"] = SchemaID
	s["title"] = "labctl profile"
	s["required"] = []string{"apiVersion", "kind", "metadata"}
	props := s["properties"].(map[string]any)
	props["metadata"].(map[string]any)["required"] = []string{"name"}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func schemaOf(t reflect.Type) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == secretRefType:
		return map[string]any{
			"type":                 "object",
			"description":          "a reference to a secret, never its value",
			"additionalProperties": false,
			"properties": map[string]any{
				"env":  map[string]any{"type": "string", "description": "environment variable"},
				"file": map[string]any{"type": "string", "description": "file path (~ expanded)"},
			},
			"oneOf": []any{
				map[string]any{"required": []string{"env"}},
				map[string]any{"required": []string{"file"}},
			},
		}
	case t.Kind() == reflect.Struct:
		props := map[string]any{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			p := schemaOf(f.Type)
			if f.Type.Kind() == reflect.Pointer && p["type"] == "object" {
				// An optional section: null in a profile drops the one it
				// extends (local's hosts: null).
				p["type"] = []string{"object", "null"}
			}
			if e := f.Tag.Get("enum"); e != "" {
				p["enum"] = strings.Split(e, ",")
			}
			if pat := f.Tag.Get("pattern"); pat != "" {
				p["pattern"] = pat
			}
			props[name] = p
		}
		return map[string]any{"type": "object", "additionalProperties": false, "properties": props}
	case t.Kind() == reflect.Map && t.Elem().Kind() == reflect.Interface:
		value := []any{map[string]any{"type": []string{"string", "number", "boolean"}}}
		return map[string]any{"type": "object", "additionalProperties": map[string]any{"anyOf": append(value,
			map[string]any{"type": "array", "items": value[0]})}}
	case t.Kind() == reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem())}
	case t.Kind() == reflect.Slice:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem())}
	case t.Kind() == reflect.Bool:
		return map[string]any{"type": "boolean"}
	case t.Kind() == reflect.Int:
		return map[string]any{"type": "integer"}
	}
	return map[string]any{"type": "string"}
}
