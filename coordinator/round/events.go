package round

import (
	"github.com/fedge-dev/fedge/coordinator/store"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Event is an input of the machine. An event belongs to the machine once
// passed to Step: the caller must not modify it (or the byte slices it
// holds) afterwards, since records to persist may share them.
type Event interface{ isEvent() }

// Tick advances the machine's clock; deadlines are checked against it. A
// tick earlier than the clock is ignored.
type Tick struct{ NowUnixMs int64 }

// StartRun starts a multi-round run. Base is the global model the first
// round trains from; if its Version is 0 it is a new initial model and the
// machine assigns it the next version and persists it.
type StartRun struct {
	RunID  uint64
	Config *fedgepb.RunConfig
	Base   *store.ModelVersion
}

// Stop ends the active run; its open round is aborted.
type Stop struct{ Reason string }

// DeviceOnline reports an enrolled, approved device present with these
// capabilities.
type DeviceOnline struct {
	Device string
	Caps   *fedgepb.Capabilities
}

// DeviceOffline reports a device gone (its last will).
type DeviceOffline struct{ Device string }

// DeviceDropped reports that a device gave up its task of round RoundID
// (its signed Status DROPPED). A selected device of the round in training
// that has not reported counts as dropped; once every selected device has
// reported or dropped, training closes without waiting for the deadline.
type DeviceDropped struct {
	Device  string
	RoundID uint64
	Reason  string
}

// UpdateReceived is an update whose envelope the driver has verified: the
// signature is the enrolled key of Update.DeviceId and the sender is that
// device. A delta sent as a blob is reassembled into Update.EncodedDelta.
type UpdateReceived struct {
	MessageID []byte
	Update    *fedgepb.Update
}

// UpdateRefused is an update the driver refused before it reached the
// machine (bad signature, unknown device, oversized, undecodable envelope);
// the machine counts it and acknowledges it negatively. Device may be empty
// (or not a valid id) when no device can be told; then nothing is acked.
type UpdateRefused struct {
	MessageID []byte
	Device    string
	RoundID   uint64
	Reason    string
}

// EvalResultReceived is a verified federated evaluation result.
type EvalResultReceived struct {
	MessageID []byte
	Result    *fedgepb.EvaluateResult
}

// EvalComputed is the server-side evaluation of the model a round produced.
type EvalComputed struct {
	RoundID        uint64
	Loss, Accuracy float64
}

// CloseTraining ends the training phase of round RoundID now, as its
// deadline would: the aggregate is finished from the updates accepted so
// far, or the round fails without a quorum. A non-empty Reason fails the
// round with that reason instead (nothing is aggregated). The driver of a
// secure aggregation round sends it once the protocol has produced the sum
// or aborted. It is ignored unless round RoundID is the one training.
type CloseTraining struct {
	RoundID uint64
	Reason  string
}

func (Tick) isEvent()               {}
func (StartRun) isEvent()           {}
func (Stop) isEvent()               {}
func (DeviceOnline) isEvent()       {}
func (DeviceOffline) isEvent()      {}
func (DeviceDropped) isEvent()      {}
func (UpdateReceived) isEvent()     {}
func (UpdateRefused) isEvent()      {}
func (EvalResultReceived) isEvent() {}
func (EvalComputed) isEvent()       {}
func (CloseTraining) isEvent()      {}
