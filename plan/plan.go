// Package plan is labctl's step engine. A Plan is a set of small steps
// with declared dependencies; Run executes them with bounded parallelism,
// keeps steps of a serial group one at a time (etcd joins), asks each step
// whether it is already done before running it, and routes every mutating
// action through one choke point (Exec.Wet) so that a dry run records
// exactly what the real run would do.
package plan

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Step is one unit of work, usually on one host.
type Step struct {
	// ID is unique in the plan, e.g. "k3s-join/kube-srv-2".
	ID string
	// Title is shared by the per-host instances of the same work
	// ("Join K3s server"); renderers group consecutive steps by it.
	Title string
	// Host is the machine the step works on; empty for the operator's
	// machine (kubeconfig) or the cluster as a whole (Flux).
	Host string
	// After lists step IDs that must have finished first.
	After []string
	// Serial groups steps that must run one at a time, in the order they
	// were added, even when their other dependencies would allow more.
	Serial string
	// Check observes whether the step's outcome is already in place,
	// without changing anything, and says why (the reason is shown by
	// plan, verify and the JSON events); log reports what it saw that an
	// operator must know (a warning) even when nothing is to do. Nil
	// means "cannot tell": the step runs (and a dry run says it would).
	Check func(ctx context.Context, log func(msg string)) (Verdict, error)
	// Run does the work; every change goes through x.Wet.
	Run func(ctx context.Context, x *Exec) error
}

// Verdict is what a step's Check observed: whether its outcome is in
// place, and why (or why not), in words an operator reads.
type Verdict struct {
	Done   bool
	Reason string
}

// InPlace is the verdict of a step with nothing to do.
func InPlace(format string, a ...any) Verdict {
	return Verdict{Done: true, Reason: fmt.Sprintf(format, a...)}
}

// ToDo is the verdict of a step that must run, with what it found.
func ToDo(format string, a ...any) Verdict {
	return Verdict{Reason: fmt.Sprintf(format, a...)}
}

// Plan is an ordered set of steps.
type Plan struct {
	Name  string
	steps []*Step
}

// New returns an empty plan.
func New(name string) *Plan { return &Plan{Name: name} }

// Add appends steps in declaration order.
func (p *Plan) Add(steps ...Step) {
	for i := range steps {
		s := steps[i]
		p.steps = append(p.steps, &s)
	}
}

// Scheduled is a step with its resolved position in the plan.
type Scheduled struct {
	ID     string   `json:"id"`
	Title  string   `json:"title"`
	Host   string   `json:"host,omitempty"`
	After  []string `json:"after,omitempty"`
	Serial string   `json:"serial,omitempty"`
	// Stage is the step's depth: 1 + the deepest stage it waits for.
	// Steps of one stage do not wait for each other.
	Stage int `json:"stage"`

	index int   // declaration order
	deps  []int // indices of all dependencies, serial ones included
}

// ErrInvalidPlan wraps structural mistakes in a plan (a bug in the caller).
var ErrInvalidPlan = errors.New("invalid plan")

// Schedule resolves dependencies (serial groups become edges to the
// previous member) and returns the steps sorted by stage, then by
// declaration order. It rejects duplicate IDs, unknown dependencies and
// cycles.
func (p *Plan) Schedule() ([]Scheduled, error) {
	byID := make(map[string]int, len(p.steps))
	for i, s := range p.steps {
		if s.ID == "" || s.Run == nil {
			return nil, fmt.Errorf("%w: step %d (%q) needs an ID and a Run function", ErrInvalidPlan, i, s.ID)
		}
		if _, dup := byID[s.ID]; dup {
			return nil, fmt.Errorf("%w: duplicate step ID %q", ErrInvalidPlan, s.ID)
		}
		byID[s.ID] = i
	}
	out := make([]Scheduled, len(p.steps))
	lastInGroup := map[string]int{}
	for i, s := range p.steps {
		sc := Scheduled{ID: s.ID, Title: s.Title, Host: s.Host, Serial: s.Serial, index: i}
		for _, a := range s.After {
			j, ok := byID[a]
			if !ok {
				return nil, fmt.Errorf("%w: step %q waits for unknown step %q", ErrInvalidPlan, s.ID, a)
			}
			sc.deps = appendUnique(sc.deps, j)
			sc.After = append(sc.After, a)
		}
		if s.Serial != "" {
			if j, ok := lastInGroup[s.Serial]; ok {
				if !containsInt(sc.deps, j) {
					sc.After = append(sc.After, p.steps[j].ID)
				}
				sc.deps = appendUnique(sc.deps, j)
			}
			lastInGroup[s.Serial] = i
		}
		out[i] = sc
	}
	// Stages by repeated relaxation; a cycle shows as a stage beyond n.
	const unset = -1
	stage := make([]int, len(out))
	for i := range stage {
		stage[i] = unset
	}
	var depth func(i int, seen []bool) (int, error)
	depth = func(i int, seen []bool) (int, error) {
		if stage[i] != unset {
			return stage[i], nil
		}
		if seen[i] {
			return 0, fmt.Errorf("%w: dependency cycle through %q", ErrInvalidPlan, out[i].ID)
		}
		seen[i] = true
		d := 0
		for _, j := range out[i].deps {
			dj, err := depth(j, seen)
			if err != nil {
				return 0, err
			}
			d = max(d, dj+1)
		}
		seen[i] = false
		stage[i] = d
		return d, nil
	}
	seen := make([]bool, len(out))
	for i := range out {
		d, err := depth(i, seen)
		if err != nil {
			return nil, err
		}
		out[i].Stage = d + 1
	}
	sort.SliceStable(out, func(a, b int) bool {
		if out[a].Stage != out[b].Stage {
			return out[a].Stage < out[b].Stage
		}
		return out[a].index < out[b].index
	})
	return out, nil
}

// Hosts returns the distinct hosts of the plan, in first-use order.
func (p *Plan) Hosts() []string {
	var hosts []string
	for _, s := range p.steps {
		if s.Host != "" && !containsString(hosts, s.Host) {
			hosts = append(hosts, s.Host)
		}
	}
	return hosts
}

func appendUnique(xs []int, x int) []int {
	if containsInt(xs, x) {
		return xs
	}
	return append(xs, x)
}

func containsInt(xs []int, x int) bool { return slices.Contains(xs, x) }

func containsString(xs []string, x string) bool { return slices.Contains(xs, x) }

// label is a step's host or, for cluster-wide steps, a dash.
func label(host string) string {
	if host == "" {
		return "-"
	}
	return strings.TrimSpace(host)
}
