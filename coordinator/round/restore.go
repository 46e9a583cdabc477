package round

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/coordinator/store"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Snapshot is the persisted state a machine is rebuilt from. The zero
// Snapshot is a fresh coordinator.
type Snapshot struct {
	// Run is the active run (state RUNNING), nil if none.
	Run *store.Run
	// Round is the active run's current round.
	Round *store.Round
	// Prev is the round before Round (late updates are matched against it).
	Prev *store.Round
	// Updates are Round's accepted updates in flight, in arrival order.
	Updates []*store.Update
	// Model is the active run's current model version with its weights, or
	// without a run the latest version (its manifest is republished).
	Model *store.ModelVersion
	// LatestVersion and LastRoundID continue the version and round sequences.
	LatestVersion uint64
	LastRoundID   uint64
	// NowUnixMs starts the clock (e.g. the wall clock at restart).
	NowUnixMs int64
}

// LoadSnapshot reads the state New needs from a store.
func LoadSnapshot(ctx context.Context, st store.Store, nowUnixMs int64) (*Snapshot, error) {
	snap := &Snapshot{NowUnixMs: nowUnixMs}
	var err error
	if snap.LatestVersion, err = st.LatestModelVersion(ctx); err != nil {
		return nil, fmt.Errorf("load snapshot: %w", err)
	}
	if snap.LastRoundID, err = st.LatestRoundID(ctx); err != nil {
		return nil, fmt.Errorf("load snapshot: %w", err)
	}
	runs, err := st.Runs(ctx)
	if err != nil {
		return nil, fmt.Errorf("load snapshot: %w", err)
	}
	for _, r := range runs {
		if r.State != fedgepb.RunState_RUN_STATE_RUNNING {
			continue
		}
		if snap.Run != nil {
			return nil, fmt.Errorf("load snapshot: %w: runs %d and %d both running", ErrInconsistent, snap.Run.RunId, r.RunId)
		}
		snap.Run = r
	}
	modelVersion := snap.LatestVersion
	if snap.Run != nil {
		modelVersion = snap.Run.ModelVersion
		if snap.Round, err = st.Round(ctx, snap.Run.CurrentRound); err != nil {
			return nil, fmt.Errorf("load snapshot: current round of run %d: %w", snap.Run.RunId, err)
		}
		if snap.Updates, err = st.Updates(ctx, snap.Round.RoundId); err != nil {
			return nil, fmt.Errorf("load snapshot: %w", err)
		}
	}
	prevID := snap.LastRoundID
	if snap.Round != nil {
		prevID = snap.Round.RoundId - 1
	}
	if prevID > 0 {
		snap.Prev, err = st.Round(ctx, prevID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("load snapshot: %w", err)
		}
	}
	if modelVersion > 0 {
		if snap.Model, err = st.ModelVersion(ctx, modelVersion); err != nil {
			return nil, fmt.Errorf("load snapshot: model version %d: %w", modelVersion, err)
		}
	}
	return snap, nil
}

// New returns a machine continuing from snap (nil or zero: a fresh start).
// Its first Ready republishes what a crash may have kept from being
// published: the current manifest, the round announcement, open tasks and
// the acks of accepted updates.
func New(cfg Config, snap *Snapshot) (*Machine, error) {
	if cfg.NewAggregator == nil {
		return nil, errors.New("round: Config.NewAggregator is required")
	}
	if snap == nil {
		snap = &Snapshot{}
	}
	m := &Machine{
		cfg: cfg, now: snap.NowUnixMs, online: map[string]*fedgepb.Capabilities{}, counters: map[string]uint64{},
		latestVersion: snap.LatestVersion, lastRoundID: snap.LastRoundID,
	}
	if snap.Prev != nil {
		m.prev = proto.Clone(snap.Prev).(*store.Round)
	}
	if snap.Model != nil {
		m.model = proto.Clone(snap.Model).(*store.ModelVersion)
		g, err := DecodeWeights(m.model.Weights, 0)
		if err != nil || len(g) == 0 {
			return nil, fmt.Errorf("restore: %w: model version %d weights: %d bytes, %v", ErrInconsistent, m.model.Version, len(m.model.Weights), err)
		}
		m.global = g
		m.publish(Message{Kind: MsgManifest, Model: m.model})
	}
	if snap.Run == nil {
		return m, nil
	}
	if err := m.restoreRun(snap); err != nil {
		return nil, fmt.Errorf("restore run %d: %w", snap.Run.RunId, err)
	}
	return m, nil
}

