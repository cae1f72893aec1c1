// Package flags turns a feature flag off and reads it back to confirm, as
// the runbook's Step 5 says ("belt-and-suspenders"): LaunchDarkly (semantic
// patch), Unleash (admin API) and flagd (its flag file, rewritten
// atomically).
package flags

import (
	"context"
	"errors"
	"fmt"
)

// Provider turns flags off and reports their state.
type Provider interface {
	// TurnOff disables the flag; comment says why (an incident id). It is
	// idempotent: a flag already off stays off.
	TurnOff(ctx context.Context, flag, comment string) error
	// IsOn reads the flag's state back.
	IsOn(ctx context.Context, flag string) (bool, error)
}

// ErrStillOn means the flag read back as on after TurnOff.
var ErrStillOn = errors.New("the flag is still on after turning it off")

// TurnOffAndConfirm turns the flag off and reads it back.
func TurnOffAndConfirm(ctx context.Context, p Provider, flag, comment string) error {
	if err := p.TurnOff(ctx, flag, comment); err != nil {
		return err
	}
	on, err := p.IsOn(ctx, flag)
	if err != nil {
		return fmt.Errorf("read flag %s back: %w", flag, err)
	}
	if on {
		return fmt.Errorf("%w: %s", ErrStillOn, flag)
	}
	return nil
}
