package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// Ordered sorts the checks by group (report order), then by check in
// the order each check first appears, keeping the order of the targets:
// the same check on every node comes together.
func (r Report) Ordered() []Check {
	first := map[string]int{}
	for i, c := range r.Checks {
		if _, ok := first[c.Group+"/"+c.Name]; !ok {
			first[c.Group+"/"+c.Name] = i
		}
	}
	out := slices.Clone(r.Checks)
	slices.SortStableFunc(out, func(a, b Check) int {
		if d := slices.Index(groups, a.Group) - slices.Index(groups, b.Group); d != 0 {
			return d
		}
		return first[a.Group+"/"+a.Name] - first[b.Group+"/"+b.Name]
	})
	return out
}

// mergedTargets is how many targets share one ok line before they are
// counted instead of named in the target column.
const mergedTargets = 34

// WriteText writes the report as a table a person reads at a glance: one
// block per group; ok checks of the same kind on several targets share a
// line, anything not ok has its own line with what was expected.
func WriteText(w io.Writer, r Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	group := ""
	checks := r.Ordered()
	for i := 0; i < len(checks); i++ {
		c := checks[i]
		if c.Group != group {
			if group != "" {
				fmt.Fprintln(tw)
			}
			group = c.Group
			fmt.Fprintln(tw, strings.ToUpper(group))
		}
		if c.Status == OK {
			// Merge the following ok checks of the same name.
			targets := []string{c.Target}
			j := i + 1
			for ; j < len(checks) && checks[j].Group == c.Group && checks[j].Name == c.Name && checks[j].Status == OK && checks[j].Observed == c.Observed; j++ {
				targets = append(targets, checks[j].Target)
			}
			i = j - 1
			target, obs := strings.Join(targets, ","), c.Observed
			if len(target) > mergedTargets {
				target, obs = fmt.Sprintf("%d targets", len(targets)), obs+": "+strings.Join(targets, ", ")
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Status, c.Name, target, obs)
			continue
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", strings.ToUpper(string(c.Status)), c.Name, c.Target, c.Observed)
		if c.Expected != "" {
			fmt.Fprintf(tw, "  \t\t\texpected: %s\n", c.Expected)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, r.Summary())
	return err
}

// WriteJSON writes one JSON object per check, then a summary object.
func WriteJSON(w io.Writer, r Report) error {
	enc := json.NewEncoder(w)
	for _, c := range r.Ordered() {
		if err := enc.Encode(c); err != nil {
			return err
		}
	}
	ok, warn, fail := r.Counts()
	return enc.Encode(map[string]any{"summary": map[string]int{"ok": ok, "warn": warn, "fail": fail}})
}
