package canary

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/metrics"
)

// timeToDetect feeds seconds of canary and baseline traffic to the
// sequential test and returns the second it breached, or -1.
func timeToDetect(seed uint64, canary, baseline Stream, limit int) int {
	rng := rand.New(rand.NewPCG(seed, 7))
	s := &Sequential{}
	for sec := 1; sec <= limit; sec++ {
		if s.Observe(canary.Next(rng), baseline.Next(rng), time.Second).Breach {
			return sec
		}
	}
	return -1
}

func TestSequentialCatchesABrokenCanaryFast(t *testing.T) {
	broken, base := Stream{RPS: 20, ErrorRate: 0.05}, Stream{RPS: 20, ErrorRate: 0.001}
	for seed := uint64(1); seed <= 50; seed++ {
		if got := timeToDetect(seed, broken, base, 600); got < 0 || got > 120 {
			t.Errorf("seed %d: a 5%% canary against a 0.1%% baseline detected at %ds, want within 2 minutes", seed, got)
		}
	}
}

func TestSequentialLeavesAHealthyCanaryAlone(t *testing.T) {
	healthy := Stream{RPS: 20, ErrorRate: 0.001}
	for seed := uint64(1); seed <= 30; seed++ {
		if got := timeToDetect(seed, healthy, healthy, 3600); got >= 0 {
			t.Errorf("seed %d: a healthy canary was flagged at %ds", seed, got)
		}
	}
}

func TestSequentialNeedsTheAbsoluteFloor(t *testing.T) {
	// 0.5% against a perfect baseline is relatively worse but under 1%.
	if got := timeToDetect(3, Stream{RPS: 20, ErrorRate: 0.005}, Stream{RPS: 20, ErrorRate: 0}, 1800); got >= 0 {
		t.Errorf("flagged at %ds below the 1%% floor", got)
	}
}

func TestSequentialIgnoresEmptyIntervals(t *testing.T) {
	s := &Sequential{}
	if v := s.Observe(Counts{}, Counts{Requests: 10}, time.Second); v.Breach || v.LLR != 0 {
		t.Errorf("no canary traffic moved the test: %+v", v)
	}
}

// A blip (10 seconds of 10% errors on a healthy canary, one interval a
// second or one 15-second scrape) is not a breach; the same errors for
// longer are, as soon as they have lasted about two thirds of MinSpan.
// Without the span limit the blip alone rolls back.
func TestSequentialRidesOutABlip(t *testing.T) {
	feed := func(s *Sequential, every, blipFrom, blipTo, until int) int {
		var c, b Counts
		for sec := 1; sec <= until; sec++ {
			c.Requests, b.Requests = c.Requests+20, b.Requests+20
			if sec >= blipFrom && sec < blipTo {
				c.Errors += 2
			}
			if sec%every == 0 {
				if s.Observe(c, b, time.Duration(every)*time.Second).Breach {
					return sec
				}
				c, b = Counts{}, Counts{}
			}
		}
		return -1
	}
	for _, every := range []int{1, 5, 15} {
		if got := feed(&Sequential{}, every, 16, 26, 600); got >= 0 {
			t.Errorf("every %ds: a 10-second blip breached at %ds", every, got)
		}
		if got := feed(&Sequential{}, every, 16, 600, 600); got < 0 || got > 16+45 {
			t.Errorf("every %ds: lasting errors breached at %ds, want within 45 s of their start", every, got)
		} else if got < 16+15 {
			t.Errorf("every %ds: lasting errors breached at %ds, sooner than the span allows", every, got)
		}
		if got := feed(&Sequential{MinSpan: -1}, every, 16, 26, 600); got < 0 {
			t.Errorf("every %ds: without the span limit the blip did not breach (the test above proves nothing)", every)
		}
	}
}

