// Package round is the coordinator's round protocol as a pure, deterministic
// state machine, in the style of etcd raft's Ready loop.
//
// Events go in through Step (an admin starting or stopping a run, devices
// coming online or going offline, updates and evaluation results that the
// driver has already authenticated, and Tick, the only source of time). What
// the machine wants done comes out of Ready: records to persist (one
// store.Batch), messages to publish and rounds committed. The driver's loop:
//
//	for {
//		ev := <-events
//		if err := m.Step(ev); err != nil { ... }
//		if m.HasReady() {
//			rd := m.Ready()
//			st.Apply(ctx, &rd.Batch) // persist first ...
//			publish(rd.Messages)     // ... then publish
//			m.Advance()
//		}
//	}
//
// Given the same Config, snapshot and events, the machine produces the same
// Ready batches: selection and nonces are functions of the run's seed and
// NonceKey, and updates are folded in arrival order, also after a restart.
//
// Crash recovery: every accepted update is in the batch that carries its
// acknowledgement, so an acknowledged update is on disk. LoadSnapshot and New
// rebuild the machine from the store; its first Ready re-publishes the
// current model, the round announcement, the tasks and the acks of accepted
// updates. Redelivered updates are acknowledged again and never counted
// twice. The in-flight updates of a round are deleted in the batch that
// persists the model version they produced.
package round

