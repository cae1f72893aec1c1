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

// Weather is what makes real request streams unkind to a detector, shared
// by the canary and the baseline where production shares it:
//   - traffic bursts (both streams): RPS times BurstFactor for BurstLength
//     seconds, starting each second with probability 1/BurstEvery;
//   - error blips (each stream on its own, a healthy one too: a pod
//     restarting, a dependency timing out): BlipRate errors for BlipLength
//     seconds, starting with probability 1/BlipEvery;
//   - scrape lag: counts reach the detector only at each ScrapeEvery-th
//     second's scrape, ScrapeLag seconds after it.
type Weather struct {
	BurstEvery, BurstLength int
	BurstFactor             float64
	BlipEvery, BlipLength   int
	BlipRate                float64
	ScrapeEvery, ScrapeLag  int

	burst   int
	blip    [2]int
	pending []pendingScrape
	acc     [2]Counts
	sec     int
}

type pendingScrape struct {
	at     int
	counts [2]Counts
}

// Next draws one second of canary and baseline traffic under the weather
// and returns what the detector sees this second (zero counts between
// scrapes).
func (w *Weather) Next(rng *rand.Rand, canary, base Stream) (Counts, Counts) {
	w.sec++
	if w.burst > 0 {
		w.burst--
	} else if w.BurstEvery > 0 && rng.IntN(w.BurstEvery) == 0 {
		w.burst = w.BurstLength
	}
	factor := 1.0
	if w.burst > 0 {
		factor = w.BurstFactor
	}
	var got [2]Counts
	for i, s := range []Stream{canary, base} {
		if w.blip[i] > 0 {
			w.blip[i]--
		} else if w.BlipEvery > 0 && rng.IntN(w.BlipEvery) == 0 {
			w.blip[i] = w.BlipLength
		}
		s.RPS *= factor
		if w.blip[i] > 0 && w.BlipRate > s.ErrorRate {
			s.ErrorRate = w.BlipRate
		}
		got[i] = s.Next(rng)
	}
	if w.ScrapeEvery <= 1 && w.ScrapeLag <= 0 {
		return got[0], got[1]
	}
	for i := range got {
		w.acc[i].Requests += got[i].Requests
		w.acc[i].Errors += got[i].Errors
	}
	every := max(w.ScrapeEvery, 1)
	if w.sec%every == 0 {
		w.pending = append(w.pending, pendingScrape{at: w.sec + w.ScrapeLag, counts: w.acc})
		w.acc = [2]Counts{}
	}
	var seen [2]Counts
	for len(w.pending) > 0 && w.pending[0].at <= w.sec {
		for i := range seen {
			seen[i].Requests += w.pending[0].counts[i].Requests
			seen[i].Errors += w.pending[0].counts[i].Errors
		}
		w.pending = w.pending[1:]
	}
	return seen[0], seen[1]
}
