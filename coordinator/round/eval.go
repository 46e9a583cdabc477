package round

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/fedge-dev/fedge/internal/topics"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// evalReceived takes a federated evaluation result of the model the
// current round committed.
func (m *Machine) evalReceived(e EvalResultReceived) error {
	res := e.Result
	if res == nil {
		return fmt.Errorf("%w: nil evaluation result", ErrInvalidEvent)
	}
	if err := topics.ValidateID(res.DeviceId); err != nil {
		return fmt.Errorf("%w: evaluation result: %v", ErrInvalidEvent, err)
	}
	refuse := func(reason string) error {
		m.count(reason)
		m.ack(res.DeviceId, res.RoundId, e.MessageID, false, reason)
		return nil
	}
	r := m.round
	if r == nil || res.RoundId != r.rec.RoundId || r.rec.Phase != fedgepb.RoundPhase_ROUND_PHASE_EVALUATING ||
		!m.run.Config.FederatedEvaluation {
		if res.RoundId > m.lastRoundID || res.RoundId == 0 {
			return refuse(ReasonUnknownRound)
		}
		return refuse(ReasonNotOpen)
	}
	i := slices.IndexFunc(r.rec.Selected, func(s *fedgepb.SelectedDevice) bool { return s.DeviceId == res.DeviceId })
	switch {
	case i < 0:
		return refuse(ReasonNotSelected)
	case !bytes.Equal(r.rec.Selected[i].Nonce, res.Nonce):
		return refuse(ReasonBadNonce)
	case r.evals[res.DeviceId]:
		m.counters[ReasonAlreadyStored]++
		m.ack(res.DeviceId, res.RoundId, e.MessageID, true, ReasonAlreadyStored)
		return nil
	case !bytes.Equal(res.BaseModelHash, r.rec.NewHash):
		return refuse(ReasonStaleBase)
	case res.SampleCount == 0:
		return refuse(ReasonNoSamples)
	case !finite64(res.Loss, res.Accuracy) || res.Accuracy < 0 || res.Accuracy > 1:
		return refuse(ReasonNonFinite)
	}
	r.evals[res.DeviceId] = true
	r.rec.Evals = append(r.rec.Evals, &fedgepb.EvalEntry{
		DeviceId: res.DeviceId, SampleCount: res.SampleCount, Loss: res.Loss, Accuracy: res.Accuracy,
	})
	m.persistRound(r.rec)
	m.ack(res.DeviceId, res.RoundId, e.MessageID, true, "")
	m.maybeFinishEval()
	return nil
}

// evalComputed takes the server-side evaluation of a round's model; one for
// another round or phase is ignored (it arrived too late to matter).
func (m *Machine) evalComputed(e EvalComputed) error {
	if !finite64(e.Loss, e.Accuracy) {
		return fmt.Errorf("%w: non-finite server evaluation", ErrInvalidEvent)
	}
	r := m.round
	if r == nil || e.RoundID != r.rec.RoundId || r.rec.Phase != fedgepb.RoundPhase_ROUND_PHASE_EVALUATING ||
		!m.run.Config.ServerEvaluation || r.rec.HasServerEval {
		return nil
	}
	r.rec.HasServerEval, r.rec.ServerLoss, r.rec.ServerAccuracy = true, e.Loss, e.Accuracy
	m.persistRound(r.rec)
	m.maybeFinishEval()
	return nil
}

// maybeFinishEval finishes the round once every evaluation it waits for is in.
func (m *Machine) maybeFinishEval() {
	r, cfg := m.round, m.run.Config
	if cfg.FederatedEvaluation && len(r.rec.Evals) < len(r.rec.Selected) {
		return
	}
	if cfg.ServerEvaluation && !r.rec.HasServerEval {
		return
	}
	m.finishRound()
}
