package profiles

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

//go:embed embedded/*.yaml
var embedded embed.FS

// maxExtends bounds an extends chain; deeper is almost surely a cycle.
const maxExtends = 8

// Loader finds profiles by name among the embedded defaults and a user
// profiles directory, or reads them from explicit files.
type Loader struct {
	// Dir holds user profiles as <name>.yaml. A user profile with the name
	// of an embedded one shadows it. Empty means no directory.
	Dir string
}

// Entry is a profile that List found.
type Entry struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Source is "embedded" or the file's path.
	Source string `json:"source"`
	// Shadows is true when a user file hides an embedded profile.
	Shadows bool `json:"shadows,omitempty"`
}

// Loaded is a validated profile with the files it came from.
type Loaded struct {
	Profile
	// Sources lists the files merged into it, the innermost base first.
	Sources []string
}

// EmbeddedNames lists the embedded default profiles.
func EmbeddedNames() []string {
	ents, _ := fs.ReadDir(embedded, "embedded")
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	sort.Strings(names)
	return names
}

// EmbeddedSource returns the text of an embedded profile.
func EmbeddedSource(name string) ([]byte, bool) {
	b, err := embedded.ReadFile("embedded/" + name + ".yaml")
	return b, err == nil
}

// List returns every profile the loader can find by name, sorted.
func (l Loader) List() ([]Entry, error) {
	byName := map[string]Entry{}
	for _, n := range EmbeddedNames() {
		b, _ := EmbeddedSource(n)
		byName[n] = Entry{Name: n, Description: peekDescription(b), Source: "embedded"}
	}
	if l.Dir != "" {
		files, err := filepath.Glob(filepath.Join(l.Dir, "*.yaml"))
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", l.Dir, err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("list profiles: %w", err)
			}
			n := strings.TrimSuffix(filepath.Base(f), ".yaml")
			_, shadows := byName[n]
			byName[n] = Entry{Name: n, Description: peekDescription(b), Source: f, Shadows: shadows}
		}
	}
	out := make([]Entry, 0, len(byName))
	for _, e := range byName {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func peekDescription(b []byte) string {
	var head struct {
		Metadata Metadata `yaml:"metadata"`
	}
	_ = yaml.Unmarshal(b, &head)
	return head.Metadata.Description
}

// Load finds the profile by name (user directory first, then embedded),
// resolves its extends chain, and validates it.
func (l Loader) Load(name string) (*Loaded, error) {
	file, data, err := l.find(name, false)
	if err != nil {
		return nil, err
	}
	return l.load(name, file, data)
}

// LoadFile reads a profile from an explicit path (at most
// MaxProfileSize bytes of it: a larger file is refused unread).
func (l Loader) LoadFile(path string) (*Loaded, error) {
	data, err := readCapped(path)
	if err != nil {
		return nil, fmt.Errorf("read profile: %w", err)
	}
	return l.load(path, path, data)
}

// readCapped reads a file, but no more than one byte past the cap.
func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, MaxProfileSize+1))
}

// LoadBytes loads a profile from memory; file names it in messages.
func (l Loader) LoadBytes(file string, data []byte) (*Loaded, error) {
	return l.load(file, file, data)
}

// ErrNotFound is returned when no profile has the requested name.
var ErrNotFound = errors.New("profile not found")

// find returns the display name and text of a profile. embeddedOnly is set
// when a user profile extends the embedded profile of its own name.
func (l Loader) find(name string, embeddedOnly bool) (string, []byte, error) {
	if !validName.MatchString(name) {
		return "", nil, fmt.Errorf("profile name %q: want lower-case letters, digits and dashes", name)
	}
	if l.Dir != "" && !embeddedOnly {
		p := filepath.Join(l.Dir, name+".yaml")
		b, err := readCapped(p)
		if err == nil {
			return p, b, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", nil, fmt.Errorf("read profile: %w", err)
		}
	}
	if b, ok := EmbeddedSource(name); ok {
		return "embedded:" + name + ".yaml", b, nil
	}
	where := "embedded: " + strings.Join(EmbeddedNames(), ", ")
	if l.Dir != "" {
		where += "; directory " + l.Dir
	}
	return "", nil, fmt.Errorf("%w: %q (%s)", ErrNotFound, name, where)
}

