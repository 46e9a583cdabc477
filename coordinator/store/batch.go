package store

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math"

	"github.com/fedge-dev/fedge/internal/topics"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Record types, named for what they are to the coordinator.
type (
	Run          = fedgepb.RunRecord
	Round        = fedgepb.RoundRecord
	Update       = fedgepb.UpdateRecord
	ModelVersion = fedgepb.ModelVersionRecord
	Device       = fedgepb.DeviceRecord
	Metrics      = fedgepb.RoundMetrics
	AuditEntry   = fedgepb.AuditRecord
	Token        = fedgepb.EnrollmentTokenRecord
	Optimizer    = fedgepb.OptimizerStateRecord
)

// Batch is a set of changes applied atomically by Store.Apply. Puts replace
// a record with the same key (run id, round id, (round, device), version,
// device id, round id of metrics, token hash). Audit entries are appended
// and get their seq from the store.
type Batch struct {
	Runs          []*Run
	Rounds        []*Round
	Updates       []*Update
	ModelVersions []*ModelVersion
	Devices       []*Device
	Metrics       []*Metrics
	Audit         []*AuditEntry
	Tokens        []*Token
	// Optimizers replace the optimizer state of their runs.
	Optimizers []*Optimizer

	// DeleteUpdates removes every in-flight update of these rounds.
	DeleteUpdates []uint64
	// DeleteTokens removes enrollment tokens by hash.
	DeleteTokens [][]byte
}

// Empty reports whether the batch changes nothing.
func (b *Batch) Empty() bool {
	return b == nil || len(b.Runs)+len(b.Rounds)+len(b.Updates)+len(b.ModelVersions)+
		len(b.Devices)+len(b.Metrics)+len(b.Audit)+len(b.Tokens)+len(b.Optimizers)+
		len(b.DeleteUpdates)+len(b.DeleteTokens) == 0
}

// Validate checks every record of the batch; errors wrap ErrInvalid.
func (b *Batch) Validate() error {
	if b == nil {
		return fmt.Errorf("%w: nil batch", ErrInvalid)
	}
	check := func(kind string, i int, err error) error {
		if err != nil {
			return fmt.Errorf("%w: %s %d: %v", ErrInvalid, kind, i, err)
		}
		return nil
	}
	for i, r := range b.Runs {
		if err := check("run", i, validateRun(r)); err != nil {
			return err
		}
	}
	for i, r := range b.Rounds {
		if err := check("round", i, validateRound(r)); err != nil {
			return err
		}
	}
	for i, r := range b.Updates {
		if err := check("update", i, validateUpdate(r)); err != nil {
			return err
		}
	}
	for i, r := range b.ModelVersions {
		if err := check("model version", i, validateModelVersion(r)); err != nil {
			return err
		}
	}
	for i, r := range b.Devices {
		if err := check("device", i, validateDevice(r)); err != nil {
			return err
		}
	}
	for i, r := range b.Metrics {
		if err := check("metrics", i, validateMetrics(r)); err != nil {
			return err
		}
	}
	for i, r := range b.Audit {
		if r != nil && r.Seq != 0 {
			return check("audit", i, fmt.Errorf("seq %d set by caller; the store assigns it", r.Seq))
		}
		if err := check("audit", i, validateAudit(r)); err != nil {
			return err
		}
	}
	for i, r := range b.Tokens {
		if err := check("token", i, validateToken(r)); err != nil {
			return err
		}
	}
	for i, id := range b.DeleteUpdates {
		if id == 0 {
			return check("delete updates", i, fmt.Errorf("round id 0"))
		}
	}
	for i, r := range b.Optimizers {
		if err := check("optimizer state", i, validateOptimizer(r)); err != nil {
			return err
		}
	}
	for i, h := range b.DeleteTokens {
		if len(h) != sha256.Size {
			return check("delete token", i, fmt.Errorf("hash of %d bytes", len(h)))
		}
	}
	return nil
}

