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
		Check: func(context.Context, func(string)) (bool, error) { return st.has(id), nil },
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
