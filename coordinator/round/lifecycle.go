package round

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/coordinator/store"
	"github.com/fedge-dev/fedge/internal/topics"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

const defaultMaxFailedRounds = 3

// ValidateRunConfig reports why a run configuration cannot run.
func ValidateRunConfig(c *fedgepb.RunConfig) error {
	switch {
	case c == nil:
		return fmt.Errorf("%w: nil", ErrInvalidConfig)
	case c.ModelId == "":
		return fmt.Errorf("%w: no model id", ErrInvalidConfig)
	case !(c.Fraction > 0 && c.Fraction <= 1):
		return fmt.Errorf("%w: fraction %v not in (0, 1]", ErrInvalidConfig, c.Fraction)
	case c.MinClients == 0:
		return fmt.Errorf("%w: min clients 0", ErrInvalidConfig)
	case c.MaxClients != 0 && c.MaxClients < c.MinClients:
		return fmt.Errorf("%w: max clients %d below min clients %d", ErrInvalidConfig, c.MaxClients, c.MinClients)
	case c.MaxClients != 0 && c.Quorum > c.MaxClients:
		return fmt.Errorf("%w: quorum %d above max clients %d", ErrInvalidConfig, c.Quorum, c.MaxClients)
	case c.RoundTimeoutMs <= 0:
		return fmt.Errorf("%w: round timeout %d ms", ErrInvalidConfig, c.RoundTimeoutMs)
	case (c.FederatedEvaluation || c.ServerEvaluation) && c.EvalTimeoutMs <= 0:
		return fmt.Errorf("%w: evaluation needs a positive eval timeout", ErrInvalidConfig)
	case c.Rounds == 0 && c.TargetAccuracy <= 0:
		return fmt.Errorf("%w: neither a round count nor a target accuracy", ErrInvalidConfig)
	case c.TargetAccuracy > 0 && !c.FederatedEvaluation && !c.ServerEvaluation:
		return fmt.Errorf("%w: a target accuracy needs evaluation", ErrInvalidConfig)
	case !finite64(c.Fraction, c.TargetAccuracy):
		return fmt.Errorf("%w: non-finite number", ErrInvalidConfig)
	case slices.Contains(c.RequiredFeatures, ""):
		return fmt.Errorf("%w: empty required feature", ErrInvalidConfig)
	}
	return nil
}

func (m *Machine) quorum() uint32 {
	if q := m.run.Config.Quorum; q > 0 {
		return q
	}
	return m.run.Config.MinClients
}

func (m *Machine) startRun(e StartRun) error {
	if m.run != nil {
		return fmt.Errorf("start run %d: %w (run %d)", e.RunID, ErrRunActive, m.run.RunId)
	}
	if e.RunID == 0 {
		return fmt.Errorf("start run: %w: run id 0", ErrInvalidEvent)
	}
	if err := ValidateRunConfig(e.Config); err != nil {
		return fmt.Errorf("start run %d: %w", e.RunID, err)
	}
	base := e.Base
	if base == nil || base.ModelId != e.Config.ModelId {
		return fmt.Errorf("start run %d: %w: base model is not of model %q", e.RunID, ErrInvalidEvent, e.Config.ModelId)
	}
	global, err := DecodeWeights(base.Weights, 0)
	if err != nil || len(global) == 0 || !finite(global) {
		return fmt.Errorf("start run %d: %w: base weights unusable (%d bytes, %v)", e.RunID, ErrInvalidEvent, len(base.Weights), err)
	}
	base = proto.Clone(base).(*store.ModelVersion)
	if base.Version == 0 {
		base.Version = m.latestVersion + 1
		base.ParentVersion = 0
		base.WeightsHash = hashBytes(base.Weights)
		base.CreatedUnixMs = m.now
		if err := m.sign(base, 0, len(global)); err != nil {
			return fmt.Errorf("start run %d: %w", e.RunID, err)
		}
		m.latestVersion = base.Version
		m.ready.Batch.ModelVersions = append(m.ready.Batch.ModelVersions, base)
		m.publish(Message{Kind: MsgManifest, Model: base})
	} else if base.Version > m.latestVersion {
		return fmt.Errorf("start run %d: %w: base version %d was never stored (latest %d)", e.RunID, ErrInvalidEvent, base.Version, m.latestVersion)
	}
	m.model, m.global = base, global
	m.run = &store.Run{
		RunId: e.RunID, Config: proto.Clone(e.Config).(*fedgepb.RunConfig), State: fedgepb.RunState_RUN_STATE_RUNNING,
		StartedUnixMs: m.now, ModelVersion: base.Version,
	}
	m.startRound()
	return nil
}

