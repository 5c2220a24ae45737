// Package commands implements labctl's commands, one function each;
// cmd/labctl only parses flags and calls them.
package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/labctl/labctl/flow"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
)

// Output formats.
const (
	OutputText = "text"
	OutputJSON = "json"
	OutputYAML = "yaml"
)

// Env is what every command gets: where to write and how.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
	// Output is text or json (show also takes yaml).
	Output string
	// Loader finds profiles.
	Loader profiles.Loader
	// Now is the clock; tests fix it so JSON output is reproducible.
	Now func() time.Time
	// Events, when set, receives every event of a run besides the
	// output (tests read the event log from it).
	Events plan.Sink
}

// ProfileArg is a profile named on the command line or given as a file.
type ProfileArg struct {
	Name string
	File string
}

func (a ProfileArg) String() string {
	if a.File != "" {
		return a.File
	}
	return a.Name
}

// Load resolves the argument through the loader.
func (e Env) Load(a ProfileArg) (*profiles.Loaded, error) {
	switch {
	case a.File != "" && a.Name != "":
		return nil, fmt.Errorf("give a profile name or -f FILE, not both")
	case a.File != "":
		return e.Loader.LoadFile(a.File)
	case a.Name != "":
		return e.Loader.Load(a.Name)
	}
	return nil, fmt.Errorf("which profile? give a name (see `labctl profiles list`) or -f FILE")
}

// loadNodes loads a profile whose machines are SSH nodes; command names
// the caller in the error for a k3d profile.
func (e Env) loadNodes(a ProfileArg, command string) (*profiles.Loaded, error) {
	l, err := e.Load(a)
	if err != nil {
		return nil, err
	}
	if len(l.Spec.Nodes) == 0 {
		return nil, fmt.Errorf("labctl %s works on SSH nodes; profile %s is a k3d cluster", command, l.Metadata.Name)
	}
	return l, nil
}

// DefaultProfilesDir is $LABCTL_PROFILES_DIR, else the user config
// directory's labctl/profiles.
func DefaultProfilesDir() string {
	if d := os.Getenv("LABCTL_PROFILES_DIR"); d != "" {
		return d
	}
	base, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(base, "labctl", "profiles")
}

