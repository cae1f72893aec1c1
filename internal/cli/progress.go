package cli

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/progress"
)

func stepTitle(s string) string { return engine.Title(s) }

// renderer renders step events: on a terminal a live line per step with a
// running timer, otherwise plain timestamped lines.
type renderer struct {
	w     io.Writer
	tty   bool
	color bool
	now   func() time.Time

	mu      sync.Mutex
	step    string
	msg     string
	started time.Time
	stop    chan struct{}
	done    chan struct{}
}

func newRenderer(s *IOStreams, now func() time.Time) *renderer {
	return &renderer{w: s.ErrOut, tty: s.ErrTTY, color: s.Color, now: now}
}

// Event renders one progress event.
func (p *renderer) Event(e progress.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.tty {
		p.plain(e)
		return
	}
	switch e.Phase {
	case progress.Started:
		if p.stop != nil { // a nested step starts: stop the outer one's timer line
			close(p.stop)
			p.mu.Unlock()
			<-p.done
			p.mu.Lock()
			p.stop = nil
			fmt.Fprint(p.w, "\r\033[K")
		}
		p.step, p.msg, p.started = e.Step, "", e.Time
		p.stop, p.done = make(chan struct{}), make(chan struct{})
		go p.tick(p.stop, p.done)
	case progress.Progress:
		p.msg = e.Message
	case progress.Done, progress.Failed:
		if p.stop != nil && p.step == e.Step {
			close(p.stop)
			p.mu.Unlock()
			<-p.done
			p.mu.Lock()
			p.stop = nil
		}
		start := p.started
		if p.step != e.Step {
			start = e.Time
		}
		mark, col := "✓", "32"
		msg := e.Message
		if e.Phase == progress.Failed {
			mark, col = "✗", "31"
			if e.Err != nil {
				msg = e.Err.Error()
			}
		}
		fmt.Fprintf(p.w, "\r\033[K%s %-22s %6s  %s\n", p.paint(col, mark), stepTitle(e.Step), fmtDur(e.Time.Sub(start)), msg)
		p.step = ""
	}
}

func (p *renderer) tick(stop, done chan struct{}) {
	defer close(done)
	frames := []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for i := 0; ; i++ {
		p.mu.Lock()
		fmt.Fprintf(p.w, "\r\033[K%s %-22s %6s  %s", p.paint("36", frames[i%len(frames)]), stepTitle(p.step), fmtDur(p.now().Sub(p.started)), p.msg)
		p.mu.Unlock()
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func (p *renderer) plain(e progress.Event) {
	ts := e.Time.UTC().Format(time.RFC3339)
	switch e.Phase {
	case progress.Started:
		fmt.Fprintf(p.w, "%s  %s: started\n", ts, stepTitle(e.Step))
	case progress.Progress:
		fmt.Fprintf(p.w, "%s  %s: %s\n", ts, stepTitle(e.Step), e.Message)
	case progress.Done:
		fmt.Fprintf(p.w, "%s  %s: done: %s\n", ts, stepTitle(e.Step), e.Message)
	case progress.Failed:
		fmt.Fprintf(p.w, "%s  %s: failed: %v\n", ts, stepTitle(e.Step), e.Err)
	}
}

func (p *renderer) paint(code, s string) string {
	if !p.color {
		return s
	}
	return "\033[" + code + "m" + s + "\033[0m"
}

func fmtDur(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
}