// sign fills the manifest of a model version and has it signed. The module
// fields (wasm hash and length) come from mv's own manifest if it has one,
// else from the current model's if it is the same model.
func (m *Machine) sign(mv *store.ModelVersion, roundID uint64, dim int) error {
	man := &fedgepb.ModelManifest{}
	if len(mv.Manifest) > 0 {
		if err := proto.Unmarshal(mv.Manifest, man); err != nil {
			return fmt.Errorf("manifest of version %d: %w", mv.Version, err)
		}
	} else if m.model != nil && m.model.ModelId == mv.ModelId && len(m.model.Manifest) > 0 {
		if err := proto.Unmarshal(m.model.Manifest, man); err != nil {
			return fmt.Errorf("manifest of version %d: %w", m.model.Version, err)
		}
	}
	man.ModelId, man.Version, man.RoundId = mv.ModelId, mv.Version, roundID
	man.WeightsHash, man.WeightsLength, man.ParamCount = mv.WeightsHash, uint64(len(mv.Weights)), uint64(dim)
	man.CreatedUnixMs, man.Signature = m.now, nil
	if m.cfg.Signer != nil {
		if err := m.cfg.Signer.SignManifest(man); err != nil {
			return fmt.Errorf("sign manifest of version %d: %w", mv.Version, err)
		}
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(man)
	if err != nil {
		return fmt.Errorf("encode manifest of version %d: %w", mv.Version, err)
	}
	mv.Manifest = b
	return nil
}

func (m *Machine) publish(msg Message) { m.ready.Messages = append(m.ready.Messages, msg) }

// persistRun puts the run's current state in the batch (once per batch).
func (m *Machine) persistRun() {
	rec := proto.Clone(m.run).(*store.Run)
	b := &m.ready.Batch
	if i := slices.IndexFunc(b.Runs, func(r *store.Run) bool { return r.RunId == rec.RunId }); i >= 0 {
		b.Runs[i] = rec
		return
	}
	b.Runs = append(b.Runs, rec)
}

// persistRound puts a round's current state in the batch (once per batch).
func (m *Machine) persistRound(r *store.Round) {
	rec := proto.Clone(r).(*store.Round)
	b := &m.ready.Batch
	if i := slices.IndexFunc(b.Rounds, func(x *store.Round) bool { return x.RoundId == rec.RoundId }); i >= 0 {
		b.Rounds[i] = rec
		return
	}
	b.Rounds = append(b.Rounds, rec)
}

// dropUpdates deletes a closed round's updates in flight, including those
// accepted in this very batch (a batch deletes before it puts).
func (m *Machine) dropUpdates(round uint64) {
	b := &m.ready.Batch
	b.Updates = slices.DeleteFunc(b.Updates, func(u *store.Update) bool { return u.RoundId == round })
	b.DeleteUpdates = append(b.DeleteUpdates, round)
}

// startRound opens the run's next round: it selects devices now, or waits
// for enough of them.
func (m *Machine) startRound() {
	m.lastRoundID++
	rec := &store.Round{
		RoundId: m.lastRoundID, RunId: m.run.RunId, Phase: fedgepb.RoundPhase_ROUND_PHASE_WAITING,
		ModelId: m.model.ModelId, BaseVersion: m.model.Version, BaseHash: m.model.WeightsHash,
	}
	m.round = &roundState{rec: rec}
	m.run.CurrentRound = rec.RoundId
	m.persistRun()
	if !m.trySelect() {
		m.persistRound(rec)
	}
}

// trySelect selects the devices of a waiting round and sends their tasks;
// false if too few eligible devices are online.
func (m *Machine) trySelect() bool {
	r := m.round
	cfg := m.run.Config
	cands := eligible(m.online, cfg)
	k := selectCount(cfg, len(cands))
	if k == 0 {
		return false
	}
	agg, err := m.cfg.NewAggregator(cfg, r.rec.RoundId, len(m.global))
	if err != nil {
		m.failRound(fmt.Sprintf("aggregator: %v", err))
		return true
	}
	r.agg = agg
	r.nonces = map[string][]byte{}
	r.accepted = map[string][]byte{}
	for _, id := range choose(cands, k, cfg.Seed, r.rec.RoundId) {
		n := nonce(m.cfg.NonceKey, m.run.RunId, cfg.Seed, r.rec.RoundId, id)
		r.nonces[id] = n
		r.rec.Selected = append(r.rec.Selected, &fedgepb.SelectedDevice{DeviceId: id, Nonce: n})
	}
	r.rec.Phase = fedgepb.RoundPhase_ROUND_PHASE_TRAINING
	r.rec.StartedUnixMs = m.now
	r.rec.DeadlineUnixMs = m.now + cfg.RoundTimeoutMs
	m.persistRound(r.rec)
	m.announce(true)
	for _, s := range r.rec.Selected {
		m.sendTask(s, fedgepb.TaskKind_TASK_KIND_TRAIN)
	}
	return true
}

func (m *Machine) announce(open bool) {
	m.publish(Message{Kind: MsgAnnouncement, Announcement: &fedgepb.RoundAnnouncement{
		RoundId: m.round.rec.RoundId, ModelId: m.model.ModelId, ModelVersion: m.model.Version, Open: open,
	}})
}

func (m *Machine) sendTask(s *fedgepb.SelectedDevice, kind fedgepb.TaskKind) {
	rec, cfg := m.round.rec, m.run.Config
	t := &fedgepb.RoundTask{
		RoundId: rec.RoundId, Kind: kind, ModelId: m.model.ModelId, ModelVersion: m.model.Version,
		BaseModelHash: m.model.WeightsHash, Nonce: s.Nonce,
	}
	switch kind {
	case fedgepb.TaskKind_TASK_KIND_TRAIN:
		t.Train, t.DeadlineUnixMs = cfg.Train, rec.DeadlineUnixMs
	case fedgepb.TaskKind_TASK_KIND_EVALUATE:
		t.Evaluate, t.DeadlineUnixMs = cfg.Evaluate, rec.EvalDeadlineUnixMs
	}
	m.publish(Message{Kind: MsgTask, Device: s.DeviceId, Task: proto.Clone(t).(*fedgepb.RoundTask)})
}

func (m *Machine) ack(device string, round uint64, msgID []byte, accepted bool, reason string) {
	if device == "" {
		return
	}
	m.publish(Message{Kind: MsgAck, Device: device, Ack: &fedgepb.Ack{
		RoundId: round, MessageId: append([]byte(nil), msgID...), Accepted: accepted, Reason: reason,
	}})
}

func (m *Machine) tick(e Tick) error {
	if e.NowUnixMs < m.now {
		return nil // the clock never goes back (a wall clock may)
	}
	m.now = e.NowUnixMs
	if m.run == nil || m.round == nil {
		return nil
	}
	rec := m.round.rec
	switch rec.Phase {
	case fedgepb.RoundPhase_ROUND_PHASE_WAITING:
		if m.trySelect() {
			return nil
		}
	case fedgepb.RoundPhase_ROUND_PHASE_TRAINING:
		if m.now >= rec.DeadlineUnixMs {
			m.closeTraining()
		}
	case fedgepb.RoundPhase_ROUND_PHASE_EVALUATING:
		if m.now >= rec.EvalDeadlineUnixMs {
			m.finishRound()
		}
	}
	return nil
}

func (m *Machine) deviceOnline(e DeviceOnline) error {
	if err := topics.ValidateID(e.Device); err != nil {
		return fmt.Errorf("%w: device online: %v", ErrInvalidEvent, err)
	}
	caps := e.Caps
	if caps == nil {
		caps = &fedgepb.Capabilities{}
	}
	m.online[e.Device] = proto.Clone(caps).(*fedgepb.Capabilities)
	if m.run != nil && m.round != nil && m.round.rec.Phase == fedgepb.RoundPhase_ROUND_PHASE_WAITING {
		m.trySelect()
	}
	return nil
}

func (m *Machine) stop(e Stop) error {
	if m.run == nil {
		return nil
	}
	if r := m.round; r != nil {
		switch r.rec.Phase {
		case fedgepb.RoundPhase_ROUND_PHASE_WAITING, fedgepb.RoundPhase_ROUND_PHASE_TRAINING:
			r.rec.Phase = fedgepb.RoundPhase_ROUND_PHASE_ABORTED
			r.rec.Reason = "stopped: " + e.Reason
			r.rec.ClosedUnixMs = m.now
			m.persistRound(r.rec)
			m.dropUpdates(r.rec.RoundId)
		case fedgepb.RoundPhase_ROUND_PHASE_EVALUATING:
			// The model is committed; keep the evaluation gathered so far.
			m.finishEval()
		}
	}
	m.endRun(fedgepb.RunState_RUN_STATE_STOPPED, "stopped: "+e.Reason)
	return nil
}

// endRun finishes the run: persisted, announced closed, reported in Ended.
func (m *Machine) endRun(state fedgepb.RunState, reason string) {
	m.run.State, m.run.Reason, m.run.FinishedUnixMs = state, reason, m.now
	m.persistRun()
	m.announce(false)
	m.ready.Ended = append(m.ready.Ended, proto.Clone(m.run).(*store.Run))
	if m.round != nil {
		m.prev = m.round.rec
	}
	m.run, m.round = nil, nil
}
