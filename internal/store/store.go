// Package store keeps rollback's state: incidents, their journal of
// events (with idempotency keys so a resumed run never repeats a side
// effect), per-service leases (one run per service at a time) and blocked
// versions. One Store interface, two implementations on database/sql:
// embedded SQLite (pure Go, the default) and PostgreSQL (for teams and the
// controller). The schema is versioned and upgrades itself on Open.
package store

import (
	"context"
	"errors"
	"strconv"
	"time"
)

// Errors the Store returns.
var (
	// ErrNotFound: no such incident or block.
	ErrNotFound = errors.New("not found")
	// ErrLeaseHeld: another holder has the service's lease; see LeaseError.
	ErrLeaseHeld = errors.New("lease held")
)

// LeaseError says who holds a lease and since when.
type LeaseError struct{ Lease Lease }

func (e *LeaseError) Error() string {
	return "a rollback of " + e.Lease.Service + " is already running: held by " + e.Lease.Holder +
		" since " + e.Lease.Since.UTC().Format(time.RFC3339) + " (expires " + e.Lease.Expires.UTC().Format(time.RFC3339) + ")"
}

func (e *LeaseError) Unwrap() error { return ErrLeaseHeld }

// RunLocker is implemented by stores that can back the lease with a lock
// the database itself drops when the holder's connection dies: with
// PostgreSQL a session advisory lock, so a run whose lease expired while it
// still works (a stalled renewal, a clock jump) still keeps a second run out.
type RunLocker interface {
	// LockRun takes the service's run lock for holder; a lock held by
	// another session is a *LockError.
	LockRun(ctx context.Context, service, holder string) (RunLock, error)
}

// RunLock is a held run lock.
type RunLock interface {
	// Check confirms the lock is still held. When its connection was lost
	// (the database restarted) it takes the lock again on a new one; a
	// *LockError means another session took it meanwhile.
	Check(ctx context.Context) error
	// Unlock releases the lock.
	Unlock()
}

// LockError says which session holds a service's run lock.
type LockError struct {
	Service string
	Holder  string // the holder's application_name, "" if not visible
	PID     int    // the holder's server process
	Since   time.Time
}

func (e *LockError) Error() string {
	who := e.Holder
	if who == "" {
		who = "another session"
	}
	s := "a rollback of " + e.Service + " is already running: PostgreSQL advisory lock held by " + who
	if e.PID > 0 {
		s += " (backend pid " + strconv.Itoa(e.PID)
		if !e.Since.IsZero() {
			s += ", connected since " + e.Since.UTC().Format(time.RFC3339)
		}
		s += ")"
	}
	return s
}

func (e *LockError) Unwrap() error { return ErrLeaseHeld }

// Shared reports whether s can be shared by processes on several machines
// (PostgreSQL), as replicas of 'rollback serve' need; an SQLite file is
// one machine's.
func Shared(s Store) bool {
	ss, ok := s.(*sqlStore)
	return ok && ss.postgres
}

// Status is an incident's state.
type Status string

// Incident states.
const (
	StatusOpen   Status = "open"
	StatusClosed Status = "closed"
	// StatusProposed: a trigger (an alert) proposed a rollback that waits
	// for a person's approval; nothing has changed yet.
	StatusProposed Status = "proposed"
	// StatusDeclined: a proposal a person (or a newer incident) ended
	// without a rollback.
	StatusDeclined Status = "declined"
)

// Phase is what a journal entry records about its step.
type Phase string

// Journal phases.
const (
	PhaseStarted Phase = "started"
	PhaseDone    Phase = "done"
	PhaseFailed  Phase = "failed"
	// PhaseInterrupted: the step was stopped from outside (SIGTERM, the
	// run's hold on the service lost) rather than failing; the run is
	// resumable and a leader resumes it.
	PhaseInterrupted Phase = "interrupted"
	PhaseNote        Phase = "note"
	// PhaseOverrun: the step took longer than its runbook budget.
	PhaseOverrun Phase = "overrun"
	// PhaseIntent, PhaseEffect and PhaseEffectFailed journal one attempt
	// at a side effect that must not repeat (see runbook.StepContext.Once).
	PhaseIntent       Phase = "intent"
	PhaseEffect       Phase = "effect"
	PhaseEffectFailed Phase = "effect-failed"
)

// Incident is one rollback incident.
type Incident struct {
	ID          string     `json:"id"`
	Service     string     `json:"service"`
	Severity    string     `json:"severity,omitempty"`
	BadVersion  string     `json:"badVersion,omitempty"`
	GoodVersion string     `json:"goodVersion,omitempty"`
	Decision    string     `json:"decision,omitempty"`
	Rationale   string     `json:"rationale,omitempty"` // JSON of the decision's reasons
	Status      Status     `json:"status"`
	OpenedAt    time.Time  `json:"openedAt"`
	ClosedAt    *time.Time `json:"closedAt,omitempty"`
}

