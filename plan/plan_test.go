package plan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labctl/labctl/internal/golden"
)

func noop(context.Context, *Exec) error { return nil }

// state is a tiny "infrastructure": keys that steps create, so checks and
// changes act on something observable.
type state struct {
	mu   sync.Mutex
	keys map[string]bool
	log  []string
}

func newState() *state { return &state{keys: map[string]bool{}} }

func (s *state) has(k string) bool { s.mu.Lock(); defer s.mu.Unlock(); return s.keys[k] }
func (s *state) set(k string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[k] = true
	s.log = append(s.log, k)
}

// ensure is a step that creates key unless it exists.
func ensure(st *state, id, host string, after ...string) Step {
	return Step{
		ID: id, Title: strings.Split(id, "/")[0], Host: host, After: after,
		Check: func(context.Context, func(string)) (Verdict, error) { return Verdict{Done: st.has(id)}, nil },
		Run: func(ctx context.Context, x *Exec) error {
			return x.Wet("create "+id, func(context.Context) error { st.set(id); return nil })
		},
	}
}

func TestScheduleTurnsSerialGroupIntoChainInDeclarationOrder(t *testing.T) {
	p := New("t")
	p.Add(
		Step{ID: "init", Run: noop},
		Step{ID: "join/b", After: []string{"init"}, Serial: "etcd", Run: noop},
		Step{ID: "join/c", After: []string{"init"}, Serial: "etcd", Run: noop},
		Step{ID: "join/d", After: []string{"init"}, Serial: "etcd", Run: noop},
	)
	sched, err := p.Schedule()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, s := range sched {
		got[s.ID] = s.Stage
	}
	want := map[string]int{"init": 1, "join/b": 2, "join/c": 3, "join/d": 4}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("stages = %v, want %v", got, want)
	}
}

func TestScheduleRejectsBrokenPlans(t *testing.T) {
	for name, steps := range map[string][]Step{
		"duplicate ID":       {{ID: "a", Run: noop}, {ID: "a", Run: noop}},
		"unknown dependency": {{ID: "a", After: []string{"zz"}, Run: noop}},
		"cycle":              {{ID: "a", After: []string{"b"}, Run: noop}, {ID: "b", After: []string{"a"}, Run: noop}},
		"missing Run":        {{ID: "a"}},
	} {
		t.Run(name, func(t *testing.T) {
			p := New("t")
			p.Add(steps...)
			if _, err := Run(context.Background(), p, Options{}); !errors.Is(err, ErrInvalidPlan) {
				t.Fatalf("err = %v, want ErrInvalidPlan", err)
			}
		})
	}
}

func TestRunNeverExceedsParallelBound(t *testing.T) {
	var cur, peak atomic.Int32
	p := New("t")
	for i := range 9 {
		p.Add(Step{ID: fmt.Sprint(i), Host: fmt.Sprint("h", i), Run: func(ctx context.Context, x *Exec) error {
			n := cur.Add(1)
			for {
				old := peak.Load()
				if n <= old || peak.CompareAndSwap(old, n) {
					break
				}
			}
			time.Sleep(5 * time.Millisecond)
			cur.Add(-1)
			return nil
		}})
	}
	if _, err := Run(context.Background(), p, Options{Parallel: 3}); err != nil {
		t.Fatal(err)
	}
	if peak.Load() != 3 {
		t.Fatalf("peak concurrency = %d, want exactly the bound 3", peak.Load())
	}
}

func TestRunStartsAHostsNextStepWithoutWaitingForOtherHosts(t *testing.T) {
	// Host a's first step is quick, host b's is slow: a's second step must
	// start while b's first is still running (no phase barrier).
	bRunning := make(chan struct{})
	release := make(chan struct{})
	var overlapped atomic.Bool
	p := New("t")
	p.Add(
		Step{ID: "one/a", Host: "a", Run: noop},
		Step{ID: "one/b", Host: "b", Run: func(ctx context.Context, x *Exec) error {
			close(bRunning)
			<-release
			return nil
		}},
		Step{ID: "two/a", Host: "a", After: []string{"one/a"}, Run: func(ctx context.Context, x *Exec) error {
			<-bRunning
			overlapped.Store(true)
			close(release)
			return nil
		}},
	)
	if _, err := Run(context.Background(), p, Options{}); err != nil {
		t.Fatal(err)
	}
	if !overlapped.Load() {
		t.Fatal("two/a did not run while one/b was running")
	}
}

