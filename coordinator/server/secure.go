package server

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/aggregation"
	"github.com/fedge-dev/fedge/aggregation/secagg"
	"github.com/fedge-dev/fedge/coordinator/round"
	"github.com/fedge-dev/fedge/coordinator/store"
	"github.com/fedge-dev/fedge/internal/topics"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Secure aggregation in rounds (SecAgg+, aggregation/secagg).
//
// A run is secure when its strategy_config carries a "secure" section
// (admin.StartRequest.Secure fills it). For each round of such a run the
// coordinator runs one secagg.Server over the selected devices, sorted by
// id (a device's client index is its position). The messages:
//
//	coordinator -> device  dev/{id}/in/secagg   SecAggMessage{stage s+1}: the message that
//	                                            starts protocol stage s (stage 0: the setup)
//	device -> coordinator  dev/{id}/out/secagg  SecAggMessage{stage s+1}: the device's stage-s message
//	device -> coordinator  dev/{id}/out/update  Update{codec CODEC_SECAGG}: the masked input
//	                                            (stage 2), inline or as a blob like any update
//
// The setup body (SetupBody) gives each device what the task's
// SecAggParams cannot: the weight bound of the weight channel, the model
// dimension and the participants' enrolled Ed25519 keys, in participant
// order. The masked input goes through the round machine like an update
// (nonce, base model, sample count and metrics are checked there, and the
// machine acknowledges it); the machine's aggregator for a secure round
// (secureAgg) hands it to the secagg server instead of summing a delta, and
// finishes the round from the unmasked sum once the driver sends
// round.CloseTraining. The coordinator never sees a single device's delta.
//
// Stage timeouts: with T the round's training time (deadline - start),
// stage s (0..4) ends at start + (5+s)*T/10 at the latest, earlier when
// every expected device has answered. Local training happens before a
// device advertises its keys, so it has half of T. The secagg state is in
// memory only: a coordinator restarted during a secure round fails that
// round (RATIONALE.md) and the next one starts.

// SecureConfig is the "secure" section of StrategyConfig.
type SecureConfig struct {
	// Threshold is the Shamir threshold as a fraction of a device's share
	// holders (its graph neighbours and itself); default 0.6.
	Threshold float64 `json:"threshold,omitempty"`
	// Degree is the number of graph neighbours per device (even); 0 (or
	// at least the cohort size - 1) is the complete graph.
	Degree int `json:"degree,omitempty"`
	// ClipRange bounds every delta coordinate before quantization; default 1.
	ClipRange float64 `json:"clip_range,omitempty"`
}

// Defaults of SecureConfig.
const (
	DefaultSecureThreshold = 0.6
	DefaultSecureClip      = 1.0
)

// secureWeightFloor is the weight bound used for a device that reports no
// sample count in its capabilities.
const secureWeightFloor = 1 << 16

// SetupBodyLen is the length of a setup body for n participants.
func SetupBodyLen(n int) int { return 12 + 32*n }

// EncodeSetupBody encodes the stage-0 setup: max weight (float64 bits),
// model dimension (uint32), then each participant's 32-byte Ed25519 public
// key, all little-endian. edgeagent/agent decodes it.
func EncodeSetupBody(maxWeight float64, dim int, keys [][]byte) []byte {
	b := make([]byte, 0, SetupBodyLen(len(keys)))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(maxWeight))
	b = binary.LittleEndian.AppendUint32(b, uint32(dim))
	for _, k := range keys {
		b = append(b, k...)
	}
	return b
}

