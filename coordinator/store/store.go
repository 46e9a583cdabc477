// Package store persists the coordinator's state: runs and rounds, accepted
// updates still in flight, model versions with their lineage, devices,
// per-round metrics, an append-only audit log of admin actions, enrollment
// tokens and named sequences.
//
// Store is implemented twice: on Badger (Open; SyncWrites on, so a nil error
// from Apply means the batch is on disk) and in memory (NewMemory). Both pass
// the conformance suite in storetest. Records are the protobuf messages of
// proto/fedge/v1/store.proto; a Batch is applied atomically, which is how
// the round state machine's Ready batches are persisted in one transaction.
package store

import (
	"context"
	"errors"
)

// Sentinel errors callers test with errors.Is.
var (
	// ErrNotFound is returned by single-record reads for a missing record.
	ErrNotFound = errors.New("not found")
	// ErrInvalid is returned by Apply for a record that breaks its
	// invariants; nothing of the batch is applied.
	ErrInvalid = errors.New("invalid record")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("store closed")
	// ErrCorrupt is returned when stored bytes do not decode to a valid record.
	ErrCorrupt = errors.New("corrupt record")
	// ErrLocked is returned by Open when another process holds the directory.
	ErrLocked = errors.New("store directory locked by another process")
)

// Store is the coordinator's persistence. Records returned are copies the
// caller may modify; records passed in are not retained.
type Store interface {
	// Apply persists every change of b in one transaction: all or nothing.
	// Within a batch, DeleteUpdates and DeleteTokens happen before the puts.
	Apply(ctx context.Context, b *Batch) error

	Run(ctx context.Context, runID uint64) (*Run, error)
	// Runs lists all runs by ascending id.
	Runs(ctx context.Context) ([]*Run, error)

	Round(ctx context.Context, roundID uint64) (*Round, error)
	// Rounds lists the rounds of one run (all rounds for runID 0) by ascending id.
	Rounds(ctx context.Context, runID uint64) ([]*Round, error)
	// LatestRoundID is the highest round id stored, 0 if none.
	LatestRoundID(ctx context.Context) (uint64, error)

	// Updates lists the in-flight accepted updates of a round by arrival order.
	Updates(ctx context.Context, roundID uint64) ([]*Update, error)

	ModelVersion(ctx context.Context, version uint64) (*ModelVersion, error)
	// ModelVersions lists all versions by ascending version; weights and
	// manifests are left out unless withBlobs.
	ModelVersions(ctx context.Context, withBlobs bool) ([]*ModelVersion, error)
	// LatestModelVersion is the highest model version stored, 0 if none.
	LatestModelVersion(ctx context.Context) (uint64, error)

	Device(ctx context.Context, id string) (*Device, error)
	// Devices lists all devices by ascending id.
	Devices(ctx context.Context) ([]*Device, error)

	// Metrics lists the per-round metrics of one run (all for runID 0) by round.
	Metrics(ctx context.Context, runID uint64) ([]*Metrics, error)

	// Audit lists up to limit audit records with seq > after, by seq.
	Audit(ctx context.Context, after uint64, limit int) ([]*AuditEntry, error)

	// Optimizer returns the server optimizer state last committed for a run.
	Optimizer(ctx context.Context, runID uint64) (*Optimizer, error)

	// Token returns the enrollment token with this sha256 hash.
	Token(ctx context.Context, hash []byte) (*Token, error)

	// NextSequence increments the named counter and returns its new value
	// (1 on first use). The increment is durable once it returns.
	NextSequence(ctx context.Context, name string) (uint64, error)

	// Close releases the store; later calls return ErrClosed.
	Close() error
}
