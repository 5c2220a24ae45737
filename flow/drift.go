package flow

import (
	"fmt"
	"strings"

	"github.com/labctl/labctl/facts"
)

// NodeDrift is how one node's K3s differs from the profile.
type NodeDrift struct {
	Node    string
	Changes []facts.Change
}

// DriftError stops a flow that would otherwise mark a node whose K3s
// differs from the profile (its version, its config.yaml) as in place.
// It names every difference on every node.
type DriftError struct {
	Nodes []NodeDrift
}

func (e *DriftError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "K3s differs from the profile on %s:", plural(len(e.Nodes), "node"))
	for _, n := range e.Nodes {
		fmt.Fprintf(&b, "\n  %s: %s", n.Node, driftLine(n.Changes))
	}
	b.WriteString("\nnothing was changed: create does not change a running K3s; roll the change out one node at a time with labctl upgrade (plan it first: labctl plan --upgrade), or revert the profile to what runs")
	return b.String()
}

// driftLine renders a node's differences: the version as "installed,
// profile wants", config keys as "key have → want".
func driftLine(cs []facts.Change) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		if c.Key == "k3s version" {
			if c.Have == "" {
				parts[i] = fmt.Sprintf("k3s version not observed, profile wants %s", c.Want)
			} else {
				parts[i] = fmt.Sprintf("k3s %s installed, profile wants %s", c.Have, c.Want)
			}
			continue
		}
		parts[i] = "config.yaml " + c.String()
	}
	return strings.Join(parts, "; ")
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