func validateRun(r *Run) error {
	switch {
	case r == nil:
		return fmt.Errorf("nil")
	case r.RunId == 0:
		return fmt.Errorf("run id 0")
	case r.Config == nil || r.Config.ModelId == "":
		return fmt.Errorf("run %d has no config or model id", r.RunId)
	}
	return nil
}

func validateRound(r *Round) error {
	switch {
	case r == nil:
		return fmt.Errorf("nil")
	case r.RoundId == 0 || r.RunId == 0:
		return fmt.Errorf("round %d of run %d: ids must be non-zero", r.RoundId, r.RunId)
	}
	for _, s := range r.Selected {
		if err := topics.ValidateID(s.GetDeviceId()); err != nil {
			return fmt.Errorf("round %d selected device: %v", r.RoundId, err)
		}
	}
	return nil
}

func validateUpdate(r *Update) error {
	switch {
	case r == nil:
		return fmt.Errorf("nil")
	case r.RoundId == 0:
		return fmt.Errorf("round id 0")
	}
	if err := topics.ValidateID(r.DeviceId); err != nil {
		return fmt.Errorf("update of round %d: %v", r.RoundId, err)
	}
	return nil
}

func validateModelVersion(r *ModelVersion) error {
	switch {
	case r == nil:
		return fmt.Errorf("nil")
	case r.Version == 0:
		return fmt.Errorf("version 0")
	case r.ModelId == "":
		return fmt.Errorf("version %d has no model id", r.Version)
	case r.ParentVersion >= r.Version:
		return fmt.Errorf("version %d has parent %d, not older", r.Version, r.ParentVersion)
	case len(r.Weights)%4 != 0:
		return fmt.Errorf("version %d weights are %d bytes, not float32s", r.Version, len(r.Weights))
	}
	if len(r.Weights) > 0 {
		sum := sha256.Sum256(r.Weights)
		if !bytes.Equal(sum[:], r.WeightsHash) {
			return fmt.Errorf("version %d weights do not match weights_hash", r.Version)
		}
	}
	return nil
}

func validateDevice(r *Device) error {
	if r == nil {
		return fmt.Errorf("nil")
	}
	if err := topics.ValidateID(r.DeviceId); err != nil {
		return err
	}
	if len(r.PublicKey) != 0 && len(r.PublicKey) != 32 {
		return fmt.Errorf("device %s public key has %d bytes, want 32", r.DeviceId, len(r.PublicKey))
	}
	return nil
}

func validateMetrics(r *Metrics) error {
	switch {
	case r == nil:
		return fmt.Errorf("nil")
	case r.RoundId == 0 || r.RunId == 0:
		return fmt.Errorf("metrics of round %d run %d: ids must be non-zero", r.RoundId, r.RunId)
	}
	return nil
}

func validateAudit(r *AuditEntry) error {
	switch {
	case r == nil:
		return fmt.Errorf("nil")
	case r.Action == "" || r.Actor == "":
		return fmt.Errorf("audit entry needs an actor and an action")
	}
	return nil
}

func validateToken(r *Token) error {
	switch {
	case r == nil:
		return fmt.Errorf("nil")
	case len(r.TokenHash) != sha256.Size:
		return fmt.Errorf("token hash of %d bytes, want %d", len(r.TokenHash), sha256.Size)
	}
	return nil
}

func validateOptimizer(r *Optimizer) error {
	switch {
	case r == nil:
		return fmt.Errorf("nil record")
	case r.RunId == 0:
		return fmt.Errorf("run id 0")
	case r.ModelVersion == 0:
		return fmt.Errorf("model version 0")
	case r.Strategy == "":
		return fmt.Errorf("no strategy")
	case len(r.V) != 0 && len(r.V) != len(r.M):
		return fmt.Errorf("second moment of %d values, first of %d", len(r.V), len(r.M))
	}
	for _, m := range [][]float64{r.M, r.V} {
		for i, x := range m {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return fmt.Errorf("moment %d is %v", i, x)
			}
		}
	}
	return nil
}
