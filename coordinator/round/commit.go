package round

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/coordinator/store"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// closeTraining ends the training phase at the deadline or when every
// selected device has reported: commit with a quorum, fail without.
func (m *Machine) closeTraining() {
	r := m.round
	if n := uint32(len(r.order)); n < m.quorum() {
		m.failRound(fmt.Sprintf("quorum not met: %d of %d updates", n, m.quorum()))
		return
	}
	next, err := r.agg.Finish(m.global)
	switch {
	case err != nil:
		m.failRound(fmt.Sprintf("aggregation: %v", err))
		return
	case len(next) != len(m.global):
		m.failRound(fmt.Sprintf("aggregation returned %d parameters, want %d", len(next), len(m.global)))
		return
	case !finite(next):
		m.failRound("aggregation produced NaN or Inf")
		return
	}
	cfg := m.run.Config
	loss, acc := r.train.mean()
	mv := &store.ModelVersion{
		Version: m.latestVersion + 1, ModelId: m.model.ModelId, ParentVersion: m.model.Version,
		RoundId: r.rec.RoundId, RunId: m.run.RunId, Strategy: cfg.Strategy, Config: cfg,
		Participants: uint32(len(r.order)), Weights: EncodeWeights(next), CreatedUnixMs: m.now,
		Metrics: &fedgepb.RoundMetrics{
			RunId: m.run.RunId, RoundId: r.rec.RoundId, Selected: uint32(len(r.rec.Selected)),
			Accepted: uint32(len(r.order)), TrainLoss: loss, TrainAccuracy: acc, TrainSamples: r.train.samples,
			Dropped: uint32(len(r.rec.DroppedDevices)),
		},
	}
	mv.WeightsHash = hashBytes(mv.Weights)
	if err := m.sign(mv, r.rec.RoundId, len(next)); err != nil {
		m.failRound(err.Error())
		return
	}
	m.latestVersion = mv.Version
	m.model, m.global = mv, next

	r.rec.Accepted = uint32(len(r.order))
	r.rec.Participants = append([]string(nil), r.order...)
	r.rec.NewVersion, r.rec.NewHash = mv.Version, mv.WeightsHash
	r.rec.ClosedUnixMs = m.now
	m.run.ModelVersion = mv.Version
	m.run.RoundsCommitted++
	m.run.ConsecutiveFailures = 0

	m.ready.Batch.ModelVersions = append(m.ready.Batch.ModelVersions, mv)
	if s, ok := r.agg.(OptimizerSaver); ok {
		if st := s.OptimizerState(); st != nil {
			st.RunId, st.ModelVersion = m.run.RunId, mv.Version
			m.ready.Batch.Optimizers = append(m.ready.Batch.Optimizers, st)
		}
	}
	m.dropUpdates(r.rec.RoundId)
	m.ready.Commits = append(m.ready.Commits, Commit{
		RunID: m.run.RunId, RoundID: r.rec.RoundId, Version: mv.Version, Participants: len(r.order),
	})
	m.publish(Message{Kind: MsgManifest, Model: mv})
	r.agg = nil

	if cfg.FederatedEvaluation || cfg.ServerEvaluation {
		r.rec.Phase = fedgepb.RoundPhase_ROUND_PHASE_EVALUATING
		r.rec.EvalDeadlineUnixMs = m.now + cfg.EvalTimeoutMs
		r.evals = map[string]bool{}
		m.persistRun()
		m.persistRound(r.rec)
		m.announce(false)
		if cfg.FederatedEvaluation {
			for _, s := range r.rec.Selected {
				m.sendTask(s, fedgepb.TaskKind_TASK_KIND_EVALUATE)
			}
		}
		return
	}
	m.finishRound()
}

// closeTrainingEvent handles CloseTraining.
func (m *Machine) closeTrainingEvent(e CloseTraining) error {
	if e.RoundID == 0 {
		return fmt.Errorf("%w: close training of round 0", ErrInvalidEvent)
	}
	if m.run == nil || m.round == nil || m.round.rec.RoundId != e.RoundID || m.round.rec.Phase != fedgepb.RoundPhase_ROUND_PHASE_TRAINING {
		return nil
	}
	if e.Reason != "" {
		m.failRound(e.Reason)
		return nil
	}
	m.closeTraining()
	return nil
}

