package server

import (
	"strings"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/metrics"
)

func TestWindow(t *testing.T) {
	opened := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	closed := opened.Add(5 * time.Minute)
	now := opened.Add(time.Hour)
	start, end := window(opened, &closed, now)
	if !start.Equal(opened.Add(-10*time.Minute)) || !end.Equal(closed.Add(10*time.Minute)) {
		t.Errorf("5-minute incident: %s .. %s", start, end)
	}
	short := opened.Add(5 * time.Second)
	start, end = window(opened, &short, now)
	if !start.Equal(opened.Add(-time.Minute)) || !end.Equal(short.Add(time.Minute)) {
		t.Errorf("5-second incident: %s .. %s", start, end)
	}
	start, end = window(opened, nil, opened.Add(30*time.Second))
	if !end.Equal(opened.Add(30*time.Second)) || !start.Equal(opened.Add(-time.Minute)) {
		t.Errorf("open incident: %s .. %s", start, end)
	}
}

// The chart draws each series it has, says why one is missing, and
// escapes what it writes.
func TestRenderChart(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	var errs []metrics.Sample
	for i := 0; i < 10; i++ {
		errs = append(errs, metrics.Sample{Time: t0.Add(time.Duration(i) * 10 * time.Second), Value: float64(20 - 2*i)})
	}
	svg := renderChart([]Series{{Name: "error rate", Unit: "%", Color: "#d9534f", Samples: errs},
		{Name: "p99 latency", Unit: "s", Color: "#337ab7", Err: "query <failed> & \"quoted\""}},
		[]Marker{{At: t0.Add(30 * time.Second), Label: "declared"}}, t0, t0.Add(100*time.Second))
	if strings.Count(svg, `<polyline class="series"`) != 1 || !strings.Contains(svg, `data-name="error rate"`) {
		t.Errorf("want one line, the error rate:\n%s", svg)
	}
	if !strings.Contains(svg, "query &lt;failed&gt; &amp; &#34;quoted&#34;") || !strings.Contains(svg, ">declared<") {
		t.Errorf("missing series or marker text:\n%s", svg)
	}
	if !strings.Contains(svg, "22.0%") {
		t.Errorf("the left axis should reach above the peak (20%% × 1.1):\n%s", svg)
	}
}