// layer is one parsed file of an extends chain.
type layer struct {
	file string
	root *yaml.Node // the document's top mapping
}

// MaxProfileSize caps a profile file: a profile is a page of YAML, and a
// huge one is a mistake (or an attack) that must not cost minutes and
// gigabytes.
const MaxProfileSize = 1 << 20

// MaxProblems caps the problems reported for one profile.
const MaxProblems = 100

func (l Loader) load(name, file string, data []byte) (*Loaded, error) {
	l2, err := l.loadChain(name, file, data)
	var inv *InvalidError
	if errors.As(err, &inv) && len(inv.Problems) > MaxProblems {
		n := len(inv.Problems)
		inv.Problems = append(inv.Problems[:MaxProblems:MaxProblems], Problem{File: inv.Problems[0].File, Msg: fmt.Sprintf("and %d more problems (only the first %d are listed)", n-MaxProblems, MaxProblems)})
	}
	return l2, err
}

func (l Loader) loadChain(name, file string, data []byte) (*Loaded, error) {
	var layers []layer
	seen := map[string]bool{}
	for {
		root, probs := parse(file, data)
		// Merging layers folds a key given twice into one: found first.
		probs = append(probs, duplicateKeys(file, root, "")...)
		if len(probs) > 0 {
			return nil, &InvalidError{Name: name, Problems: probs}
		}
		layers = append([]layer{{file: file, root: root}}, layers...)
		base, line := scalarAt(root, "extends")
		if base == "" {
			break
		}
		if len(layers) > maxExtends || seen[file] {
			return nil, &InvalidError{Name: name, Problems: []Problem{{File: file, Line: line, Path: "extends", Msg: "extends chain loops or is deeper than " + strconv.Itoa(maxExtends)}}}
		}
		seen[file] = true
		own, _ := scalarAt(root, "metadata", "name")
		var err error
		file, data, err = l.find(base, own == base || strings.HasPrefix(file, "embedded:"))
		if err != nil {
			return nil, &InvalidError{Name: name, Problems: []Problem{{File: layers[0].file, Line: line, Path: "extends", Msg: err.Error()}}}
		}
	}

	owner := map[*yaml.Node]string{}
	for _, ly := range layers {
		markOwner(ly.root, ly.file, owner)
	}
	merged := layers[0].root
	for _, ly := range layers[1:] {
		merged = mergeNodes(merged, ly.root, owner)
	}
	top := layers[len(layers)-1].file

	w := walker{owner: owner, pos: map[string]Problem{}, file: top}
	w.walk(merged, profileType, "")
	if len(w.problems) > 0 {
		return nil, &InvalidError{Name: name, Problems: w.problems}
	}
	var p Profile
	if err := merged.Decode(&p); err != nil {
		return nil, &InvalidError{Name: name, Problems: []Problem{yamlProblem(top, err)}}
	}
	p.Extends = ""
	applyDefaults(&p)
	out := &Loaded{Profile: p}
	for _, ly := range layers {
		out.Sources = append(out.Sources, ly.file)
	}
	if probs := validate(&p, w.locate); len(probs) > 0 {
		// An embedded base is valid on its own: a problem located in it
		// comes from what the user's file changed around it, so it is
		// reported there, at the extends line, naming where the value is.
		_, extendsLine := scalarAt(layers[len(layers)-1].root, "extends")
		for i, pr := range probs {
			if strings.HasPrefix(pr.File, "embedded:") && pr.File != top {
				at := pr.File
				if pr.Line > 0 {
					at += ":" + strconv.Itoa(pr.Line)
				}
				probs[i].Msg += fmt.Sprintf(" (the value comes from %s, which this file extends: override it here)", at)
				probs[i].File, probs[i].Line = top, extendsLine
			}
		}
		sort.SliceStable(probs, func(i, j int) bool {
			if probs[i].File != probs[j].File {
				return probs[i].File < probs[j].File
			}
			return probs[i].Line < probs[j].Line
		})
		return nil, &InvalidError{Name: name, Problems: probs}
	}
	return out, nil
}