// failRound ends a round without a new model and starts the next one,
// unless too many rounds failed in a row.
func (m *Machine) failRound(reason string) {
	r := m.round
	r.rec.Phase = fedgepb.RoundPhase_ROUND_PHASE_FAILED
	r.rec.Reason = reason
	r.rec.ClosedUnixMs = m.now
	r.rec.Accepted = uint32(len(r.order))
	r.rec.Participants = append([]string(nil), r.order...)
	m.persistRound(r.rec)
	m.dropUpdates(r.rec.RoundId)
	met := m.metrics()
	met.Failed = true
	m.ready.Batch.Metrics = append(m.ready.Batch.Metrics, met)
	m.run.ConsecutiveFailures++
	limit := m.run.Config.MaxFailedRounds
	if limit == 0 {
		limit = defaultMaxFailedRounds
	}
	if m.run.ConsecutiveFailures >= limit {
		m.endRun(fedgepb.RunState_RUN_STATE_FAILED, fmt.Sprintf("%d consecutive rounds failed, last: %s", m.run.ConsecutiveFailures, reason))
		return
	}
	m.prev = r.rec
	m.startRound()
}

// metrics summarizes the current round.
func (m *Machine) metrics() *store.Metrics {
	r := m.round
	loss, acc := r.train.mean()
	met := &store.Metrics{
		RunId: m.run.RunId, RoundId: r.rec.RoundId, ModelVersion: r.rec.NewVersion,
		Selected: uint32(len(r.rec.Selected)), Accepted: uint32(len(r.order)), Late: uint32(len(r.rec.LateDevices)),
		Dropped:    uint32(len(r.rec.DroppedDevices)),
		Rejections: r.rec.Rejections, TrainLoss: loss, TrainAccuracy: acc, TrainSamples: r.train.samples,
		HasServerEval: r.rec.HasServerEval, ServerLoss: r.rec.ServerLoss, ServerAccuracy: r.rec.ServerAccuracy,
		DurationMs: m.now - r.rec.StartedUnixMs, UnixMs: m.now,
	}
	var ev weighted
	for _, e := range r.rec.Evals {
		ev.add(e.SampleCount, e.Loss, e.Accuracy)
	}
	met.EvalLoss, met.EvalAccuracy = ev.mean()
	met.EvalSamples = ev.samples
	return proto.Clone(met).(*store.Metrics)
}

// finishEval closes the round's evaluation and persists its metrics; it
// returns the accuracy the run's target is checked against.
func (m *Machine) finishEval() (acc float64, ok bool) {
	r := m.round
	r.rec.Phase = fedgepb.RoundPhase_ROUND_PHASE_DONE
	met := m.metrics()
	m.persistRound(r.rec)
	m.ready.Batch.Metrics = append(m.ready.Batch.Metrics, met)
	switch {
	case met.HasServerEval:
		acc, ok = met.ServerAccuracy, true
	case met.EvalSamples > 0:
		acc, ok = met.EvalAccuracy, true
	}
	if ok {
		m.run.LastAccuracy, m.run.HasAccuracy = acc, true
	}
	return acc, ok
}

// finishRound completes a committed round and starts the next one or ends
// the run.
func (m *Machine) finishRound() {
	acc, ok := m.finishEval()
	cfg := m.run.Config
	switch {
	case cfg.TargetAccuracy > 0 && ok && acc >= cfg.TargetAccuracy:
		m.endRun(fedgepb.RunState_RUN_STATE_DONE, fmt.Sprintf("target accuracy %.4f reached: %.4f", cfg.TargetAccuracy, acc))
	case cfg.Rounds > 0 && m.run.RoundsCommitted >= cfg.Rounds:
		m.endRun(fedgepb.RunState_RUN_STATE_DONE, fmt.Sprintf("%d rounds committed", m.run.RoundsCommitted))
	default:
		m.prev = m.round.rec
		m.startRound()
	}
}
