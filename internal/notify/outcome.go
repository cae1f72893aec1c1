package notify

import (
	"fmt"
	"strings"
	"sync"
)

// Outcome is one notification's result, as a communication step's
// evidence reports it.
type Outcome struct {
	Text      string
	Delivered bool
}

// All runs the notifiers side by side (a hung one costs its own timeout,
// not the others') and returns their outcomes in order. A notifier's panic
// is an outcome like its failures: it must not take the process, and the
// rollback beside it, down.
func All(fns []func() []Outcome) []Outcome {
	out := make([][]Outcome, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					out[i] = []Outcome{{Text: fmt.Sprintf("notifier failed: panic: %v", r)}}
				}
			}()
			out[i] = fn()
		}()
	}
	wg.Wait()
	var all []Outcome
	for _, o := range out {
		all = append(all, o...)
	}
	return all
}

// Evidence is a communication step's evidence: head, then notNotified
// when no outcome was delivered, then every outcome's text.
func Evidence(head, notNotified string, os []Outcome) string {
	parts := []string{head}
	delivered := false
	for _, o := range os {
		delivered = delivered || o.Delivered
	}
	if !delivered {
		parts = append(parts, notNotified)
	}
	for _, o := range os {
		parts = append(parts, o.Text)
	}
	return strings.Join(parts, "; ")
}
