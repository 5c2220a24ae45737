package commands

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"text/tabwriter"

	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/prereq"
)

// PreflightOptions shape `labctl preflight`.
type PreflightOptions struct {
	// AcceptNewHostKeys records keys of hosts absent from known_hosts.
	AcceptNewHostKeys bool
}

// ErrNotReady is returned when a host lacks a prerequisite or cannot be
// checked; the table says which.
var ErrNotReady = errors.New("hosts are not ready")

// HostReport is one host's preflight result.
type HostReport struct {
	Host     string           `json:"host"`
	Address  string           `json:"address"`
	Findings []prereq.Finding `json:"findings,omitempty"`
	Error    string           `json:"error,omitempty"`
}

// Preflight checks, read-only and in parallel, that every node of an SSH
// profile has what Longhorn and K3s need before a cluster exists, and
// prints a table per host.
func Preflight(ctx context.Context, e Env, a ProfileArg, o PreflightOptions) error {
	l, err := e.Load(a)
	if err != nil {
		return err
	}
	s := &l.Spec
	machines := s.Nodes
	if len(machines) == 0 {
		dh, _, ok := s.DockerHostMachine()
		if !ok || s.Hosts == nil {
			return fmt.Errorf("labctl preflight checks SSH nodes, or a k3d cluster's Docker host reached over SSH with spec.hosts tuning; profile %s has neither", l.Metadata.Name)
		}
		machines = []profiles.Node{dh}
	}
	w, err := e.backends(l, wiring{AcceptNewHostKeys: o.AcceptNewHostKeys, HostsOnly: true})
	if err != nil {
		return err
	}
	defer w.Close()
	hosts := w.hosts
	var mu sync.Mutex
	reports := map[string]*HostReport{}
	p := plan.New("preflight " + l.Metadata.Name)
	for _, n := range machines {
		rep := &HostReport{Host: n.Name, Address: n.Address}
		reports[n.Name] = rep
		p.Add(plan.Step{
			ID: "preflight/" + n.Name, Title: "Check host prerequisites", Host: n.Name,
			Run: func(ctx context.Context, x *plan.Exec) error {
				facts, err := hosts.Gather(ctx, n)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					rep.Error = err.Error()
					return nil // one unreachable host must not hide the others' results
				}
				rep.Findings = prereq.Assess(facts, hosts.Want(n))
				return nil
			},
		})
	}
	if _, err := plan.Run(ctx, p, plan.Options{Now: e.Now}); err != nil {
		return err
	}
	ordered := make([]*HostReport, 0, len(reports))
	for _, n := range machines {
		ordered = append(ordered, reports[n.Name])
	}
	if e.Output == OutputJSON {
		if err := writeJSON(e.Stdout, ordered); err != nil {
			return err
		}
	} else {
		writePreflight(e, ordered)
	}
	counts := map[prereq.Status]int{}
	failed := 0
	for _, r := range ordered {
		if r.Error != "" {
			failed++
		}
		for _, f := range r.Findings {
			counts[f.Status]++
		}
	}
	if failed > 0 || counts[prereq.Missing] > 0 || counts[prereq.Warn] > 0 || counts[prereq.Refused] > 0 {
		refused := ""
		if n := counts[prereq.Refused]; n > 0 {
			refused = fmt.Sprintf("%d refused (labctl will not change them; see each for what to do), ", n)
		}
		return fmt.Errorf("%w: %s%d missing (labctl create installs them), %d warnings, %d hosts unreachable", ErrNotReady, refused, counts[prereq.Missing], counts[prereq.Warn], failed)
	}
	return nil
}

func writePreflight(e Env, reports []*HostReport) {
	tw := tabwriter.NewWriter(e.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tITEM\tSTATUS\tDETAIL")
	for _, r := range reports {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\tconnect\terror\t%s\n", r.Host, r.Error)
			continue
		}
		findings := append([]prereq.Finding(nil), r.Findings...)
		sort.SliceStable(findings, func(i, j int) bool { return rank(findings[i].Status) < rank(findings[j].Status) })
		for _, f := range findings {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Host, f.Item, f.Status, f.Detail)
		}
	}
	_ = tw.Flush()
}

// rank puts what needs attention first.
func rank(s prereq.Status) int {
	switch s {
	case prereq.Refused:
		return 0
	case prereq.Warn:
		return 1
	case prereq.Missing:
		return 2
	}
	return 3
}
