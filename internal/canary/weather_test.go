package canary

import (
	"math/rand/v2"
	"testing"
)

// Scrapes hold the counts back and hand them over whole: nothing is seen
// before the first scrape's lag, and nothing is lost.
func TestWeatherScrapeLag(t *testing.T) {
	w := Weather{ScrapeEvery: 15, ScrapeLag: 15}
	rng := rand.New(rand.NewPCG(1, 1))
	s := Stream{RPS: 20, ErrorRate: 0.1}
	var seen float64
	for sec := 1; sec <= 29; sec++ {
		c, b := w.Next(rng, s, s)
		if c.Requests != 0 || b.Requests != 0 {
			t.Fatalf("second %d: counts seen before the first scrape's lag: %+v %+v", sec, c, b)
		}
	}
	c, _ := w.Next(rng, s, s)
	if c.Requests < 150 || c.Requests > 450 {
		t.Fatalf("second 30 shows %v requests, want the first 15 s (~300)", c.Requests)
	}
	seen += c.Requests
	for sec := 31; sec <= 45; sec++ {
		c, _ := w.Next(rng, s, s)
		if sec != 45 && c.Requests != 0 {
			t.Fatalf("second %d: seen between scrapes", sec)
		}
		seen += c.Requests
	}
	if seen < 400 {
		t.Errorf("two scrapes showed %v requests", seen)
	}
}

// Bursts multiply both streams' traffic at once; blips raise one stream's
// errors.
func TestWeatherBurstsAndBlips(t *testing.T) {
	w := Weather{BurstEvery: 1, BurstLength: 1000, BurstFactor: 5}
	rng := rand.New(rand.NewPCG(2, 1))
	s := Stream{RPS: 20}
	var c, b float64
	for i := 0; i < 100; i++ {
		x, y := w.Next(rng, s, s)
		c, b = c+x.Requests, b+y.Requests
	}
	if c < 8000 || b < 8000 {
		t.Errorf("bursts: %v and %v requests in 100 s at 20/s ×5", c, b)
	}
	w = Weather{BlipEvery: 1, BlipLength: 1000, BlipRate: 0.5}
	var errs float64
	for i := 0; i < 100; i++ {
		x, _ := w.Next(rng, Stream{RPS: 20}, Stream{RPS: 20})
		errs += x.Errors
	}
	if errs < 500 {
		t.Errorf("blips: %v errors in 2000 requests at 50%%", errs)
	}
}
