package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// Kind is the type of an event.
type Kind string

// Event kinds, in the order a step emits them.
const (
	KindPlan       Kind = "plan"        // the schedule, once, first
	KindStepStart  Kind = "step-start"  // a step began (its Check runs next)
	KindObserved   Kind = "observed"    // what the Check saw: inPlace, and why
	KindChange     Kind = "change"      // a Wet action: made, or in a dry run planned
	KindProgress   Kind = "progress"    // an output line of a change that is running
	KindWait       Kind = "wait"        // a read-only wait on earlier changes
	KindLog        Kind = "log"         // progress that changes nothing
	KindStepDone   Kind = "step-done"   // Status says done or skipped
	KindStepFailed Kind = "step-failed" // Error says why
	KindDone       Kind = "done"        // the run ended; Error set if it failed
)

// Event is one thing that happened in a run. Renderers turn the stream
// into terminal progress or JSON lines.
type Event struct {
	Time     time.Time     `json:"time"`
	Kind     Kind          `json:"kind"`
	Plan     string        `json:"plan,omitempty"`
	Step     string        `json:"step,omitempty"`
	Title    string        `json:"title,omitempty"`
	Host     string        `json:"host,omitempty"`
	Message  string        `json:"message,omitempty"`
	Status   Status        `json:"status,omitempty"`
	InPlace  bool          `json:"inPlace,omitempty"`
	DryRun   bool          `json:"dryRun,omitempty"`
	Error    string        `json:"error,omitempty"`
	Done     int           `json:"done,omitempty"`
	Total    int           `json:"total,omitempty"`
	Changes  int           `json:"changes,omitempty"`
	Elapsed  time.Duration `json:"elapsedNs,omitempty"`
	Hosts    []string      `json:"hosts,omitempty"`
	Schedule []Scheduled   `json:"schedule,omitempty"`
}

// Sink receives events. The engine serialises calls.
type Sink interface{ Event(Event) }

// Sinks fans events out to several sinks.
type Sinks []Sink

// Event implements Sink.
func (s Sinks) Event(e Event) {
	for _, k := range s {
		k.Event(e)
	}
}

// Recorder keeps every event, for tests and for rendering a plan.
type Recorder struct {
	mu     sync.Mutex
	events []Event
}

// Event implements Sink.
func (r *Recorder) Event(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

// Events returns a copy of what was recorded.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// Ordered returns the events with each step's events together, steps in
// schedule order, the plan event first and the done event last. Parallel
// steps interleave in a live stream; this order is the same on every run,
// which makes a dry run's output reproducible; step counters are
// renumbered to match.
func Ordered(events []Event) []Event {
	rank := map[string]int{}
	for _, e := range events {
		if e.Kind == KindPlan {
			for i, s := range e.Schedule {
				rank[s.ID] = i + 1
			}
		}
	}
	key := func(e Event) int {
		switch e.Kind {
		case KindPlan:
			return 0
		case KindDone:
			return len(rank) + 1
		}
		return rank[e.Step]
	}
	out := append([]Event(nil), events...)
	sort.SliceStable(out, func(i, j int) bool { return key(out[i]) < key(out[j]) })
	// Step counters follow the new order, so they too are the same on every run.
	n := 0
	for i := range out {
		if out[i].Kind == KindStepDone || out[i].Kind == KindStepFailed {
			n++
			out[i].Done = n
		}
	}
	return out
}

// JSONLines writes one JSON object per event.
type JSONLines struct {
	mu  sync.Mutex
	enc *json.Encoder
}

// NewJSONLines writes events to w.
func NewJSONLines(w io.Writer) *JSONLines { return &JSONLines{enc: json.NewEncoder(w)} }

// Event implements Sink.
func (j *JSONLines) Event(e Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	_ = j.enc.Encode(e)
}

// Progress renders a live run for a person: one line per step start,
// change and end, each prefixed with the step counter and host.
type Progress struct {
	mu    sync.Mutex
	w     io.Writer
	width int
	// Live is set for a terminal: the output of a running command is
	// shown on one line that each new line replaces.
	Live bool
	live bool // a live line is on screen
}

// NewProgress writes human progress to w.
func NewProgress(w io.Writer) *Progress { return &Progress{w: w, width: 12} }

// clearLive removes the live line before a regular line is written.
func (p *Progress) clearLive() {
	if p.live {
		fmt.Fprint(p.w, "\r\033[K")
		p.live = false
	}
}

// Event implements Sink.
func (p *Progress) Event(e Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e.Kind == KindProgress {
		if p.Live {
			line := e.Message
			if len(line) > 100 {
				line = line[:100]
			}
			p.clearLive()
			fmt.Fprintf(p.w, "%-*s    | %s", p.width, label(e.Host), line)
			p.live = true
		}
		return
	}
	p.clearLive()
	switch e.Kind {
	case KindPlan:
		for _, h := range e.Hosts {
			p.width = max(p.width, len(h))
		}
		mode := ""
		if e.DryRun {
			mode = " (dry run)"
		}
		fmt.Fprintf(p.w, "==> %s: %s on %s%s\n", e.Plan, plural(e.Total, "step"), plural(len(e.Hosts), "host"), mode)
	case KindStepStart:
		fmt.Fprintf(p.w, "%-*s  %s ...\n", p.width, label(e.Host), e.Title)
	case KindChange:
		verb := ""
		if e.DryRun {
			verb = "would "
		}
		first, rest, _ := strings.Cut(e.Message, "\n")
		fmt.Fprintf(p.w, "%-*s    %s%s\n", p.width, label(e.Host), verb, first)
		for _, l := range strings.Split(rest, "\n") {
			if l != "" {
				fmt.Fprintf(p.w, "%-*s      %s\n", p.width, "", l)
			}
		}
	case KindWait:
		fmt.Fprintf(p.w, "%-*s    wait for %s\n", p.width, label(e.Host), e.Message)
	case KindLog:
		fmt.Fprintf(p.w, "%-*s    %s\n", p.width, label(e.Host), e.Message)
	case KindObserved:
		if !e.InPlace {
			fmt.Fprintf(p.w, "%-*s    %s\n", p.width, label(e.Host), e.Message)
		}
	case KindStepDone:
		what := "done"
		switch e.Status {
		case StatusSkipped:
			what = "already done"
		case StatusBlocked:
			fmt.Fprintf(p.w, "%-*s  %s: %s [%d/%d]\n", p.width, label(e.Host), e.Title, e.Message, e.Done, e.Total)
			return
		}
		fmt.Fprintf(p.w, "%-*s  %s: %s (%s) [%d/%d]\n", p.width, label(e.Host), e.Title, what, e.Elapsed.Round(time.Millisecond), e.Done, e.Total)
	case KindStepFailed:
		// The error is printed once, with the run's result, by the command.
		fmt.Fprintf(p.w, "%-*s  %s: FAILED [%d/%d]\n", p.width, label(e.Host), e.Title, e.Done, e.Total)
	case KindDone:
		if e.Error != "" {
			// The error itself is printed once, by whoever handles it.
			fmt.Fprintf(p.w, "==> %s failed after %s (%s, %s made)\n", e.Plan, e.Elapsed.Round(time.Millisecond), plural(e.Done, "step")+" ended", plural(e.Changes, "change"))
			return
		}
		fmt.Fprintf(p.w, "==> %s finished in %s: %s, %s\n", e.Plan, e.Elapsed.Round(time.Millisecond), plural(e.Done, "step"), plural(e.Changes, "change"))
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
