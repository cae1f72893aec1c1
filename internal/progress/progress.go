// Package progress defines the step events long operations report (a
// Kubernetes rollback, a down migration) and the CLI renders.
package progress

import "time"

// Event reports a step starting, a status message within it, or its end.
type Event struct {
	Time    time.Time
	Step    string
	Message string
	Phase   Phase
	Err     error
}

// Phase of an Event.
type Phase int

// Event phases.
const (
	Started Phase = iota
	Progress
	Done
	Failed
)

// Func receives events; a nil Func drops them.
type Func func(Event)

// Emit sends an event if f is not nil.
func (f Func) Emit(now time.Time, step string, ph Phase, msg string, err error) {
	if f != nil {
		f(Event{Time: now, Step: step, Phase: ph, Message: msg, Err: err})
	}
}

// Run wraps fn as a step: Started, then Done with fn's message or Failed.
func (f Func) Run(now func() time.Time, step string, fn func() (string, error)) error {
	f.Emit(now(), step, Started, "", nil)
	msg, err := fn()
	if err != nil {
		f.Emit(now(), step, Failed, msg, err)
		return err
	}
	f.Emit(now(), step, Done, msg, nil)
	return nil
}
