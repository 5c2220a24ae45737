package plan

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Options control a run.
type Options struct {
	// DryRun records every change instead of making it.
	DryRun bool
	// Parallel bounds how many steps run at once (default 8).
	Parallel int
	// KeepGoing runs every step whose dependencies succeeded, even after
	// a failure elsewhere: a read-only report (verify, plan --observe)
	// shows every finding, not the first. Steps waiting on a failed step
	// end blocked.
	KeepGoing bool
	// Sink receives events; nil discards them.
	Sink Sink
	// Now is the clock (tests fix it).
	Now func() time.Time
}

// Status is how a step ended.
type Status string

// Step outcomes.
const (
	StatusPending Status = "pending" // never started (an earlier failure or cancellation)
	StatusDone    Status = "done"    // ran; in a dry run: would run
	StatusSkipped Status = "skipped" // Check said it is already in place
	StatusFailed  Status = "failed"
	StatusBlocked Status = "blocked" // KeepGoing: a step it waits for failed
)

// StepResult is what happened to one step.
type StepResult struct {
	Scheduled
	Status  Status
	Start   time.Time
	End     time.Time
	Changes []string // the Wet actions, made or (dry run) planned
	// Reason is what the step's Check observed.
	Reason string
	Err    error
}

// Duration is how long the step took.
func (r StepResult) Duration() time.Duration { return r.End.Sub(r.Start) }

// Report is the outcome of a run, steps in schedule order.
type Report struct {
	Plan   string
	DryRun bool
	Steps  []StepResult
	Start  time.Time
	End    time.Time
}

// Wall is the run's elapsed time.
func (r *Report) Wall() time.Duration { return r.End.Sub(r.Start) }

// Changes counts the Wet actions of the run: zero for a run that found
// everything in place.
func (r *Report) Changes() int {
	n := 0
	for _, s := range r.Steps {
		n += len(s.Changes)
	}
	return n
}

// CriticalPath is the longest chain of dependent steps, by their measured
// durations: the shortest wall time any scheduler could achieve with
// unbounded parallelism. Wall/CriticalPath near 1 means the engine added
// no waiting of its own.
func (r *Report) CriticalPath() time.Duration {
	byIndex := map[int]int{}
	for i, s := range r.Steps {
		byIndex[s.index] = i
	}
	finish := make([]time.Duration, len(r.Steps))
	// Steps are in stage order, so every dependency comes first.
	var longest time.Duration
	for i, s := range r.Steps {
		var start time.Duration
		for _, d := range s.deps {
			start = max(start, finish[byIndex[d]])
		}
		finish[i] = start + s.Duration()
		longest = max(longest, finish[i])
	}
	return longest
}

// ErrCanceled is returned when the context ends before the plan finishes.
var ErrCanceled = errors.New("canceled")

