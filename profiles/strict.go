package profiles

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

var (
	profileType   = reflect.TypeOf(Profile{})
	secretRefType = reflect.TypeOf(SecretRef{})
)

// walker checks a YAML tree against the Go types before decoding, so that
// an unknown field, a wrong type or an inline secret is reported with its
// field path and line (yaml.v3's KnownFields gives neither the path nor
// every problem at once). It also records where each path is, for the
// validation messages.
type walker struct {
	owner    map[*yaml.Node]string
	file     string // the outermost file, for nodes without an owner
	pos      map[string]Problem
	problems []Problem
}

func (w *walker) fileOf(n *yaml.Node) string {
	if f, ok := w.owner[n]; ok {
		return f
	}
	return w.file
}

func (w *walker) add(n *yaml.Node, path, format string, args ...any) {
	w.problems = append(w.problems, Problem{File: w.fileOf(n), Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// locate returns the file and line of a field path, or of its nearest
// present ancestor when the field itself is absent.
func (w *walker) locate(path string) (string, int) {
	for p := path; ; {
		if at, ok := w.pos[p]; ok {
			return at.File, at.Line
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			if at, ok := w.pos[""]; ok {
				return at.File, at.Line
			}
			return w.file, 0
		}
		p = p[:i]
	}
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind == yaml.AliasNode {
		w.add(n, path, "YAML aliases are not supported in profiles; write the value out")
		return
	}
	if tagged(n) {
		w.add(n, path, "explicit YAML tags (%s) are not supported in profiles; write the value plainly (quote a string)", n.Tag)
		return
	}
	w.pos[path] = Problem{File: w.fileOf(n), Line: n.Line}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if isNull(n) {
		return
	}
	switch {
	case t == secretRefType:
		w.walkSecretRef(n, path)
	case t.Kind() == reflect.Struct:
		w.walkStruct(n, t, path)
	case t.Kind() == reflect.Map:
		w.walkMap(n, t, path)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.add(n, path, "want a list, got %s", describe(n))
			return
		}
		for i, c := range n.Content {
			w.walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	default:
		w.walkScalar(n, t, path)
	}
}

func (w *walker) walkStruct(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind != yaml.MappingNode {
		w.add(n, path, "want a mapping, got %s", describe(n))
		return
	}
	fields := yamlFields(t)
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if badKey(w, k, path) {
			continue
		}
		sub := join(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			w.add(k, sub, "duplicate key (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		ft, ok := fields[k.Value]
		if !ok {
			w.add(k, sub, "unknown field%s", suggest(k.Value, fields))
			continue
		}
		w.walk(v, ft, sub)
		// A field is reported at its key's line: for a block list or
		// mapping the value starts a line later.
		w.pos[sub] = Problem{File: w.fileOf(k), Line: k.Line}
	}
}

// walkMap checks a mapping of free keys (K3s options, sysctl names):
// plain unique keys, and values of the map's element type; an element of
// type any takes a scalar or a list of scalars, as config files do.
func (w *walker) walkMap(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind != yaml.MappingNode {
		w.add(n, path, "want a mapping, got %s", describe(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if badKey(w, k, path) {
			continue
		}
		sub := path + "." + k.Value
		if first, dup := seen[k.Value]; dup {
			w.add(k, sub, "duplicate key (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		if t.Elem().Kind() == reflect.Interface {
			w.walkLoose(v, sub, true)
		} else {
			w.walk(v, t.Elem(), sub)
		}
		w.pos[sub] = Problem{File: w.fileOf(k), Line: k.Line}
	}
}

// walkLoose checks a free value: a plain scalar, or (list) a list of them.
func (w *walker) walkLoose(n *yaml.Node, path string, list bool) {
	switch {
	case n.Kind == yaml.AliasNode:
		w.add(n, path, "YAML aliases are not supported in profiles; write the value out")
	case tagged(n):
		w.add(n, path, "explicit YAML tags (%s) are not supported in profiles; write the value plainly (quote a string)", n.Tag)
	case n.Kind == yaml.ScalarNode:
		if n.Tag == "!!int" && !decimalRE.MatchString(n.Value) {
			w.add(n, path, "%s: write integers in plain decimal (a leading 0 is octal in YAML 1.1, 0x and 0o are bases)", n.Value)
		}
		if isNull(n) {
			w.add(n, path, "want a value, got null")
		}
	case n.Kind == yaml.SequenceNode && list:
		for i, c := range n.Content {
			w.walkLoose(c, fmt.Sprintf("%s[%d]", path, i), false)
		}
	default:
		w.add(n, path, "want a value or a list of values, got %s", describe(n))
	}
	w.pos[path] = Problem{File: w.fileOf(n), Line: n.Line}
}

func (w *walker) walkSecretRef(n *yaml.Node, path string) {
	if n.Kind == yaml.ScalarNode {
		w.add(n, path, "inline secret values are not allowed; reference the secret with {env: VAR} or {file: PATH}")
		return
	}
	if n.Kind != yaml.MappingNode {
		w.add(n, path, "want {env: VAR} or {file: PATH}, got %s", describe(n))
		return
	}
	set := 0
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if badKey(w, k, path) {
			continue
		}
		sub := join(path, k.Value)
		w.pos[sub] = Problem{File: w.fileOf(k), Line: k.Line}
		switch k.Value {
		case "env", "file":
			if v.Kind != yaml.ScalarNode || v.Value == "" {
				w.add(v, sub, "want a non-empty name")
			}
			set++
		case "value", "secret", "token", "password", "data", "stringData":
			w.add(k, sub, "inline secret values are not allowed; reference the secret with {env: VAR} or {file: PATH}")
			return
		default:
			w.add(k, sub, "unknown field (a secret reference has env or file)")
			return
		}
	}
	if set != 1 {
		w.add(n, path, "a secret reference has exactly one of env or file")
	}
}

func (w *walker) walkScalar(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind != yaml.ScalarNode {
		w.add(n, path, "want %s, got %s", kindName(t), describe(n))
		return
	}
	switch t.Kind() {
	case reflect.String:
		if n.Tag == "!!bool" {
			// yes/true would silently become the string "true"; make the user quote it.
			w.add(n, path, "want a string, got %s (quote it if a string is meant)", describe(n))
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		switch {
		case n.Tag == "!!int" && !decimalRE.MatchString(n.Value):
			// YAML 1.1 reads 022 as octal 18, 0x16 as 22: say what is meant.
			w.add(n, path, "%s: write integers in plain decimal (a leading 0 is octal in YAML 1.1, 0x and 0o are bases)", n.Value)
		case n.Tag != "!!int":
			w.add(n, path, "want an integer, got %s", describe(n))
		default:
			if _, err := strconv.Atoi(n.Value); err != nil {
				w.add(n, path, "want an integer, got %s", describe(n))
			}
		}
	case reflect.Bool:
		if n.Tag != "!!bool" {
			w.add(n, path, "want true or false, got %s", describe(n))
		}
	}
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

var decimalRE = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)

// tagged: the node carries an explicit tag (!!binary, !custom), which
// changes what its text means.
func tagged(n *yaml.Node) bool { return n.Style&yaml.TaggedStyle != 0 }

// badKey reports a mapping key that is an alias, tagged, or not a plain
// scalar: keys name fields, nothing else.
func badKey(w *walker, k *yaml.Node, path string) bool {
	switch {
	case k.Kind == yaml.AliasNode:
		w.add(k, join(path, "*"+k.Value), "YAML aliases are not supported in profiles, as keys neither; write the key out")
	case tagged(k):
		w.add(k, join(path, k.Value), "explicit YAML tags (%s) are not supported in profiles", k.Tag)
	case k.Kind != yaml.ScalarNode:
		w.add(k, path, "a key must be a plain name, got %s", describe(k))
	default:
		return false
	}
	return true
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Bool:
		return "true or false"
	}
	return t.Kind().String()
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str":
			return strconv.Quote(n.Value)
		case "!!null":
			return "null"
		}
		return n.Value
	}
	return "an unsupported node"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlFields maps the YAML keys of a struct to their field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

// suggest names the closest known field, to catch typos.
func suggest(key string, fields map[string]reflect.Type) string {
	best, bestD := "", 3
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if d := distance(strings.ToLower(key), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return " (known: " + strings.Join(names, ", ") + ")"
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// distance is the Levenshtein distance of two short strings.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
