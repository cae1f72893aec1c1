package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/migrate"
	"github.com/rollback-dev/rollback/internal/runbook"
	"github.com/rollback-dev/rollback/internal/store"
)

// Exit codes, documented in the README.
const (
	ExitOK          = 0   // success, including "nothing to do"
	ExitError       = 1   // unexpected failure (API server unreachable, ...)
	ExitUsage       = 2   // bad flags, arguments or configuration
	ExitRefused     = 3   // rollback refused: paused, unknown revision, no good target, ...
	ExitTimeout     = 4   // the rollout did not finish within --timeout
	ExitFailed      = 5   // the rollout failed or the running image is wrong
	ExitAborted     = 6   // declined at the confirmation prompt
	ExitRolledBack  = 7   // rollback watch rolled the service back
	ExitBlocked     = 8   // rollback gate: the version is blocked
	ExitLocked      = 9   // another rollback of the service is running
	ExitInterrupted = 130 // interrupted (Ctrl-C)
)

// usageError marks an error as the user's input being wrong.
type usageError struct {
	err      error
	showHelp bool
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{err: fmt.Errorf(format, a...)} }

// ExitCode maps an error to the documented exit code.
func ExitCode(err error) int {
	var ue usageError
	var ce config.Errors
	var ce1 *config.Error
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue), errors.As(err, &ce), errors.As(err, &ce1), errors.Is(err, config.ErrNotFound):
		return ExitUsage
	case errors.Is(err, store.ErrLeaseHeld):
		return ExitLocked
	case errors.Is(err, ErrBlocked):
		return ExitBlocked
	case errors.Is(err, ErrRolledBack):
		return ExitRolledBack
	case errors.Is(err, kube.ErrAborted):
		return ExitAborted
	case errors.Is(err, kube.ErrTimeout), errors.Is(err, migrate.ErrLockBudget), errors.Is(err, runbook.ErrDeadline):
		return ExitTimeout
	case errors.Is(err, kube.ErrProgressDeadline), errors.Is(err, kube.ErrImageMismatch), errors.Is(err, kube.ErrDeleted),
		errors.Is(err, migrate.ErrSnapshot), errors.Is(err, ErrVerifyFailed), errors.Is(err, errLintFailed),
		errors.Is(err, ErrCheckFailed):
		return ExitFailed
	case errors.Is(err, kube.ErrPaused), errors.Is(err, kube.ErrRevisionNotFound), errors.Is(err, kube.ErrNoTarget),
		errors.Is(err, kube.ErrTargetBad), errors.Is(err, kube.ErrConflict), errors.Is(err, kube.ErrHelmPending), errors.Is(err, kube.ErrNotFound),
		errors.Is(err, kube.ErrStandbyNotReady), errors.Is(err, kube.ErrNotBlueGreen),
		errors.Is(err, migrate.ErrUnsafe), errors.Is(err, migrate.ErrMigrationLocked), errors.Is(err, migrate.ErrNoHistory),
		errors.Is(err, migrate.ErrNoRecord), errors.Is(err, ErrDecisionAgainst), errors.Is(err, ErrOpenIncident):
		return ExitRefused
	case errors.Is(err, context.Canceled):
		return ExitInterrupted
	}
	return ExitError
}

var (
	// ErrDecisionAgainst: the flowchart, from live signals, does not say
	// roll back (rollback run --severity without --force).
	ErrDecisionAgainst = errors.New("the decision flowchart does not say roll back")
	errAborted         = kube.ErrAborted
	errLintFailed      = errors.New("lint found problems")
)
