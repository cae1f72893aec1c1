package canary

import (
	"fmt"
	"math"
	"time"
)

// Counts are the requests and errors one side served in one interval.
type Counts struct {
	Requests, Errors float64
}

// Sequential is a sequential probability ratio test (Wald) on the errors
// of canary and baseline. Conditioned on the total number of errors in an
// interval, the canary's share of them is binomial: under H0 (the canary
// is as good as the baseline) with p0 = its share of the traffic; under H1
// (the canary's error rate is Ratio times the baseline's) with
// p1 = Ratio·n_c / (Ratio·n_c + n_b). Each error moves the log-likelihood
// ratio; crossing log((1-β)/α) means breach, crossing log(β/(1-α)) accepts
// H0 and the test starts over, so a long healthy canary keeps being
// watched. Traffic changes between intervals are handled because p0 and p1
// are recomputed per interval.
//
// Errors in production are not independent: a healthy canary has blips (a
// pod restarting, a dependency timing out for seconds) whose few seconds
// of errors are, to a test that assumes independence, strong evidence.
// So evidence against the canary is rationed: it accrues as credit at the
// whole threshold per MinSpan of data, an interval spends at most the
// credit it has, and the credit never exceeds a third of the threshold. A
// breach then needs an excess seen in at least three intervals and over
// about two thirds of MinSpan; a 10-second blip supplies at most 1/3 +
// 10 s/MinSpan of the threshold and cannot roll back a canary alone.
// Evidence for the canary (its share of errors under its share of
// traffic) is not rationed.
type Sequential struct {
	Ratio float64 // error-rate ratio to detect (default 5)
	Alpha float64 // false breach probability per test (default 1e-4)
	Beta  float64 // missed breach probability (default 0.01)
	// MinErrorRate: a breach also needs the canary's observed error rate
	// over the current test to reach this (default 0.01, the runbook's 1%),
	// so a canary at 0.3% against a perfect baseline is not rolled back.
	MinErrorRate float64
	// MinSpan: the evidence accrues at most the threshold per MinSpan of
	// data, from a starting third, so reaching it takes at least about
	// two thirds of MinSpan and three intervals (default DefaultMinSpan;
	// negative: no limit).
	MinSpan time.Duration

	llr        float64
	reqs, errs float64
	credit     float64
	started    bool
}

// Verdict of one step of the test.
type Verdict struct {
	Breach bool    `json:"breach"`
	LLR    float64 `json:"llr"`
	Upper  float64 `json:"upper"`
	Lower  float64 `json:"lower"`
	Reason string  `json:"reason,omitempty"`
}

func (s *Sequential) defaults() (ratio, alpha, beta, minRate float64) {
	ratio, alpha, beta, minRate = s.Ratio, s.Alpha, s.Beta, s.MinErrorRate
	if ratio <= 1 {
		ratio = 5
	}
	if alpha <= 0 {
		alpha = 1e-4
	}
	if beta <= 0 {
		beta = 0.01
	}
	if minRate <= 0 {
		minRate = 0.01
	}
	return
}

// DefaultMinSpan is Sequential's default MinSpan: chosen on the tuning
// seeds of bench/canarybench (a 10-second blip of 10% errors supplies at
// most 1/3 + 10/30 of the threshold).
const DefaultMinSpan = 30 * time.Second

// burstShare is the most evidence one interval may add, as a share of the
// threshold: a breach needs at least three intervals (scrapes) of it.
const burstShare = 1.0 / 3

// parkShare is where a rationed test holds the evidence of a canary that
// is relatively worse than the baseline but under the floor.
const parkShare = 0.3

// Observe adds the counts of one interval of length d (the span of
// traffic they cover) and returns the test's verdict.
func (s *Sequential) Observe(canary, baseline Counts, d time.Duration) Verdict {
	ratio, alpha, beta, minRate := s.defaults()
	upper, lower := math.Log((1-beta)/alpha), math.Log(beta/(1-alpha))
	v := Verdict{Upper: upper, Lower: lower}
	if canary.Requests <= 0 || baseline.Requests <= 0 {
		v.LLR = s.llr
		return v
	}
	p0 := canary.Requests / (canary.Requests + baseline.Requests)
	p1 := ratio * canary.Requests / (ratio*canary.Requests + baseline.Requests)
	step := canary.Errors*math.Log(p1/p0) + baseline.Errors*math.Log((1-p1)/(1-p0))
	span := s.MinSpan
	if span == 0 {
		span = DefaultMinSpan
	}
	d = max(d, 0)
	if span > 0 {
		burst := upper * burstShare
		if !s.started {
			s.credit, s.started = burst, true
		}
		s.credit = min(burst, s.credit+upper*d.Seconds()/span.Seconds())
		if step > s.credit {
			step = s.credit
		}
		if step > 0 {
			s.credit -= step
		}
	}
	s.llr += step
	s.reqs += canary.Requests
	s.errs += canary.Errors
	v.LLR = s.llr
	rate := s.errs / s.reqs
	switch {
	case s.llr >= upper*(1-1e-9) && rate >= minRate: // three capped steps reach it
		v.Breach = true
		v.Reason = fmt.Sprintf("canary error rate %.2f%% is at least %.0fx the baseline's (sequential test: log-likelihood ratio %.1f ≥ %.1f, α=%g)", 100*rate, ratio, s.llr, upper, alpha)
	case s.llr <= lower:
		s.reset() // healthy so far: accept H0 and keep watching
	case s.llr >= upper:
		// Relatively worse but under the absolute floor: keep the
		// evidence from running away. Rationed, it is parked low enough
		// that a blip (at most the credit, a third, and a 10-second
		// accrual, a third at the default span) cannot cross from there
		// on its own once the rate reaches the floor.
		s.llr = upper
		if span > 0 {
			s.llr = upper * parkShare
		}
	}
	return v
}

func (s *Sequential) reset() { s.llr, s.reqs, s.errs = 0, 0, 0 }