// IncidentQuery selects incidents.
type IncidentQuery struct {
	Service string   // "" for all
	Status  []Status // none: any
	// Limit is the page size (0: no limit).
	Limit int
	// Before continues a listing after the incident with this ID: only
	// older ones.
	Before string
}

// Event is one journal entry of an incident.
type Event struct {
	Incident string    `json:"incident"`
	Seq      int64     `json:"seq"`
	Time     time.Time `json:"time"`
	Step     string    `json:"step"`
	Phase    Phase     `json:"phase"`
	// Key, when set, makes the event unique within the incident: appending
	// it again is a no-op that reports added = false.
	Key      string `json:"key,omitempty"`
	Message  string `json:"message,omitempty"`
	Evidence string `json:"evidence,omitempty"`
}

// Lease is a service's run lock.
type Lease struct {
	Service string    `json:"service"`
	Holder  string    `json:"holder"`
	Since   time.Time `json:"since"`
	Expires time.Time `json:"expires"`
}

// Block is a version that must not be deployed.
type Block struct {
	Service  string    `json:"service"`
	Version  string    `json:"version"`
	Incident string    `json:"incident,omitempty"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

// Approval is an on-call engineer's sign-off of the rollback runbook
// before a release (the runbook's "reviewed by on-call engineer before
// deployment").
type Approval struct {
	Service string    `json:"service"`
	Release string    `json:"release"`
	By      string    `json:"by"`
	Note    string    `json:"note,omitempty"`
	At      time.Time `json:"at"`
}

// Drill is one run of a rollback test from the runbook's testing table:
// a dry run, a migration round trip, a chaos drill or a fire drill.
type Drill struct {
	Service string    `json:"service"`
	Kind    string    `json:"kind"`    // dry-run, migration, chaos, fire-drill
	Subject string    `json:"subject"` // what was tested: the release, the migration version
	OK      bool      `json:"ok"`
	Detail  string    `json:"detail,omitempty"` // measured times, the failure
	At      time.Time `json:"at"`
}

// Store is rollback's state.
type Store interface {
	// CreateIncident stores inc, assigning ID (INC-YYYYMMDD-N) when empty.
	CreateIncident(ctx context.Context, inc *Incident) error
	GetIncident(ctx context.Context, id string) (*Incident, error)
	UpdateIncident(ctx context.Context, inc *Incident) error
	// ListIncidents lists incidents, newest first; service "" means all.
	ListIncidents(ctx context.Context, service string) ([]Incident, error)
	// QueryIncidents lists the incidents q selects, newest first, a page
	// at a time (indexed by status and by time).
	QueryIncidents(ctx context.Context, q IncidentQuery) ([]Incident, error)

	// AppendEvent journals ev; with a Key already journaled for the
	// incident it changes nothing and returns added = false.
	AppendEvent(ctx context.Context, ev Event) (added bool, err error)
	// AppendEvents journals evs in one transaction: all or none (an
	// event whose Key is already journaled is kept as it was).
	AppendEvents(ctx context.Context, evs []Event) error
	Events(ctx context.Context, incident string) ([]Event, error)
	// EventsOf is the journals of several incidents in one read (a page
	// of a listing), by incident.
	EventsOf(ctx context.Context, incidents []string) (map[string][]Event, error)

	// AcquireLease takes or renews the service's lease for holder until
	// now+ttl, now by the store's clock (the database server's for a
	// shared store, so replicas whose clocks disagree still agree on
	// expiry); a live lease of another holder is a *LeaseError.
	AcquireLease(ctx context.Context, service, holder string, ttl time.Duration) (*Lease, error)
	ReleaseLease(ctx context.Context, service, holder string) error

	SetBlock(ctx context.Context, b Block) error
	DeleteBlock(ctx context.Context, service, version string) error
	// GetBlock returns ErrNotFound when the version is not blocked.
	GetBlock(ctx context.Context, service, version string) (*Block, error)
	ListBlocks(ctx context.Context, service string) ([]Block, error)

	// Approve records that the rollback runbook was reviewed for a release.
	Approve(ctx context.Context, a Approval) error
	// GetApproval returns ErrNotFound when nobody signed off.
	GetApproval(ctx context.Context, service, release string) (*Approval, error)

	// RecordDrill keeps a drill's outcome.
	RecordDrill(ctx context.Context, d Drill) error
	// ListDrills lists a service's drills ("" for all), newest first.
	ListDrills(ctx context.Context, service string) ([]Drill, error)

	Close() error
}
