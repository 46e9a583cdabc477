package round

import (
	"bytes"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/coordinator/store"
	"github.com/fedge-dev/fedge/internal/topics"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

func (m *Machine) updateRefused(e UpdateRefused) error {
	if e.Reason == "" {
		return fmt.Errorf("%w: update refused without a reason", ErrInvalidEvent)
	}
	m.count(e.Reason)
	if topics.ValidateID(e.Device) == nil {
		m.ack(e.Device, e.RoundID, e.MessageID, false, e.Reason)
	}
	return nil
}

func (m *Machine) refuse(u *fedgepb.Update, msgID []byte, reason string) error {
	m.count(reason)
	m.ack(u.DeviceId, u.RoundId, msgID, false, reason)
	return nil
}

func (m *Machine) updateReceived(e UpdateReceived) error {
	u := e.Update
	if u == nil {
		return fmt.Errorf("%w: nil update", ErrInvalidEvent)
	}
	if err := topics.ValidateID(u.DeviceId); err != nil {
		return fmt.Errorf("%w: update: %v", ErrInvalidEvent, err)
	}
	var cur *store.Round
	if m.round != nil {
		cur = m.round.rec
	}
	switch {
	case cur != nil && u.RoundId == cur.RoundId && cur.Phase == fedgepb.RoundPhase_ROUND_PHASE_TRAINING:
		return m.trainUpdate(e)
	case cur != nil && u.RoundId == cur.RoundId:
		if cur.Phase == fedgepb.RoundPhase_ROUND_PHASE_WAITING {
			return m.refuse(u, e.MessageID, ReasonNotOpen)
		}
		return m.lateUpdate(cur, e)
	case m.prev != nil && u.RoundId == m.prev.RoundId:
		return m.lateUpdate(m.prev, e)
	case u.RoundId > m.lastRoundID || u.RoundId == 0:
		return m.refuse(u, e.MessageID, ReasonUnknownRound)
	}
	return m.refuse(u, e.MessageID, ReasonReplay)
}

// trainUpdate validates an update of the round in training and folds it.
func (m *Machine) trainUpdate(e UpdateReceived) error {
	u, r := e.Update, m.round
	want, selected := r.nonces[u.DeviceId]
	switch {
	case !selected:
		return m.refuse(u, e.MessageID, ReasonNotSelected)
	case !bytes.Equal(u.Nonce, want):
		return m.refuse(u, e.MessageID, ReasonBadNonce)
	}
	if _, dup := r.accepted[u.DeviceId]; dup {
		// A redelivery, or a resend after a restart: it is on disk already.
		m.counters[ReasonAlreadyStored]++
		m.ack(u.DeviceId, u.RoundId, e.MessageID, true, ReasonAlreadyStored)
		return nil
	}
	switch {
	case !bytes.Equal(u.BaseModelHash, r.rec.BaseHash):
		return m.refuse(u, e.MessageID, ReasonStaleBase)
	case u.SampleCount == 0:
		return m.refuse(u, e.MessageID, ReasonNoSamples)
	case !finite64(u.GetMetrics().GetLoss(), u.GetMetrics().GetAccuracy()):
		return m.refuse(u, e.MessageID, ReasonNonFinite)
	}
	delta, reason := m.decode(u.Codec, u.EncodedDelta)
	if reason != "" {
		return m.refuse(u, e.MessageID, reason)
	}
	if err := r.agg.Add(u.DeviceId, delta, u.SampleCount); err != nil {
		return m.refuse(u, e.MessageID, ReasonAggregator)
	}
	// The record shares the event's delta bytes instead of copying them:
	// events belong to the machine once stepped (see Event).
	rec := &store.Update{
		RoundId: u.RoundId, DeviceId: u.DeviceId, MessageId: bytes.Clone(e.MessageID), SampleCount: u.SampleCount,
		Codec: u.Codec, EncodedDelta: u.EncodedDelta, Arrival: uint32(len(r.order)), ReceivedUnixMs: m.now,
	}
	if u.Metrics != nil {
		rec.Metrics = proto.Clone(u.Metrics).(*fedgepb.TrainMetrics)
	}
	m.ready.Batch.Updates = append(m.ready.Batch.Updates, rec)
	m.accept(rec)
	m.ack(u.DeviceId, u.RoundId, e.MessageID, true, "")
	// A device that said it dropped and then reported after all counts as
	// reporting (persisted with its update, so a restart counts it once).
	if i := slices.Index(r.rec.DroppedDevices, u.DeviceId); i >= 0 {
		r.rec.DroppedDevices = slices.Delete(r.rec.DroppedDevices, i, i+1)
		m.persistRound(r.rec)
	}
	m.closeIfComplete()
	return nil
}

// closeIfComplete closes training once every selected device has reported
// or dropped, unless the aggregator defers closing to its driver (secure
// aggregation, whose protocol decides when the sum is ready).
func (m *Machine) closeIfComplete() {
	r := m.round
	if d, ok := r.agg.(Deferred); ok && d.Deferred() {
		return
	}
	if len(r.order)+len(r.rec.DroppedDevices) >= len(r.rec.Selected) {
		m.closeTraining()
	}
}

// deviceDropped records that a selected device of the round in training
// gave up its task, and closes training if no other device is awaited.
func (m *Machine) deviceDropped(e DeviceDropped) error {
	if err := topics.ValidateID(e.Device); err != nil {
		return fmt.Errorf("%w: device dropped: %v", ErrInvalidEvent, err)
	}
	if e.RoundID == 0 {
		return fmt.Errorf("%w: device %s dropped round 0", ErrInvalidEvent, e.Device)
	}
	r := m.round
	if m.run == nil || r == nil || r.rec.RoundId != e.RoundID || r.rec.Phase != fedgepb.RoundPhase_ROUND_PHASE_TRAINING {
		return nil // another round, or closed already: nothing is awaited
	}
	if _, selected := r.nonces[e.Device]; !selected {
		return nil
	}
	if _, reported := r.accepted[e.Device]; reported || slices.Contains(r.rec.DroppedDevices, e.Device) {
		return nil
	}
	r.rec.DroppedDevices = append(r.rec.DroppedDevices, e.Device)
	m.persistRound(r.rec)
	m.closeIfComplete()
	return nil
}

// decode returns the delta or the reason it is refused.
func (m *Machine) decode(codec fedgepb.Codec, b []byte) ([]float32, string) {
	dec := m.cfg.Decode
	if dec == nil {
		dec = decodeFloat32
	}
	delta, err := dec(codec, b, len(m.global))
	switch {
	case err != nil:
		return nil, ReasonBadEncoding
	case len(delta) != len(m.global):
		return nil, ReasonWrongShape
	case !finite(delta):
		return nil, ReasonNonFinite
	}
	return delta, ""
}

// accept records an update folded into the aggregate.
func (m *Machine) accept(rec *store.Update) {
	r := m.round
	r.accepted[rec.DeviceId] = rec.MessageId
	r.order = append(r.order, rec.DeviceId)
	r.train.add(rec.SampleCount, rec.GetMetrics().GetLoss(), rec.GetMetrics().GetAccuracy())
}

// lateUpdate handles an update for a round no longer training: a selected
// device's genuine update is recorded as late (not aggregated); anything
// else is a replay.
func (m *Machine) lateUpdate(rec *store.Round, e UpdateReceived) error {
	u := e.Update
	i := slices.IndexFunc(rec.Selected, func(s *fedgepb.SelectedDevice) bool { return s.DeviceId == u.DeviceId })
	if i < 0 || !bytes.Equal(rec.Selected[i].Nonce, u.Nonce) {
		return m.refuse(u, e.MessageID, ReasonReplay)
	}
	if slices.Contains(rec.Participants, u.DeviceId) {
		m.counters[ReasonAlreadyStored]++
		m.ack(u.DeviceId, u.RoundId, e.MessageID, true, ReasonAlreadyStored)
		return nil
	}
	if !slices.Contains(rec.LateDevices, u.DeviceId) {
		rec.LateDevices = append(rec.LateDevices, u.DeviceId)
		m.counters[ReasonLate]++
		m.persistRound(rec)
	}
	m.ack(u.DeviceId, u.RoundId, e.MessageID, false, ReasonLate)
	return nil
}