// duplicateKeys finds mapping keys given twice in one file, at any depth.
func duplicateKeys(file string, n *yaml.Node, path string) []Problem {
	if n == nil {
		return nil
	}
	var out []Problem
	switch n.Kind {
	case yaml.MappingNode:
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			sub := k.Value
			if path != "" {
				sub = path + "." + k.Value
			}
			if first, dup := seen[k.Value]; dup {
				out = append(out, Problem{File: file, Line: k.Line, Path: sub, Msg: fmt.Sprintf("duplicate key (first at line %d)", first)})
				continue
			}
			seen[k.Value] = k.Line
			out = append(out, duplicateKeys(file, v, sub)...)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			out = append(out, duplicateKeys(file, c, fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return out
}

// parse reads exactly one YAML document whose top level is a mapping.
func parse(file string, data []byte) (*yaml.Node, []Problem) {
	if len(data) > MaxProfileSize {
		return nil, []Problem{{File: file, Msg: fmt.Sprintf("%d bytes: a profile is at most %d (1 MiB)", len(data), MaxProfileSize)}}
	}
	if line, c, ok := controlChar(data); ok {
		return nil, []Problem{{File: file, Line: line, Msg: fmt.Sprintf("YAML syntax: control character %U is not allowed", c)}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, []Problem{{File: file, Msg: "empty file: want a profile (apiVersion, kind, metadata, spec)"}}
		}
		return nil, []Problem{yamlProblem(file, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, []Problem{{File: file, Line: extra.Line, Msg: "more than one YAML document: put one profile per file"}}
	} else if !errors.Is(err, io.EOF) {
		return nil, []Problem{yamlProblem(file, err)}
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		line := doc.Line
		if len(doc.Content) == 1 {
			line = doc.Content[0].Line
		}
		return nil, []Problem{{File: file, Line: line, Msg: "top level must be a mapping (apiVersion, kind, metadata, spec)"}}
	}
	return doc.Content[0], nil
}

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlProblem turns a yaml.v3 error ("yaml: line 4: did not find expected
// key") into a located Problem.
func yamlProblem(file string, err error) Problem {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		// yaml.v3 reports an unclosed {…} or […] at its context mark,
		// counted from 0: the line before the collection.
		if strings.HasPrefix(m[2], "did not find expected ',' or ") {
			n++
		}
		return Problem{File: file, Line: n, Msg: "YAML syntax: " + m[2]}
	}
	return Problem{File: file, Msg: "YAML syntax: " + msg}
}

// controlChar finds the first character YAML refuses (C0 controls but
// tab, newline and carriage return; DEL), with its line.
func controlChar(data []byte) (int, rune, bool) {
	line := 1
	for _, r := range string(data) {
		switch {
		case r == '\n':
			line++
		case r == '\t' || r == '\r':
		case r < 0x20 || r == 0x7f:
			return line, r, true
		}
	}
	return 0, 0, false
}

// scalarAt returns the scalar at a key path of a mapping, and its line.
func scalarAt(n *yaml.Node, keys ...string) (string, int) {
	for _, k := range keys {
		v := mapValue(n, k)
		if v == nil {
			return "", 0
		}
		n = v
	}
	if n.Kind != yaml.ScalarNode {
		return "", n.Line
	}
	return n.Value, n.Line
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func markOwner(n *yaml.Node, file string, owner map[*yaml.Node]string) {
	owner[n] = file
	for _, c := range n.Content {
		markOwner(c, file, owner)
	}
}

// mergeNodes lays over on top of base: mappings merge key by key, anything
// else in over replaces base. Neither input is modified.
func mergeNodes(base, over *yaml.Node, owner map[*yaml.Node]string) *yaml.Node {
	if base == nil || base.Kind != yaml.MappingNode || over.Kind != yaml.MappingNode {
		return over
	}
	out := *over
	out.Content = append([]*yaml.Node(nil), base.Content...)
	owner[&out] = owner[over]
	for i := 0; i+1 < len(over.Content); i += 2 {
		k, v := over.Content[i], over.Content[i+1]
		replaced := false
		for j := 0; j+1 < len(out.Content); j += 2 {
			if out.Content[j].Value == k.Value {
				out.Content[j] = k
				out.Content[j+1] = mergeNodes(out.Content[j+1], v, owner)
				replaced = true
				break
			}
		}
		if !replaced {
			out.Content = append(out.Content, k, v)
		}
	}
	return &out
}
