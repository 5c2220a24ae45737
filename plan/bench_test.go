package plan

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// latencyPlan is 3 hosts × steps per host, each step sleeping a latency
// that differs by host and step (1–5 units), with a cross-host dependency
// in the middle like a join waiting for the first server. A phase-barrier
// engine would pay the slowest host at every step; a DAG engine pays only
// the critical path.
func latencyPlan(steps int, unit time.Duration) *Plan {
	p := New("bench")
	hosts := []string{"h0", "h1", "h2"}
	for k := range steps {
		for hi, h := range hosts {
			var after []string
			if k > 0 {
				after = append(after, fmt.Sprintf("%s/%d", h, k-1))
			}
			if k == steps/2 && hi > 0 {
				after = append(after, fmt.Sprintf("h0/%d", k))
			}
			d := unit * time.Duration(1+(hi*7+k*3)%5)
			p.Add(Step{
				ID: fmt.Sprintf("%s/%d", h, k), Title: fmt.Sprint("step ", k), Host: h, After: after,
				Run: func(ctx context.Context, x *Exec) error {
					return x.Wet("sleep", func(context.Context) error { time.Sleep(d); return nil })
				},
			})
		}
	}
	return p
}

// BenchmarkEngineWallOverCriticalPath reports wall time / critical path
// (goal ≤ 1.05) for 3 hosts × N steps with simulated latencies.
func BenchmarkEngineWallOverCriticalPath(b *testing.B) {
	for _, steps := range []int{5, 20} {
		b.Run(fmt.Sprintf("3x%d", steps), func(b *testing.B) {
			var ratio float64
			for range b.N {
				rep, err := Run(context.Background(), latencyPlan(steps, time.Millisecond), Options{})
				if err != nil {
					b.Fatal(err)
				}
				ratio += float64(rep.Wall()) / float64(rep.CriticalPath())
			}
			b.ReportMetric(ratio/float64(b.N), "wall/critical")
		})
	}
}

// BenchmarkEngineOverheadPerStep runs steps that do nothing but one Wet
// change, so the time is the engine's own: scheduling, events, locking.
func BenchmarkEngineOverheadPerStep(b *testing.B) {
	const steps = 100
	for range b.N {
		if _, err := Run(context.Background(), latencyPlan(steps, 0), Options{Sink: &Recorder{}}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*3*steps), "ns/step")
}
