package aggregation

import (
	"errors"
	"fmt"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrDimension: an update's length differs from the model's.
	ErrDimension = errors.New("dimension mismatch")
	// ErrNonFinite: an update or aggregate holds NaN or ±Inf.
	ErrNonFinite = errors.New("non-finite value")
	// ErrSampleCount: a sample or example count is zero, negative or
	// absurdly large (above MaxSamples).
	ErrSampleCount = errors.New("invalid sample count")
	// ErrDuplicate: the same client sent two updates in one round.
	ErrDuplicate = errors.New("duplicate update")
	// ErrTooFewClients: the cohort is below the strategy's minimum.
	ErrTooFewClients = errors.New("too few clients")
	// ErrNotSumBased: a strategy that needs every update was asked to work
	// from a sum (secure aggregation).
	ErrNotSumBased = errors.New("strategy is not sum-based")
	// ErrConfig: a configuration value is out of range.
	ErrConfig = errors.New("invalid configuration")
	// ErrBadMetric: an evaluation metric is out of range.
	ErrBadMetric = errors.New("invalid metric")
)

// MaxSamples is the largest sample count a client may report (2^40). Larger
// values are rejected as absurd; use a sample cap to bound honest ones.
const MaxSamples int64 = 1 << 40

// ClientError names the client whose input was rejected.
type ClientError struct {
	Client string
	Err    error
}

// Error names the client and the fault.
func (e *ClientError) Error() string { return fmt.Sprintf("client %q: %v", e.Client, e.Err) }

// Unwrap exposes the sentinel for errors.Is.
func (e *ClientError) Unwrap() error { return e.Err }

func clientErr(client string, err error) error { return &ClientError{Client: client, Err: err} }
