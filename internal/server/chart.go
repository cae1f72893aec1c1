package server

import (
	"context"
	"fmt"
	"html"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/rollback-dev/rollback/internal/metrics"
	"github.com/rollback-dev/rollback/internal/store"
)

// Series is one line of a chart.
type Series struct {
	Name    string
	Unit    string // "%" or "s"
	Color   string
	Samples []metrics.Sample
	Err     string // why there is no line
}

// Marker is a vertical line at a moment of the incident.
type Marker struct {
	At    time.Time
	Label string
}

// chartWindow bounds how much is shown before the incident opened and
// after it closed: twice the incident's length (at least 30 s each way),
// at most ten minutes.
const chartWindow = 10 * time.Minute

// window is the chart's time range around an incident.
func window(opened time.Time, closed *time.Time, now time.Time) (start, end time.Time) {
	last := now
	if closed != nil {
		last = *closed
	}
	pad := min(max(2*last.Sub(opened), time.Minute), chartWindow)
	start, end = opened.Add(-pad), last.Add(pad)
	if end.After(now) {
		end = now
	}
	return start, end
}

// chart draws the error rate and the p99 latency around an incident from
// Prometheus, with the incident's declaration and recovery marked.
func (s *Server) chart(w http.ResponseWriter, r *http.Request) {
	v, err := s.view(r.Context(), r.PathValue("id"))
	if err != nil {
		http.Error(w, err.Error(), statusOf(err))
		return
	}
	inc := v.Incident
	start, end := window(inc.OpenedAt, inc.ClosedAt, s.o.Now())
	marks := []Marker{{At: inc.OpenedAt, Label: "declared"}}
	if v.TimeToRecoverSeconds > 0 {
		marks = append(marks, Marker{At: inc.OpenedAt.Add(time.Duration(v.TimeToRecoverSeconds * float64(time.Second))), Label: "recovered"})
	}
	series := s.incidentSeries(r.Context(), inc, start, end)
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprint(w, renderChart(series, marks, start, end))
}

// incidentSeries queries the service's verify queries over the window,
// each bounded by the outbound timeout.
func (s *Server) incidentSeries(ctx context.Context, inc *store.Incident, start, end time.Time) []Series {
	out := []Series{{Name: "error rate", Unit: "%", Color: "#d9534f"}, {Name: "p99 latency", Unit: "s", Color: "#337ab7"}}
	var errQ, latQ, prom string
	if s.o.Config != nil {
		if svc := s.o.Config.Services[inc.Service]; svc != nil && svc.Verify != nil {
			errQ, latQ, prom = svc.Verify.ErrorRateQuery, svc.Verify.LatencyQuery, svc.Verify.Prometheus
		}
	}
	if prom == "" {
		prom = s.o.Prometheus
	}
	if prom == "" {
		out[0].Err, out[1].Err = "no Prometheus (verify.prometheus or serve --prometheus)", "no Prometheus"
		return out
	}
	p, err := metrics.NewPrometheus(prom)
	if err != nil {
		out[0].Err, out[1].Err = err.Error(), err.Error()
		return out
	}
	step := max(end.Sub(start)/120, 5*time.Second)
	for i, q := range []string{errQ, latQ} {
		if q == "" {
			out[i].Err = "no verify query configured"
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, s.o.OutboundTimeout)
		out[i].Samples, err = p.QueryRange(qctx, q, start, end, step)
		cancel()
		if err != nil {
			out[i].Err = err.Error()
		}
		if i == 0 {
			for j := range out[i].Samples {
				out[i].Samples[j].Value *= 100
			}
		}
	}
	return out
}

// renderChart draws series on one time axis, each on its own scale (left
// for the first, right for the second), as an SVG document.
func renderChart(series []Series, marks []Marker, start, end time.Time) string {
	const W, H, left, right, top, bottom = 760, 260, 60, 60, 20, 40
	pw, ph := float64(W-left-right), float64(H-top-bottom)
	span := end.Sub(start).Seconds()
	if span <= 0 {
		span = 1
	}
	x := func(t time.Time) float64 { return left + pw*t.Sub(start).Seconds()/span }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11" role="img" aria-label="error rate and p99 latency around the rollback">`, W, H, W, H)
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="#fff"/>`, W, H)
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="#fafafa" stroke="#ccc"/>`, left, top, pw, ph)
	for i := 0; i <= 4; i++ {
		t := start.Add(time.Duration(float64(i) / 4 * span * float64(time.Second)))
		fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle" fill="#555">%s</text>`, x(t), H-bottom+16, t.UTC().Format("15:04:05"))
	}
	for i, s := range series {
		if i > 1 {
			break
		}
		axisX, anchor := left-6, "end"
		if i == 1 {
			axisX, anchor = W-right+6, "start"
		}
		maxV := 0.0
		for _, p := range s.Samples {
			if !math.IsNaN(p.Value) && !math.IsInf(p.Value, 0) {
				maxV = math.Max(maxV, p.Value)
			}
		}
		if maxV == 0 {
			maxV = 1
		}
		maxV *= 1.1
		y := func(v float64) float64 { return top + ph - ph*v/maxV }
		for j := 0; j <= 2; j++ {
			v := maxV * float64(j) / 2
			fmt.Fprintf(&b, `<text x="%d" y="%.0f" text-anchor="%s" fill="%s">%s</text>`, axisX, y(v)+4, anchor, s.Color, fmtValue(v, s.Unit))
		}
		if len(s.Samples) == 0 {
			msg := s.Err
			if msg == "" {
				msg = "no data"
			}
			fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle" fill="%s">%s: %s</text>`, left+pw/2, float64(top)+ph/2+float64(i*16), s.Color, html.EscapeString(s.Name), html.EscapeString(clip(msg, 90)))
			continue
		}
		var pts []string
		for _, p := range s.Samples {
			if math.IsNaN(p.Value) || math.IsInf(p.Value, 0) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.Time), y(p.Value)))
		}
		fmt.Fprintf(&b, `<polyline class="series" data-name="%s" fill="none" stroke="%s" stroke-width="2" points="%s"/>`, html.EscapeString(s.Name), s.Color, strings.Join(pts, " "))
	}
	for i, m := range marks {
		if m.At.Before(start) || m.At.After(end) {
			continue
		}
		mx := x(m.At)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%.0f" stroke="#333" stroke-dasharray="4 3"/><text x="%.1f" y="%d" fill="#333">%s</text>`, mx, mx, top, float64(top)+ph, mx+3, top+12+14*i, html.EscapeString(m.Label))
	}
	lx := left
	for _, s := range series {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="4" fill="%s"/><text x="%d" y="%d" fill="#333">%s</text>`, lx, H-10, s.Color, lx+16, H-6, html.EscapeString(s.Name))
		lx += 130
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func fmtValue(v float64, unit string) string {
	switch unit {
	case "%":
		return fmt.Sprintf("%.1f%%", v)
	case "s":
		if v < 1 {
			return fmt.Sprintf("%.0fms", v*1000)
		}
		return fmt.Sprintf("%.2fs", v)
	}
	return fmt.Sprintf("%.2f", v)
}