// A canary relatively worse than a perfect baseline but under the 1%
// floor (0.83% for its first 2 minutes, then clean) has its evidence
// parked; a blip that then lifts the test's rate over the floor must not
// roll it back alone, and the same canary failing for real is caught.
// (A canary that stays relatively worse rebuilds its evidence, and a blip
// on top of that can cross: it is worse, and the blip lifts it over the
// floor.)
func TestSequentialParkedCanaryRidesOutABlip(t *testing.T) {
	run := func(blipFrom, blipTo, until int) int {
		s := &Sequential{}
		for sec := 1; sec <= until; sec++ {
			c := Counts{Requests: 20}
			if sec%6 == 0 && sec <= 120 {
				c.Errors++
			}
			if sec >= blipFrom && sec < blipTo {
				c.Errors += 2
			}
			if s.Observe(c, Counts{Requests: 20}, time.Second).Breach {
				return sec
			}
		}
		return -1
	}
	if got := run(130, 140, 400); got >= 0 {
		t.Errorf("a parked canary breached at %ds on a 10-second blip", got)
	}
	if got := run(130, 400, 400); got < 0 || got > 130+45 {
		t.Errorf("a parked canary failing for real breached at %ds, want within 45 s of 130 s", got)
	}
}

func TestFlaggerDefault(t *testing.T) {
	f := &FlaggerDefault{}
	rng := rand.New(rand.NewPCG(1, 2))
	broken := Stream{RPS: 20, ErrorRate: 0.05}
	sec := 0
	for sec = 1; sec <= 600; sec++ {
		if f.Observe(broken.Next(rng)) {
			break
		}
	}
	if sec != 180 {
		t.Errorf("Flagger's default (1m interval, threshold 3) rolled back at %ds, want 180s", sec)
	}
}

// fakeProvider answers queries from a map; missing queries have no data.
type fakeProvider map[string]float64

func (f fakeProvider) Query(_ context.Context, q string, _ time.Time) (float64, error) {
	v, ok := f[q]
	if !ok {
		return 0, metrics.ErrNoData
	}
	return v, nil
}

func (f fakeProvider) QueryRange(context.Context, string, time.Time, time.Time, time.Duration) ([]metrics.Sample, error) {
	return nil, metrics.ErrNoData
}

var _ metrics.Provider = fakeProvider(nil)

func TestAnalyzerThresholds(t *testing.T) {
	a := SeedAnalysis(`app="transaction-service"`)
	sr, lat := a.Checks[0].Query, a.Checks[1].Query
	ctx := context.Background()
	z := &Analyzer{A: a, P: fakeProvider{sr: 99.5, lat: 120}}
	if r, _ := z.Evaluate(ctx, time.Now()); r.Rollback || r.Failed != 0 {
		t.Fatalf("healthy: %+v", r)
	}
	z.P = fakeProvider{sr: 97, lat: 120}
	for i := 1; i <= 3; i++ {
		r, err := z.Evaluate(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if r.Rollback != (i == 3) {
			t.Errorf("evaluation %d: rollback %v, want %v (threshold 3)", i, r.Rollback, i == 3)
		}
		if i == 3 && !strings.Contains(r.Reason, "3 failed checks") {
			t.Errorf("reason %q", r.Reason)
		}
	}
	// p99 latency over 500ms fails too.
	z = &Analyzer{A: a, P: fakeProvider{sr: 100, lat: 750}}
	r, _ := z.Evaluate(ctx, time.Now())
	if r.Values[1].Passed || !strings.Contains(r.Values[1].Message, "above the maximum 500") {
		t.Errorf("latency check: %+v", r.Values[1])
	}
	// No data is inconclusive, never healthy.
	z = &Analyzer{A: a, P: fakeProvider{}}
	r, _ = z.Evaluate(ctx, time.Now())
	if r.Inconclusive != 2 || r.Values[0].Passed {
		t.Errorf("no data: %+v", r)
	}
	r, _ = z.Evaluate(ctx, time.Now())
	if !r.Rollback || !strings.Contains(r.Reason, "inconclusive") {
		t.Errorf("inconclusive limit: %+v", r)
	}
}