// ProfilesList prints every profile the loader finds.
func ProfilesList(e Env) error {
	list, err := e.Loader.List()
	if err != nil {
		return err
	}
	if e.Output == OutputJSON {
		return writeJSON(e.Stdout, list)
	}
	tw := tabwriter.NewWriter(e.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSOURCE\tDESCRIPTION")
	for _, p := range list {
		src := p.Source
		if p.Shadows {
			src += " (shadows embedded)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Name, src, p.Description)
	}
	return tw.Flush()
}

// ProfilesShow prints the effective profile: extends resolved, defaults
// filled in.
func ProfilesShow(e Env, a ProfileArg) error {
	l, err := e.Load(a)
	if err != nil {
		return err
	}
	switch e.Output {
	case OutputJSON:
		return writeJSON(e.Stdout, l.Profile)
	case OutputText, OutputYAML, "":
		fmt.Fprintf(e.Stdout, "# profile %s from %s\n", l.Metadata.Name, strings.Join(l.Sources, " + "))
		enc := yaml.NewEncoder(e.Stdout)
		enc.SetIndent(2)
		if err := enc.Encode(l.Profile); err != nil {
			return err
		}
		return enc.Close()
	}
	return fmt.Errorf("output %q: want text, yaml or json", e.Output)
}

// ProfilesSchema prints the JSON Schema of profile files, for editors
// (yaml-language-server: $schema=…).
func ProfilesSchema(e Env) error {
	b, err := profiles.Schema()
	if err != nil {
		return err
	}
	_, err = e.Stdout.Write(b)
	return err
}

// ErrInvalid is returned by ProfilesValidate when any profile is invalid;
// the problems were already printed.
var ErrInvalid = errors.New("invalid profiles")

// validation is one profile's verdict, for --output json.
type validation struct {
	Profile  string             `json:"profile"`
	Valid    bool               `json:"valid"`
	Sources  []string           `json:"sources,omitempty"`
	Problems []profiles.Problem `json:"problems,omitempty"`
	Error    string             `json:"error,omitempty"`
}

// ProfilesValidate checks the given profiles, or every profile the loader
// finds when none is given.
func ProfilesValidate(e Env, args []ProfileArg) error {
	if len(args) == 0 {
		list, err := e.Loader.List()
		if err != nil {
			return err
		}
		for _, p := range list {
			args = append(args, ProfileArg{Name: p.Name})
		}
	}
	var out []validation
	bad := 0
	for _, a := range args {
		v := validation{Profile: a.String(), Valid: true}
		l, err := e.Load(a)
		var inv *profiles.InvalidError
		switch {
		case errors.As(err, &inv):
			v.Valid, v.Problems = false, inv.Problems
		case err != nil:
			v.Valid, v.Error = false, err.Error()
		default:
			v.Sources = l.Sources
		}
		if !v.Valid {
			bad++
		}
		out = append(out, v)
	}
	if e.Output == OutputJSON {
		if err := writeJSON(e.Stdout, out); err != nil {
			return err
		}
	} else {
		for _, v := range out {
			switch {
			case v.Valid:
				fmt.Fprintf(e.Stdout, "ok       %s (%s)\n", v.Profile, strings.Join(v.Sources, " + "))
			case v.Error != "":
				fmt.Fprintf(e.Stdout, "invalid  %s: %s\n", v.Profile, v.Error)
			default:
				fmt.Fprintf(e.Stdout, "invalid  %s:\n", v.Profile)
				for _, p := range v.Problems {
					fmt.Fprintf(e.Stdout, "  %s\n", p)
				}
			}
		}
	}
	if bad > 0 {
		return fmt.Errorf("%w: %d of %d", ErrInvalid, bad, len(out))
	}
	return nil
}

// PlanOptions shape `labctl plan`.
type PlanOptions struct {
	// Observe reads what exists, read-only (Proxmox VE, the hosts and K3s
	// over SSH, a k3d cluster), so the plan shows what is in place and
	// what drifted instead of assuming fresh machines.
	Observe bool
	// Kubeconfig is the file an observed plan compares the context with;
	// StateDir holds the cluster token the nodes' token files are
	// compared with (default k3s.StateDir(); a plan never generates one).
	Kubeconfig, StateDir string
	Proxmox              ProxmoxOptions
	// Rebuild plans the rebuild of that node instead of the create flow;
	// without Observe the other nodes are assumed healthy and it dead.
	Rebuild string
	// Upgrade plans the upgrade instead; without Observe every node is
	// assumed healthy, its version unknown.
	Upgrade bool
}

// Plan prints the full create flow for a profile: every step in order,
// which run in parallel, and the changes each would make. Without Observe
// nothing is contacted: the plan assumes fresh machines.
func Plan(ctx context.Context, e Env, a ProfileArg, o PlanOptions) error {
	l, err := e.Load(a)
	if err != nil {
		return err
	}
	w, err := e.backends(l, wiring{Offline: !o.Observe, Flux: o.Rebuild == "" && !o.Upgrade, OfflineFlux: true, Kubeconfig: o.Kubeconfig, StateDir: o.StateDir, Proxmox: o.Proxmox, Down: o.Rebuild, Upgrade: o.Upgrade})
	if err != nil {
		return err
	}
	defer w.Close()
	opts := flow.Options{Now: e.Now}
	footer := "State not observed: the plan assumes fresh machines."
	if o.Observe {
		opts.Kubeconfig = w.Kubeconfig
		footer = observedFooter(l, w)
	}
	var p *plan.Plan
	switch {
	case o.Rebuild != "" && o.Upgrade:
		return fmt.Errorf("plan one thing at a time: --rebuild or --upgrade")
	case o.Upgrade:
		if !o.Observe {
			footer = "State not observed: the plan assumes every node healthy, its K3s version unknown."
		}
		p, err = flow.Upgrade(&l.Profile, w.Backends, opts)
	case o.Rebuild != "":
		if !o.Observe {
			footer = fmt.Sprintf("State not observed: the plan assumes %s is dead and every other node healthy.", o.Rebuild)
		}
		opts.Confirmed = true
		p, err = flow.Rebuild(&l.Profile, o.Rebuild, w.Backends, opts)
	default:
		p, err = flow.Create(&l.Profile, w.Backends, opts)
	}
	if err != nil {
		return err
	}
	return e.dryRun(ctx, p, fmt.Sprintf("Profile %s from %s. %s", l.Metadata.Name, strings.Join(l.Sources, " + "), footer))
}

// observedFooter says what an observed plan read.
func observedFooter(l *profiles.Loaded, w *wired) string {
	var parts []string
	switch {
	case l.Spec.K3d != nil:
		parts = append(parts, "k3d cluster and kubeconfig observed")
	default:
		if w.vms != nil {
			parts = append(parts, "VMs observed at "+w.vms.Client.Endpoint)
		}
		parts = append(parts, "hosts, K3s and kubeconfig observed (read-only, over SSH)")
	}
	return strings.Join(parts, "; ") + "; Flux not observed: its step assumes it is not installed."
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
