package plan

import (
	"fmt"
	"io"
	"strings"
)

// WritePlan renders a dry run's events as the ordered plan a person reads:
// steps grouped into phases (consecutive steps sharing a title), each
// phase saying whether its hosts run in parallel or one at a time, and
// under each host the changes it would make.
func WritePlan(w io.Writer, events []Event) error {
	events = Ordered(events)
	if len(events) == 0 || events[0].Kind != KindPlan {
		return fmt.Errorf("render plan: no plan event")
	}
	head := events[0]
	byStep := map[string][]Event{}
	status := map[string]Status{}
	var done Event
	for _, e := range events[1:] {
		switch e.Kind {
		case KindChange, KindWait, KindLog, KindObserved:
			byStep[e.Step] = append(byStep[e.Step], e)
		case KindStepDone, KindStepFailed:
			status[e.Step] = e.Status
			if e.Status == StatusBlocked {
				byStep[e.Step] = append(byStep[e.Step], e)
			}
			if e.Kind == KindStepFailed {
				status[e.Step] = StatusFailed
				byStep[e.Step] = append(byStep[e.Step], e)
			}
		case KindDone:
			done = e
		}
	}
	width := 0
	for _, s := range head.Schedule {
		width = max(width, len(label(s.Host)))
	}
	stages := 0
	for _, s := range head.Schedule {
		stages = max(stages, s.Stage)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Plan %s: %s on %s in %s\n", head.Plan, plural(len(head.Schedule), "step"), plural(len(head.Hosts), "host"), plural(stages, "stage"))

	sched := head.Schedule
	for i := 0; i < len(sched); {
		j := i + 1
		for j < len(sched) && sched[j].Title == sched[i].Title {
			j++
		}
		group := sched[i:j]
		fmt.Fprintf(&b, "\n==> %s  [%s]\n", group[0].Title, groupMode(group))
		for _, s := range group {
			lines := stepLines(byStep[s.ID], status[s.ID])
			if len(lines) == 0 {
				lines = []string{"(nothing to change)"}
			}
			for k, line := range lines {
				host := ""
				if k == 0 {
					host = label(s.Host)
				}
				fmt.Fprintf(&b, "    %-*s  %s\n", width, host, line)
			}
		}
		i = j
	}
	fmt.Fprintf(&b, "\n%s in %s", plural(done.Changes, "change"), plural(len(sched), "step"))
	if done.Error != "" {
		fmt.Fprintf(&b, "; the dry run failed: %s", firstLine(done.Error))
	}
	b.WriteString(".\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func stepLines(evs []Event, st Status) []string {
	var out []string
	observed := false
	for _, e := range evs {
		observed = observed || e.Kind == KindObserved
	}
	if st == StatusSkipped && !observed {
		out = append(out, "= already in place")
	}
	for _, e := range evs {
		switch e.Kind {
		case KindObserved:
			if e.InPlace {
				out = append(out, "= "+e.Message)
			} else {
				out = append(out, "  "+e.Message)
			}
		case KindStepDone:
			out = append(out, "- "+e.Message)
		case KindChange:
			first, rest, _ := strings.Cut(e.Message, "\n")
			out = append(out, "+ "+first)
			for _, l := range strings.Split(rest, "\n") {
				if l != "" {
					out = append(out, "  "+l)
				}
			}
		case KindWait:
			out = append(out, "~ wait for "+e.Message)
		case KindLog:
			out = append(out, "  "+e.Message)
		case KindStepFailed:
			out = append(out, "! "+e.Error)
		}
	}
	return out
}

// groupMode says how the steps of one phase relate.
func groupMode(g []Scheduled) string {
	if len(g) == 1 {
		if g[0].Host == "" {
			return "once"
		}
		return g[0].Host
	}
	sameStage, sameSerial := true, g[0].Serial != ""
	for _, s := range g[1:] {
		sameStage = sameStage && s.Stage == g[0].Stage
		sameSerial = sameSerial && s.Serial == g[0].Serial
	}
	switch {
	case sameStage:
		return plural(len(g), "host") + " in parallel"
	case sameSerial:
		return plural(len(g), "host") + ", one at a time"
	}
	return plural(len(g), "host") + ", in order"
}

func plural(n int, noun string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