// validateSecure checks a secure section and the run it belongs to.
func validateSecure(sc *SecureConfig, run *fedgepb.RunConfig, sc2 StrategyConfig) error {
	switch {
	case math.IsNaN(sc.Threshold) || !(sc.Threshold > 0 && sc.Threshold <= 1):
		return fmt.Errorf("secure threshold %v: want a fraction in (0, 1]", sc.Threshold)
	case sc.Degree < 0 || sc.Degree%2 != 0:
		return fmt.Errorf("secure degree %d: want 0 (complete graph) or an even number of neighbours", sc.Degree)
	case math.IsNaN(sc.ClipRange) || math.IsInf(sc.ClipRange, 0) || sc.ClipRange <= 0:
		return fmt.Errorf("secure clip range %v: want a finite number > 0", sc.ClipRange)
	case sc2.NormBound > 0:
		return errors.New("secure aggregation: norm_bound bounds each update on the server, which never sees one; clip on the devices (clip_norm) instead")
	case run.MinClients < 2:
		return errors.New("secure aggregation needs min_clients >= 2")
	case run.Train.GetCodec() != fedgepb.Codec_CODEC_FLOAT32:
		return fmt.Errorf("secure aggregation sends masked fixed-point vectors: codec %v does not apply (leave it float32)", run.Train.GetCodec())
	}
	return nil
}

// secureOf returns the secure section of a run configuration, nil when the
// run is not secure.
func secureOf(run *fedgepb.RunConfig) *SecureConfig {
	if run == nil {
		return nil
	}
	c, err := ParseStrategyConfig(run.StrategyConfig)
	if err != nil {
		return nil
	}
	return c.Secure
}

// secureRound is the coordinator's side of one secure round.
type secureRound struct {
	runID, roundID uint64
	ids            []string // participants, sorted: index = client id
	index          map[string]uint32
	cfg            secagg.Config
	srv            *secagg.Server
	params         *fedgepb.SecAggParams
	setup          []byte
	startMs, span  int64
	quorum         int               // masked inputs the round needs to commit
	stash          map[string][]byte // masked inputs handed to the machine
	result         *secagg.Result
	closed         bool // CloseTraining sent
}

// stageDeadline is when the current stage ends at the latest.
func (r *secureRound) stageDeadline() int64 {
	s := int64(r.srv.Stage())
	return r.startMs + r.span*(5+s)/10
}

// aggregate is the unmasked result as a weighted sum for the strategy.
func (r *secureRound) aggregate() aggregation.Aggregate {
	vals := r.result.Values()
	w := r.cfg.MaxWeight
	for i := range vals {
		vals[i] *= w
	}
	return aggregation.Aggregate{Sum: vals, TotalWeight: r.result.WeightSum() * w, Clients: len(r.result.Survivors)}
}