func TestRunKeepsSerialStepsOneAtATimeInOrder(t *testing.T) {
	var mu sync.Mutex
	var active int
	var order []string
	p := New("t")
	p.Add(Step{ID: "init", Run: noop})
	for _, h := range []string{"b", "c", "d", "e"} {
		p.Add(Step{ID: "join/" + h, Host: h, After: []string{"init"}, Serial: "etcd", Run: func(ctx context.Context, x *Exec) error {
			mu.Lock()
			active++
			if active > 1 {
				mu.Unlock()
				return errors.New("two joins at once")
			}
			order = append(order, h)
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
			mu.Lock()
			active--
			mu.Unlock()
			return nil
		}})
	}
	if _, err := Run(context.Background(), p, Options{Parallel: 8}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(order, "") != "bcde" {
		t.Fatalf("join order = %v, want b c d e", order)
	}
}

func TestSecondRunOfFinishedPlanChangesNothing(t *testing.T) {
	st := newState()
	build := func() *Plan {
		p := New("t")
		for _, h := range []string{"a", "b", "c"} {
			p.Add(ensure(st, "vm/"+h, h), ensure(st, "prereq/"+h, h, "vm/"+h))
		}
		p.Add(ensure(st, "init/a", "a", "prereq/a"))
		return p
	}
	first, err := Run(context.Background(), build(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if first.Changes() != 7 {
		t.Fatalf("first run made %d changes, want 7", first.Changes())
	}
	second, err := Run(context.Background(), build(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if second.Changes() != 0 {
		t.Fatalf("second run made %d changes, want 0", second.Changes())
	}
	for _, s := range second.Steps {
		if s.Status != StatusSkipped {
			t.Errorf("%s: status %s, want skipped", s.ID, s.Status)
		}
	}
}

func TestDryRunRecordsExactlyTheChangesOfTheRealRunAndMakesNone(t *testing.T) {
	st := newState()
	build := func() *Plan {
		p := New("t")
		for _, h := range []string{"a", "b"} {
			p.Add(ensure(st, "vm/"+h, h), ensure(st, "k3s/"+h, h, "vm/"+h))
		}
		return p
	}
	dry, err := Run(context.Background(), build(), Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.log) != 0 {
		t.Fatalf("dry run changed state: %v", st.log)
	}
	wet, err := Run(context.Background(), build(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	changes := func(r *Report) map[string][]string {
		m := map[string][]string{}
		for _, s := range r.Steps {
			m[s.ID] = s.Changes
		}
		return m
	}
	if !reflect.DeepEqual(changes(dry), changes(wet)) {
		t.Fatalf("dry run planned %v, real run made %v", changes(dry), changes(wet))
	}
}

func TestDryRunConsultsChecksAndOmitsStepsAlreadyDone(t *testing.T) {
	st := newState()
	st.set("vm/a")
	p := New("t")
	p.Add(ensure(st, "vm/a", "a"), ensure(st, "vm/b", "b"))
	rep, err := Run(context.Background(), p, Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Changes() != 1 || rep.Steps[0].Status != StatusSkipped {
		t.Fatalf("changes = %d, first status %s; want 1 change and vm/a skipped", rep.Changes(), rep.Steps[0].Status)
	}
}

func TestFailureStopsDependentsAndNamesTheStep(t *testing.T) {
	st := newState()
	p := New("t")
	p.Add(
		Step{ID: "prereq/a", Host: "a", Run: func(ctx context.Context, x *Exec) error {
			return x.Wet("install open-iscsi", func(context.Context) error { return errors.New("apt-get: exit status 100") })
		}},
		ensure(st, "init/a", "a", "prereq/a"),
	)
	rep, err := Run(context.Background(), p, Options{})
	if err == nil || !strings.Contains(err.Error(), "prereq/a: install open-iscsi: apt-get: exit status 100") {
		t.Fatalf("err = %v, want step, change and cause", err)
	}
	if rep.Steps[1].Status != StatusPending || st.has("init/a") {
		t.Fatalf("init/a ran after its dependency failed")
	}
}

func TestCancelStopsSchedulingAndLetsRunningStepsReturn(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	p := New("t")
	p.Add(
		Step{ID: "slow", Run: func(ctx context.Context, x *Exec) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		}},
		Step{ID: "next", After: []string{"slow"}, Run: func(context.Context, *Exec) error {
			t.Error("a step started after cancellation")
			return nil
		}},
	)
	go func() { <-started; cancel() }()
	rep, err := Run(ctx, p, Options{})
	if !errors.Is(err, ErrCanceled) {
		t.Fatalf("err = %v, want ErrCanceled", err)
	}
	if rep.Steps[1].Status != StatusPending {
		t.Fatalf("next: %s, want pending", rep.Steps[1].Status)
	}
}

func TestCriticalPathIsLongestDependentChain(t *testing.T) {
	t0 := time.Unix(0, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	p := New("t")
	p.Add(Step{ID: "a1", Run: noop}, Step{ID: "a2", After: []string{"a1"}, Run: noop}, Step{ID: "b1", Run: noop})
	sched, err := p.Schedule()
	if err != nil {
		t.Fatal(err)
	}
	r := &Report{}
	dur := map[string]int{"a1": 2, "a2": 3, "b1": 4}
	for _, s := range sched {
		r.Steps = append(r.Steps, StepResult{Scheduled: s, Start: at(0), End: at(dur[s.ID])})
	}
	if got := r.CriticalPath(); got != 5*time.Second {
		t.Fatalf("critical path = %s, want 5s (a1 then a2)", got)
	}
}

func TestEventRenderingIsStable(t *testing.T) {
	fixed := func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	st := newState()
	st.set("vm/b")
	build := func() *Plan {
		p := New("demo")
		for _, h := range []string{"a", "b"} {
			p.Add(ensure(st, "vm/"+h, h))
		}
		p.Add(Step{ID: "flux", Title: "Bootstrap Flux", After: []string{"vm/a", "vm/b"}, Run: func(ctx context.Context, x *Exec) error {
			if err := x.Wet("install Flux\nsource-controller, kustomize-controller", func(context.Context) error { return nil }); err != nil {
				return err
			}
			return x.Wait("Kustomizations Ready", func(context.Context) error { return nil })
		}})
		return p
	}
	rec := &Recorder{}
	if _, err := Run(context.Background(), build(), Options{DryRun: true, Sink: rec, Now: fixed}); err != nil {
		t.Fatal(err)
	}
	var text, jsonl, progress bytes.Buffer
	if err := WritePlan(&text, rec.Events()); err != nil {
		t.Fatal(err)
	}
	js, pr := NewJSONLines(&jsonl), NewProgress(&progress)
	for _, e := range Ordered(rec.Events()) {
		js.Event(e)
		pr.Event(e)
	}
	golden.Assert(t, "testdata/demo.plan.txt", text.Bytes())
	golden.Assert(t, "testdata/demo.events.jsonl", jsonl.Bytes())
	golden.Assert(t, "testdata/demo.progress.txt", progress.Bytes())
}

func TestKeepGoingRunsIndependentStepsAndBlocksDependentsOfAFailure(t *testing.T) {
	p := New("verify")
	var ran sync.Map
	mark := func(id string) func(context.Context, *Exec) error {
		return func(context.Context, *Exec) error { ran.Store(id, true); return nil }
	}
	p.Add(
		Step{ID: "a", Run: func(context.Context, *Exec) error { return errors.New("a is broken") }},
		Step{ID: "a2", After: []string{"a"}, Run: mark("a2")},
		Step{ID: "a3", After: []string{"a2"}, Run: mark("a3")},
		Step{ID: "b", Run: mark("b")},
		Step{ID: "b2", After: []string{"b"}, Run: mark("b2")},
	)
	rec := &Recorder{}
	rep, err := Run(context.Background(), p, Options{KeepGoing: true, Parallel: 1, Sink: rec})
	if err == nil || !strings.Contains(err.Error(), "a: a is broken") {
		t.Fatalf("err = %v", err)
	}
	got := map[string]Status{}
	for _, s := range rep.Steps {
		got[s.ID] = s.Status
	}
	want := map[string]Status{"a": StatusFailed, "a2": StatusBlocked, "a3": StatusBlocked, "b": StatusDone, "b2": StatusDone}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("statuses = %v, want %v", got, want)
	}
	if _, ok := ran.Load("a2"); ok {
		t.Error("a step waiting on a failed one ran")
	}
	var out bytes.Buffer
	if err := WritePlan(&out, rec.Events()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "- not run: waits for a2, which failed") {
		t.Errorf("plan text lacks the blocked step:\n%s", out.String())
	}
}

func TestCheckReasonIsShownByPlanProgressAndEvents(t *testing.T) {
	p := New("t")
	p.Add(
		Step{ID: "k3s/a", Title: "K3s", Host: "a",
			Check: func(context.Context, func(string)) (Verdict, error) {
				return InPlace("k3s v1.34.4+k3s1 active, config.yaml as rendered"), nil
			}, Run: noop},
		Step{ID: "k3s/b", Title: "K3s", Host: "b",
			Check: func(context.Context, func(string)) (Verdict, error) {
				return ToDo("k3s not installed"), nil
			},
			Run: func(ctx context.Context, x *Exec) error {
				return x.Wet("install k3s", func(ctx context.Context) error {
					Output(ctx)("[INFO]  Downloading K3s")
					return nil
				})
			}},
	)
	rec := &Recorder{}
	var progress bytes.Buffer
	pr := NewProgress(&progress)
	pr.Live = true
	rep, err := Run(context.Background(), p, Options{Sink: Sinks{rec, pr}, Parallel: 1})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Steps[0].Reason == "" || rep.Steps[1].Reason != "k3s not installed" {
		t.Errorf("reasons: %q %q", rep.Steps[0].Reason, rep.Steps[1].Reason)
	}
	var text bytes.Buffer
	if err := WritePlan(&text, rec.Events()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"a  = k3s v1.34.4+k3s1 active, config.yaml as rendered", "b    k3s not installed", "+ install k3s"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("plan lacks %q:\n%s", want, text.String())
		}
	}
	if !strings.Contains(progress.String(), "| [INFO]  Downloading K3s") || !strings.Contains(progress.String(), "\r\033[K") {
		t.Errorf("live progress line missing:\n%q", progress.String())
	}
	if !strings.Contains(progress.String(), "2 steps on 2 hosts") {
		t.Errorf("progress header: %q", progress.String())
	}
	seen := false
	for _, e := range rec.Events() {
		seen = seen || (e.Kind == KindObserved && e.InPlace && e.Step == "k3s/a")
	}
	if !seen {
		t.Error("no observed event with inPlace for k3s/a")
	}
}

func TestPluralsInPlanAndProgress(t *testing.T) {
	p := New("one")
	p.Add(Step{ID: "x", Title: "X", Host: "h", Run: noop})
	rec := &Recorder{}
	var progress bytes.Buffer
	if _, err := Run(context.Background(), p, Options{Sink: Sinks{rec, NewProgress(&progress)}}); err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	_ = WritePlan(&text, rec.Events())
	for _, s := range []string{progress.String(), text.String()} {
		if strings.Contains(s, "1 hosts") || strings.Contains(s, "1 steps") || strings.Contains(s, "1 changes") {
			t.Errorf("plural for one:\n%s", s)
		}
	}
}