import (
	"errors"
	"fmt"

	"github.com/fedge-dev/fedge/coordinator/store"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Aggregator folds the updates of one round into a new global model. The
// lead adapts the aggregation package's strategies to it.
type Aggregator interface {
	// Add folds one update; an error rejects the update and leaves the
	// aggregate unchanged.
	Add(device string, delta []float32, samples uint64) error
	// Finish returns the new global model computed from global and the
	// updates added.
	Finish(global []float32) ([]float32, error)
}

// OptimizerSaver is implemented by aggregators whose strategy keeps memory
// from round to round (server momentum, adaptive moments). After a
// successful Finish the machine persists the state with the model version
// it produced, in the same batch, so that a restart continues it.
type OptimizerSaver interface {
	// OptimizerState is the state after Finish; nil when there is none.
	// The machine sets its run id and model version.
	OptimizerState() *store.Optimizer
}

// Deferred is implemented by aggregators that need more than the updates
// to finish (secure aggregation runs further message rounds after the last
// masked input). When Deferred reports true, the machine does not close
// training as soon as every selected device has reported; it waits for
// CloseTraining or the deadline.
type Deferred interface {
	Deferred() bool
}

// NewAggregatorFunc returns a fresh aggregator for one round of a run with a
// model of dim parameters.
type NewAggregatorFunc func(run *fedgepb.RunConfig, roundID uint64, dim int) (Aggregator, error)

// Signer signs a manifest in place (sets its Signature).
type Signer interface {
	SignManifest(m *fedgepb.ModelManifest) error
}

// DecodeFunc turns an update's encoded delta into dim float32s.
type DecodeFunc func(codec fedgepb.Codec, encoded []byte, dim int) ([]float32, error)

// Config is what the machine needs besides its state.
type Config struct {
	// NewAggregator is required.
	NewAggregator NewAggregatorFunc
	// Signer signs each new model's manifest; nil leaves it unsigned.
	Signer Signer
	// Decode decodes update deltas; nil accepts CODEC_FLOAT32 only.
	Decode DecodeFunc
	// NonceKey is mixed into every task nonce; random and secret in
	// production, fixed in simulations for reproducibility.
	NonceKey []byte
}

// Errors returned by Step and New.
var (
	// ErrRunActive is returned by StartRun while a run is in progress.
	ErrRunActive = errors.New("a run is already in progress")
	// ErrInvalidEvent is returned for an event that is malformed.
	ErrInvalidEvent = errors.New("invalid event")
	// ErrInvalidConfig is returned for a run configuration that cannot run.
	ErrInvalidConfig = errors.New("invalid run config")
	// ErrInconsistent is returned by New for a snapshot that contradicts itself.
	ErrInconsistent = errors.New("inconsistent snapshot")
)

// Reasons an update or evaluation result is refused (Ack.reason) and the
// counters they are recorded under.
const (
	ReasonUnknownRound  = "unknown_round"  // a round id never started
	ReasonReplay        = "replay"         // an earlier round, or a nonce/device not of the round
	ReasonNotSelected   = "not_selected"   // the device is not a participant of the round
	ReasonBadNonce      = "bad_nonce"      // the nonce does not echo the task's
	ReasonStaleBase     = "stale_base"     // trained on another global model
	ReasonNoSamples     = "no_samples"     // sample count 0
	ReasonBadEncoding   = "bad_encoding"   // the delta does not decode
	ReasonWrongShape    = "wrong_shape"    // the delta has the wrong length
	ReasonNonFinite     = "non_finite"     // NaN or Inf in the delta or the metrics
	ReasonAggregator    = "aggregator"     // the aggregator refused it
	ReasonLate          = "late"           // after the round closed: recorded, not aggregated
	ReasonNotOpen       = "not_open"       // no round is collecting this kind of result
	ReasonAlreadyStored = "already_stored" // accepted before (redelivery); acked as accepted
)

// Machine is the round state machine. It is not safe for concurrent use.
type Machine struct {
	cfg         Config
	now         int64
	ready       Ready // output not yet handed out
	outstanding bool  // a Ready was handed out and not advanced

	online map[string]*fedgepb.Capabilities

	run           *store.Run // the active run, nil if none
	model         *store.ModelVersion
	global        []float32
	latestVersion uint64
	lastRoundID   uint64

	round *roundState // the run's current round
	prev  *store.Round

	counters map[string]uint64
}

// roundState is the in-memory part of the current round.
type roundState struct {
	rec      *store.Round
	nonces   map[string][]byte
	accepted map[string][]byte // device -> message id of its update
	order    []string          // accepted devices in arrival order
	agg      Aggregator
	evals    map[string]bool
	train    weighted
}

// weighted accumulates sample-weighted loss and accuracy.
type weighted struct {
	loss, acc float64
	samples   uint64
}

func (w *weighted) add(samples uint64, loss, acc float64) {
	w.loss += float64(samples) * loss
	w.acc += float64(samples) * acc
	w.samples += samples
}

func (w weighted) mean() (loss, acc float64) {
	if w.samples == 0 {
		return 0, 0
	}
	return w.loss / float64(w.samples), w.acc / float64(w.samples)
}

// Step applies one event. An error means the event was malformed or not
// allowed and changed nothing; refused updates are not errors (they produce
// a negative Ack).
func (m *Machine) Step(ev Event) error {
	switch e := ev.(type) {
	case Tick:
		return m.tick(e)
	case StartRun:
		return m.startRun(e)
	case Stop:
		return m.stop(e)
	case DeviceOnline:
		return m.deviceOnline(e)
	case DeviceOffline:
		delete(m.online, e.Device)
		return nil
	case DeviceDropped:
		return m.deviceDropped(e)
	case UpdateReceived:
		return m.updateReceived(e)
	case UpdateRefused:
		return m.updateRefused(e)
	case EvalResultReceived:
		return m.evalReceived(e)
	case EvalComputed:
		return m.evalComputed(e)
	case CloseTraining:
		return m.closeTrainingEvent(e)
	case nil:
		return fmt.Errorf("%w: nil event", ErrInvalidEvent)
	}
	return fmt.Errorf("%w: unknown event type %T", ErrInvalidEvent, ev)
}

// HasReady reports whether Ready would return something: there is output
// and the previous Ready was advanced.
func (m *Machine) HasReady() bool {
	return !m.outstanding && !m.ready.empty()
}

// Ready hands over what the driver must do: persist Batch, then publish
// Messages. Output of later Steps accumulates for the next Ready, which is
// not handed out (an empty Ready is returned) until Advance.
func (m *Machine) Ready() Ready {
	if !m.HasReady() {
		return Ready{}
	}
	rd := m.ready
	m.ready = Ready{}
	m.outstanding = true
	return rd
}

// Advance tells the machine the last Ready was persisted and published.
func (m *Machine) Advance() { m.outstanding = false }

// Counters returns the totals of refusal reasons (and late updates) since
// the machine was created.
func (m *Machine) Counters() map[string]uint64 {
	out := make(map[string]uint64, len(m.counters))
	for k, v := range m.counters {
		out[k] = v
	}
	return out
}

func (m *Machine) count(reason string) {
	m.counters[reason]++
	if m.round != nil {
		if m.round.rec.Rejections == nil {
			m.round.rec.Rejections = map[string]uint64{}
		}
		m.round.rec.Rejections[reason]++
	}
}
