package canary

import (
	"math"
	"math/rand/v2"
)

// Stream is synthetic traffic: requests per second and an error rate.
type Stream struct {
	RPS       float64
	ErrorRate float64
}

// Next draws one second of traffic: Poisson requests, binomial errors.
func (s Stream) Next(rng *rand.Rand) Counts {
	n := poisson(rng, s.RPS)
	e := 0
	for i := 0; i < n; i++ {
		if rng.Float64() < s.ErrorRate {
			e++
		}
	}
	return Counts{Requests: float64(n), Errors: float64(e)}
}

func poisson(rng *rand.Rand, lambda float64) int {
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// FlaggerDefault is Flagger's default analysis on a request stream: every
// Interval seconds the canary's success rate over the interval is checked
// against MinSuccess percent; Threshold failed checks roll back.
type FlaggerDefault struct {
	Interval   int     // seconds (default 60)
	Threshold  int     // failed checks (default 3)
	MinSuccess float64 // percent (default 99)

	sec    int
	acc    Counts
	failed int
}

// Observe adds one second of canary traffic; true means roll back.
func (f *FlaggerDefault) Observe(c Counts) bool {
	iv, thr, min := f.Interval, f.Threshold, f.MinSuccess
	if iv <= 0 {
		iv = 60
	}
	if thr <= 0 {
		thr = 3
	}
	if min <= 0 {
		min = 99
	}
	f.sec++
	f.acc.Requests += c.Requests
	f.acc.Errors += c.Errors
	if f.sec%iv != 0 {
		return false
	}
	if f.acc.Requests > 0 && 100*(1-f.acc.Errors/f.acc.Requests) < min {
		f.failed++
	}
	f.acc = Counts{}
	return f.failed >= thr
}