func (m *Machine) restoreRun(snap *Snapshot) error {
	run, rec := snap.Run, snap.Round
	switch {
	case run.State != fedgepb.RunState_RUN_STATE_RUNNING:
		return fmt.Errorf("%w: run state %v", ErrInconsistent, run.State)
	case ValidateRunConfig(run.Config) != nil:
		return fmt.Errorf("%w: %v", ErrInconsistent, ValidateRunConfig(run.Config))
	case m.model == nil || m.model.Version != run.ModelVersion:
		return fmt.Errorf("%w: model version %d of the run not in the snapshot", ErrInconsistent, run.ModelVersion)
	case rec == nil || rec.RoundId != run.CurrentRound || rec.RunId != run.RunId:
		return fmt.Errorf("%w: current round %d of the run not in the snapshot", ErrInconsistent, run.CurrentRound)
	case rec.RoundId > m.lastRoundID || m.model.Version > m.latestVersion:
		return fmt.Errorf("%w: round %d or version %d beyond the sequences", ErrInconsistent, rec.RoundId, m.model.Version)
	}
	m.run = proto.Clone(run).(*store.Run)
	r := &roundState{rec: proto.Clone(rec).(*store.Round), nonces: map[string][]byte{}, accepted: map[string][]byte{}}
	m.round = r
	for _, s := range r.rec.Selected {
		r.nonces[s.DeviceId] = s.Nonce
	}
	switch r.rec.Phase {
	case fedgepb.RoundPhase_ROUND_PHASE_WAITING:
		return nil
	case fedgepb.RoundPhase_ROUND_PHASE_TRAINING:
		return m.restoreTraining(snap.Updates)
	case fedgepb.RoundPhase_ROUND_PHASE_EVALUATING:
		if r.rec.NewVersion != m.model.Version {
			return fmt.Errorf("%w: evaluating round %d produced version %d, run is at %d", ErrInconsistent, r.rec.RoundId, r.rec.NewVersion, m.model.Version)
		}
		// The updates are gone with the commit; the round's training
		// summary lives on in its participants and the model's metrics.
		r.order = append([]string(nil), r.rec.Participants...)
		if mt := m.model.Metrics; mt != nil {
			n := float64(mt.TrainSamples)
			r.train = weighted{loss: mt.TrainLoss * n, acc: mt.TrainAccuracy * n, samples: mt.TrainSamples}
		}
		r.evals = map[string]bool{}
		for _, e := range r.rec.Evals {
			r.evals[e.DeviceId] = true
		}
		m.announce(false)
		if m.run.Config.FederatedEvaluation {
			for _, s := range r.rec.Selected {
				if !r.evals[s.DeviceId] {
					m.sendTask(s, fedgepb.TaskKind_TASK_KIND_EVALUATE)
				}
			}
		}
		return nil
	}
	return fmt.Errorf("%w: current round %d is %v", ErrInconsistent, r.rec.RoundId, r.rec.Phase)
}

// restoreTraining refolds the accepted updates in arrival order and
// republishes the announcement, the open tasks and the acks.
func (m *Machine) restoreTraining(updates []*store.Update) error {
	r := m.round
	if r.rec.BaseVersion != m.model.Version {
		return fmt.Errorf("%w: round %d trains version %d, run is at %d", ErrInconsistent, r.rec.RoundId, r.rec.BaseVersion, m.model.Version)
	}
	agg, err := m.cfg.NewAggregator(m.run.Config, r.rec.RoundId, len(m.global))
	if err != nil {
		return fmt.Errorf("aggregator: %w", err)
	}
	r.agg = agg
	for i, u := range updates {
		switch {
		case u.RoundId != r.rec.RoundId || u.Arrival != uint32(i):
			return fmt.Errorf("%w: update %d of %s (round %d, arrival %d) out of order", ErrInconsistent, i, u.DeviceId, u.RoundId, u.Arrival)
		case r.nonces[u.DeviceId] == nil:
			return fmt.Errorf("%w: update of unselected device %s", ErrInconsistent, u.DeviceId)
		}
		delta, reason := m.decode(u.Codec, u.EncodedDelta)
		if reason != "" {
			return fmt.Errorf("%w: stored update of %s: %s", ErrInconsistent, u.DeviceId, reason)
		}
		if err := agg.Add(u.DeviceId, delta, u.SampleCount); err != nil {
			return fmt.Errorf("refold update of %s: %w", u.DeviceId, err)
		}
		m.accept(u)
	}
	m.announce(true)
	for _, s := range r.rec.Selected {
		if msgID, done := r.accepted[s.DeviceId]; done {
			m.ack(s.DeviceId, r.rec.RoundId, msgID, true, "")
		} else if !slices.Contains(r.rec.DroppedDevices, s.DeviceId) {
			m.sendTask(s, fedgepb.TaskKind_TASK_KIND_TRAIN)
		}
	}
	return nil
}

// Status is a summary of the machine for status displays.
type Status struct {
	RunID, RoundID, ModelVersion uint64
	Phase                        fedgepb.RoundPhase
	Selected, Accepted, Dropped  int
	DeadlineUnixMs               int64
	NowUnixMs                    int64
}

// Reported reports whether the current round holds an accepted update of
// device: a resend of it needs no delta (the machine re-acknowledges it).
func (m *Machine) Reported(device string, roundID uint64) bool {
	if m.round == nil || m.round.rec.RoundId != roundID {
		return false
	}
	_, ok := m.round.accepted[device]
	return ok
}

// Status reports the active run's progress; RunID 0 if none.
func (m *Machine) Status() Status {
	s := Status{NowUnixMs: m.now}
	if m.model != nil {
		s.ModelVersion = m.model.Version
	}
	if m.run == nil || m.round == nil {
		return s
	}
	s.RunID, s.RoundID, s.Phase = m.run.RunId, m.round.rec.RoundId, m.round.rec.Phase
	s.Selected, s.Accepted = len(m.round.rec.Selected), len(m.round.order)
	s.Dropped = len(m.round.rec.DroppedDevices)
	s.DeadlineUnixMs = m.round.rec.DeadlineUnixMs
	if s.Phase == fedgepb.RoundPhase_ROUND_PHASE_EVALUATING {
		s.DeadlineUnixMs = m.round.rec.EvalDeadlineUnixMs
	}
	return s
}