// roundSeed is the public randomness of the neighbour graph, fixed by the
// round's identity before any key is seen.
func roundSeed(fleet string, runID, roundID uint64, ids []string) [32]byte {
	h := sha256.New()
	h.Write([]byte("fedge/secagg/round-seed/v1\x00" + fleet + "\x00"))
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], runID)
	binary.LittleEndian.PutUint64(b[8:], roundID)
	h.Write(b[:])
	for _, id := range ids {
		h.Write([]byte(id + "\x00"))
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// secureThreshold turns the threshold fraction into Shamir's t for share
// holders holders: at least 2 and more than half of them.
func secureThreshold(frac float64, holders int) int {
	t := int(math.Ceil(frac*float64(holders) - 1e-9))
	return min(max(t, holders/2+1, 2), holders)
}

// secureReady keeps the secure state in step with a Ready batch that was
// just persisted: it notes whether the active run is secure, drops the
// protocol of a round that closed and starts one for a round that began.
func (s *Server) secureReady(ctx context.Context, rd *round.Ready) {
	for _, r := range rd.Batch.Runs {
		if r.State == fedgepb.RunState_RUN_STATE_RUNNING && secureOf(r.Config) != nil {
			s.secRun = r.RunId
		} else if s.secRun == r.RunId {
			s.secRun = 0
		}
	}
	for _, rec := range rd.Batch.Rounds {
		if s.sec != nil && s.sec.roundID == rec.RoundId && rec.Phase != fedgepb.RoundPhase_ROUND_PHASE_TRAINING {
			s.log.Info("secure round over", zap.Uint64("round", rec.RoundId), zap.Stringer("phase", rec.Phase))
			s.sec = nil
		}
	}
	for _, rec := range rd.Batch.Rounds {
		if rec.Phase != fedgepb.RoundPhase_ROUND_PHASE_TRAINING || rec.RunId != s.secRun || (s.sec != nil && s.sec.roundID == rec.RoundId) {
			continue
		}
		if err := s.startSecure(ctx, rec); err != nil {
			s.log.Warn("secure round cannot start", zap.Uint64("round", rec.RoundId), zap.Error(err))
			s.secFailed = append(s.secFailed, round.CloseTraining{RoundID: rec.RoundId, Reason: "secure aggregation: " + err.Error()})
		}
	}
}

// startSecure sets up the protocol for a round whose devices were selected.
func (s *Server) startSecure(ctx context.Context, rec *store.Round) error {
	run, err := s.st.Run(ctx, rec.RunId)
	if err != nil {
		return err
	}
	sc := secureOf(run.Config)
	if sc == nil {
		return errors.New("run is not secure")
	}
	strat, _ := ParseStrategyConfig(run.Config.StrategyConfig)
	dim := s.secDim[rec.RoundId]
	delete(s.secDim, rec.RoundId)
	if dim <= 0 {
		return errors.New("model dimension unknown")
	}
	ids := make([]string, 0, len(rec.Selected))
	for _, d := range rec.Selected {
		ids = append(ids, d.DeviceId)
	}
	slices.Sort(ids)
	n := len(ids)
	if n < 2 {
		return fmt.Errorf("%d participants, need at least 2", n)
	}
	keys := make([][]byte, n)
	cfg := secagg.Config{Round: rec.RoundId, RoundSeed: roundSeed(s.cfg.Fleet, rec.RunId, rec.RoundId, ids), N: n,
		Degree: sc.Degree, Dim: dim, Clip: sc.ClipRange}
	if cfg.Degree == 0 || cfg.Degree >= n-1 {
		cfg.Degree = n - 1
	}
	cfg.Threshold = secureThreshold(sc.Threshold, min(cfg.Degree, n-1)+1)
	index := make(map[string]uint32, n)
	for i, id := range ids {
		index[id] = uint32(i)
		d, err := s.st.Device(ctx, id)
		if err != nil {
			return fmt.Errorf("device %s: %w", id, err)
		}
		if len(d.PublicKey) != ed25519.PublicKeySize || !s.devices.Approved(id) {
			return fmt.Errorf("device %s has no approved enrolled key", id)
		}
		pub := ed25519.PublicKey(d.PublicKey)
		keys[i] = pub
		cfg.DeviceKeys = append(cfg.DeviceKeys, pub)
		w := float64(secureWeightFloor)
		if n := d.GetCapabilities().GetSampleCount(); n > 0 {
			w = float64(n)
		}
		if m := run.Config.Train.GetMaxSamples(); m > 0 {
			w = min(w, float64(m))
		}
		if strat.SampleCap > 0 {
			w = min(w, float64(strat.SampleCap))
		}
		cfg.MaxWeight = max(cfg.MaxWeight, w)
	}
	srv, err := secagg.NewServer(cfg)
	if err != nil {
		return err
	}
	quorum := run.Config.Quorum
	if quorum == 0 {
		quorum = run.Config.MinClients
	}
	seed := cfg.RoundSeed
	s.sec = &secureRound{
		runID: rec.RunId, roundID: rec.RoundId, ids: ids, index: index, cfg: cfg, srv: srv,
		params: &fedgepb.SecAggParams{Threshold: uint32(cfg.Threshold), Degree: uint32(cfg.Degree), RoundSeed: seed[:],
			ClipRange: float32(cfg.Clip), QuantBits: 32, Participants: ids},
		setup:   EncodeSetupBody(cfg.MaxWeight, dim, keys),
		startMs: rec.StartedUnixMs, span: max(rec.DeadlineUnixMs-rec.StartedUnixMs, 10),
		quorum: int(quorum),
		stash:  map[string][]byte{},
	}
	s.log.Info("secure round started", zap.Uint64("round", rec.RoundId), zap.Int("participants", n),
		zap.Int("degree", cfg.Degree), zap.Int("threshold", cfg.Threshold), zap.Float64("max_weight", cfg.MaxWeight))
	return nil
}

// secureTask adds the round's SecAggParams to a training task; ok is false
// for the task of a secure run's round whose protocol is gone (a round
// being failed after a restart): it is not sent.
func (s *Server) secureTask(t *fedgepb.RoundTask) (*fedgepb.RoundTask, bool) {
	if t.Kind != fedgepb.TaskKind_TASK_KIND_TRAIN || s.secRun == 0 {
		return t, true
	}
	if s.sec == nil || s.sec.roundID != t.RoundId {
		return nil, false
	}
	t = proto.Clone(t).(*fedgepb.RoundTask)
	t.Secagg = proto.Clone(s.sec.params).(*fedgepb.SecAggParams)
	return t, true
}

// publishSecure sends the messages of a stage (stage is the one they start).
func (s *Server) publishSecure(ctx context.Context, r *secureRound, stage secagg.Stage, out []secagg.Outbound) {
	for _, o := range out {
		msg := &fedgepb.SecAggMessage{RoundId: r.roundID, Stage: uint32(stage) + 1, Body: o.Payload}
		if err := s.publish(ctx, topics.DeviceIn(s.cfg.Fleet, r.ids[o.To], topics.KindSecAgg), fedgepb.PayloadType_PAYLOAD_TYPE_SECAGG, msg, false); err != nil {
			s.log.Warn("publish secagg", zap.String("device", r.ids[o.To]), zap.Error(err))
		}
	}
}

// secureStarted publishes the setup of a round that has just started.
func (s *Server) secureStarted(ctx context.Context, r *secureRound) {
	out := make([]secagg.Outbound, len(r.ids))
	for i := range out {
		out[i] = secagg.Outbound{To: uint32(i), Payload: r.setup}
	}
	s.publishSecure(ctx, r, secagg.StageAdvertiseKeys, out)
}

// secureMessage handles a device's stage message (not the masked input,
// which must come as an Update so the machine checks it).
func (s *Server) secureMessage(ctx context.Context, sender string, m *fedgepb.SecAggMessage) error {
	r := s.sec
	if r == nil || r.roundID != m.RoundId || r.closed {
		s.log.Debug("secagg message for no open secure round", zap.String("device", sender), zap.Uint64("round", m.RoundId))
		return nil
	}
	idx, ok := r.index[sender]
	stage := r.srv.Stage()
	switch {
	case !ok:
		return fmt.Errorf("secagg message from %s, not a participant of round %d", sender, m.RoundId)
	case stage == secagg.StageMaskedInputCollection || uint32(stage)+1 != m.Stage:
		return fmt.Errorf("secagg message of %s for stage %d, round is collecting stage %d (%v)", sender, m.Stage, uint32(stage)+1, stage)
	}
	if err := r.srv.Receive(idx, m.Body); err != nil {
		if errors.Is(err, secagg.ErrDuplicate) {
			return nil
		}
		return fmt.Errorf("secagg message of %s: %w", sender, err)
	}
	return s.secureProgress(ctx)
}

// secureUpdate takes a masked input (an Update with CODEC_SECAGG whose
// delta is data) to the machine through the secure aggregator.
func (s *Server) secureUpdate(ctx context.Context, msgID []byte, u *fedgepb.Update, data []byte) error {
	r := s.sec
	st := s.m.Status()
	if st.RoundID != u.RoundId || st.Phase != fedgepb.RoundPhase_ROUND_PHASE_TRAINING {
		// Late or a replay: the machine answers it without the delta.
		return s.step(ctx, round.UpdateReceived{MessageID: msgID, Update: withoutDelta(u)})
	}
	if r == nil || r.roundID != u.RoundId || r.closed {
		return s.step(ctx, round.UpdateRefused{MessageID: msgID, Device: u.DeviceId, RoundID: u.RoundId, Reason: round.ReasonBadEncoding})
	}
	r.stash[u.DeviceId] = data
	err := s.step(ctx, round.UpdateReceived{MessageID: msgID, Update: withoutDelta(u)})
	delete(r.stash, u.DeviceId)
	if err != nil {
		return err
	}
	return s.secureProgress(ctx)
}

func withoutDelta(u *fedgepb.Update) *fedgepb.Update {
	c := proto.Clone(u).(*fedgepb.Update)
	c.EncodedDelta, c.DeltaBlobId = nil, nil
	return c
}

// secureTick ends a stage whose deadline has passed.
func (s *Server) secureTick(ctx context.Context) error {
	if s.sec == nil {
		return nil
	}
	return s.secureProgress(ctx)
}

// secureProgress advances the protocol while the current stage is complete
// or past its deadline; at the end it closes the machine's training phase.
func (s *Server) secureProgress(ctx context.Context) error {
	r := s.sec
	for r != nil && s.sec == r && !r.closed && r.srv.Stage() < secagg.StageDone {
		if !r.srv.Ready() && s.nowMs() < r.stageDeadline() {
			return nil
		}
		from := r.srv.Stage()
		if n := s.m.Status().Accepted; from == secagg.StageMaskedInputCollection && n < r.quorum {
			// The round cannot commit: stop before anything is unmasked.
			r.closed = true
			return s.step(ctx, round.CloseTraining{RoundID: r.roundID, Reason: fmt.Sprintf("quorum not met: %d of %d masked inputs", n, r.quorum)})
		}
		out, err := r.srv.Advance()
		if err != nil {
			r.closed = true
			s.log.Warn("secure round aborted", zap.Uint64("round", r.roundID), zap.Stringer("stage", from), zap.Error(err))
			return s.step(ctx, round.CloseTraining{RoundID: r.roundID, Reason: fmt.Sprintf("secure aggregation aborted in %v: %v", from, err)})
		}
		if r.srv.Stage() == secagg.StageDone {
			res, err := r.srv.Result()
			if err != nil {
				r.closed = true
				return s.step(ctx, round.CloseTraining{RoundID: r.roundID, Reason: fmt.Sprintf("secure aggregation: %v", err)})
			}
			r.result, r.closed = res, true
			s.log.Info("secure sum unmasked", zap.Uint64("round", r.roundID), zap.Int("survivors", len(res.Survivors)))
			return s.step(ctx, round.CloseTraining{RoundID: r.roundID})
		}
		s.publishSecure(ctx, r, r.srv.Stage(), out)
	}
	return nil
}

// secureAbortLost fails a secure round that was training when the
// coordinator stopped: its protocol state was in memory only.
func (s *Server) secureAbortLost(ctx context.Context) error {
	st := s.m.Status()
	if st.RunID == 0 {
		return nil
	}
	run, err := s.st.Run(ctx, st.RunID)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if secureOf(run.Config) == nil {
		return nil
	}
	s.secRun = st.RunID
	if st.Phase != fedgepb.RoundPhase_ROUND_PHASE_TRAINING {
		return nil
	}
	s.log.Warn("secure round lost in a restart: failing it", zap.Uint64("round", st.RoundID))
	return s.m.Step(round.CloseTraining{RoundID: st.RoundID, Reason: "secure aggregation state lost in a coordinator restart"})
}

// secureAgg is the machine's aggregator for a secure round: Add hands the
// device's masked input (stashed by secureUpdate) to the secagg server,
// Finish applies the strategy to the unmasked sum.
type secureAgg struct {
	s      *Server
	st     aggregation.StreamingStrategy
	round  uint64
	before func()
}

func (a *secureAgg) Deferred() bool { return true }

func (a *secureAgg) Add(device string, _ []float32, _ uint64) error {
	r := a.s.sec
	if r == nil || r.roundID != a.round {
		if a.s.restoringAgg {
			return nil // refolding after a restart; the round is failed right after
		}
		return errors.New("secure aggregation: no protocol for this round")
	}
	data, ok := r.stash[device]
	if !ok {
		return errors.New("secure aggregation: update did not come as a masked input")
	}
	delete(r.stash, device)
	return r.srv.Receive(r.index[device], data)
}

func (a *secureAgg) OptimizerState() *store.Optimizer { return optimizerState(a.st) }

func (a *secureAgg) Finish(global []float32) ([]float32, error) {
	r := a.s.sec
	if r == nil || r.roundID != a.round || r.result == nil {
		return nil, errors.New("secure aggregation has not produced the sum")
	}
	if a.before != nil {
		a.before()
	}
	next := append([]float32(nil), global...)
	if _, err := a.st.ApplyAggregate(a.round, next, r.aggregate()); err != nil {
		return nil, err
	}
	return next, nil
}