// Run executes the plan. It stops starting steps after the first failure
// or cancellation, lets running steps finish, and returns the report with
// an error naming the failed steps.
func Run(ctx context.Context, p *Plan, o Options) (*Report, error) {
	sched, err := p.Schedule()
	if err != nil {
		return nil, err
	}
	if o.Parallel <= 0 {
		o.Parallel = 8
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	r := &runner{opts: o, plan: p, sched: sched}
	return r.run(ctx)
}

type runner struct {
	opts  Options
	plan  *Plan
	sched []Scheduled
	mu    sync.Mutex // guards sink calls and results
	res   []StepResult
	done  int
}

func (r *runner) emit(e Event) {
	e.Time = r.opts.Now()
	e.DryRun = r.opts.DryRun
	if r.opts.Sink != nil {
		r.opts.Sink.Event(e)
	}
}

func (r *runner) run(ctx context.Context) (*Report, error) {
	n := len(r.sched)
	pos := make(map[int]int, n) // declaration index -> schedule position
	r.res = make([]StepResult, n)
	for i, s := range r.sched {
		pos[s.index] = i
		r.res[i] = StepResult{Scheduled: s, Status: StatusPending}
	}
	waiting := make([]int, n)      // unfinished dependencies per step
	dependents := make([][]int, n) // schedule positions
	for i, s := range r.sched {
		waiting[i] = len(s.deps)
		for _, d := range s.deps {
			dependents[pos[d]] = append(dependents[pos[d]], i)
		}
	}
	rep := &Report{Plan: r.plan.Name, DryRun: r.opts.DryRun, Start: r.opts.Now()}
	r.mu.Lock()
	r.emit(Event{Kind: KindPlan, Plan: r.plan.Name, Total: n, Schedule: r.sched, Hosts: r.plan.Hosts()})
	r.mu.Unlock()

	type finished struct {
		i   int
		err error
	}
	results := make(chan finished)
	var ready []int // schedule positions, kept sorted so stage order wins
	for i := range r.sched {
		if waiting[i] == 0 {
			ready = append(ready, i)
		}
	}
	running, completed := 0, 0
	var failures []error
	stopped := false
	for completed < n {
		for !stopped && len(ready) > 0 && running < r.opts.Parallel {
			i := ready[0]
			ready = ready[1:]
			running++
			go func() { results <- finished{i, r.step(ctx, i)} }()
		}
		if running == 0 {
			break
		}
		select {
		case f := <-results:
			running--
			completed++
			if f.err != nil {
				failures = append(failures, f.err)
				if !r.opts.KeepGoing {
					stopped = true
					continue
				}
				completed += r.block(f.i, dependents)
				continue
			}
			for _, j := range dependents[f.i] {
				waiting[j]--
				if waiting[j] == 0 && r.res[j].Status == StatusPending {
					ready = insertSorted(ready, j)
				}
			}
		case <-ctx.Done():
			if !stopped {
				stopped = true
				failures = append(failures, fmt.Errorf("%w: %w", ErrCanceled, context.Cause(ctx)))
			}
			// Keep draining: running steps see ctx and return.
			f := <-results
			running--
			completed++
			if f.err != nil && !errors.Is(f.err, context.Canceled) {
				failures = append(failures, f.err)
			}
		}
	}
	rep.End = r.opts.Now()
	rep.Steps = r.res
	err := errors.Join(failures...)
	r.mu.Lock()
	ev := Event{Kind: KindDone, Plan: r.plan.Name, Total: n, Done: r.done, Changes: rep.Changes(), Elapsed: rep.Wall()}
	if err != nil {
		ev.Error = err.Error()
	}
	r.emit(ev)
	r.mu.Unlock()
	return rep, err
}

// block marks every step that waits, directly or not, on the failed step
// i as blocked, and returns how many it marked.
func (r *runner) block(i int, dependents [][]int) int {
	n := 0
	for _, j := range dependents[i] {
		if r.res[j].Status != StatusPending {
			continue
		}
		r.mu.Lock()
		r.res[j].Status = StatusBlocked
		r.done++
		s := r.sched[j]
		r.emit(Event{Kind: KindStepDone, Step: s.ID, Title: s.Title, Host: s.Host, Status: StatusBlocked,
			Message: "not run: waits for " + r.sched[i].ID + ", which failed", Done: r.done, Total: len(r.sched)})
		r.mu.Unlock()
		n += 1 + r.block(j, dependents)
	}
	return n
}

func insertSorted(xs []int, x int) []int {
	i := 0
	for i < len(xs) && xs[i] < x {
		i++
	}
	xs = append(xs, 0)
	copy(xs[i+1:], xs[i:])
	xs[i] = x
	return xs
}

// step runs one step: Check, then Run through an Exec.
func (r *runner) step(ctx context.Context, i int) error {
	s := r.plan.steps[r.sched[i].index]
	res := &r.res[i]
	res.Start = r.opts.Now()
	base := Event{Step: s.ID, Title: s.Title, Host: s.Host}
	r.send(base, KindStepStart, "")

	finish := func(st Status, err error) error {
		r.mu.Lock()
		res.End = r.opts.Now()
		res.Status = st
		res.Err = err
		r.done++
		e := base
		e.Kind = KindStepDone
		e.Status = st
		e.Done, e.Total = r.done, len(r.sched)
		e.Elapsed = res.End.Sub(res.Start)
		if err != nil {
			e.Kind = KindStepFailed
			e.Error = err.Error()
		}
		r.emit(e)
		r.mu.Unlock()
		return err
	}

	if s.Check != nil {
		v, err := s.Check(ctx, func(msg string) { r.send(base, KindLog, msg) })
		if err != nil {
			return finish(StatusFailed, fmt.Errorf("%s: %w", s.ID, err))
		}
		if v.Reason != "" {
			r.mu.Lock()
			res.Reason = v.Reason
			e := base
			e.Kind, e.Message, e.InPlace = KindObserved, v.Reason, v.Done
			r.emit(e)
			r.mu.Unlock()
		}
		if v.Done {
			return finish(StatusSkipped, nil)
		}
	}
	x := &Exec{r: r, base: base, res: res, ctx: withProgress(ctx, func(line string) { r.send(base, KindProgress, line) })}
	if err := s.Run(ctx, x); err != nil {
		return finish(StatusFailed, fmt.Errorf("%s: %w", s.ID, err))
	}
	return finish(StatusDone, nil)
}

func (r *runner) send(base Event, kind Kind, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := base
	e.Kind = kind
	e.Message = msg
	r.emit(e)
}

// Exec is a running step's handle on the engine.
type Exec struct {
	r    *runner
	base Event
	res  *StepResult
	ctx  context.Context
}

// DryRun reports whether changes are being recorded instead of made.
func (x *Exec) DryRun() bool { return x.r.opts.DryRun }

// Wet is the one way a step changes anything. what says what the change
// is, in words an operator reads in `plan` ("write /etc/rancher/k3s/
// config.yaml"); it must not contain secrets. In a dry run fn is not
// called and the change is recorded; otherwise fn runs and its error is
// returned with what as context.
func (x *Exec) Wet(what string, fn func(context.Context) error) error {
	x.r.mu.Lock()
	x.res.Changes = append(x.res.Changes, what)
	x.r.mu.Unlock()
	x.r.send(x.base, KindChange, what)
	if x.r.opts.DryRun {
		return nil
	}
	if err := fn(x.ctx); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Wait blocks on a read-only condition that only holds once earlier
// changes were made (a Node becoming Ready). A dry run records it and
// returns at once.
func (x *Exec) Wait(what string, fn func(context.Context) error) error {
	x.r.send(x.base, KindWait, what)
	if x.r.opts.DryRun {
		return nil
	}
	if err := fn(x.ctx); err != nil {
		return fmt.Errorf("wait for %s: %w", what, err)
	}
	return nil
}

// Log reports progress that changes nothing.
func (x *Exec) Log(msg string) { x.r.send(x.base, KindLog, msg) }

type progressKey struct{}

func withProgress(ctx context.Context, fn func(string)) context.Context {
	return context.WithValue(ctx, progressKey{}, fn)
}

// Output returns where a long-running change reports its output lines
// (apt, an installer) while it runs: the step's progress events, shown on
// a terminal as they come. Outside a step it discards them.
func Output(ctx context.Context) func(line string) {
	if fn, ok := ctx.Value(progressKey{}).(func(string)); ok {
		return fn
	}
	return func(string) {}
}
