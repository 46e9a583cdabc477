package server

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/aggregation"
	"github.com/fedge-dev/fedge/coordinator/admin"
	"github.com/fedge-dev/fedge/coordinator/registry"
	"github.com/fedge-dev/fedge/coordinator/round"
	"github.com/fedge-dev/fedge/coordinator/store"
	"github.com/fedge-dev/fedge/internal/topics"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

var _ admin.API = (*Server)(nil)

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", admin.ErrBadRequest, fmt.Sprintf(format, args...))
}

var codecNames = map[string]fedgepb.Codec{
	"": fedgepb.Codec_CODEC_FLOAT32, "float32": fedgepb.Codec_CODEC_FLOAT32, "float16": fedgepb.Codec_CODEC_FLOAT16,
	"int8": fedgepb.Codec_CODEC_INT8, "topk": fedgepb.Codec_CODEC_TOPK,
}

// RunConfig turns an admin start request into a run configuration,
// filling the documented defaults.
func RunConfig(req admin.StartRequest) (*fedgepb.RunConfig, error) {
	if req.Model == "" {
		return nil, badRequest("model is required")
	}
	c, ok := codecNames[strings.ToLower(req.Codec)]
	if !ok {
		return nil, badRequest("codec %q: want float32, float16, int8 or topk", req.Codec)
	}
	if c == fedgepb.Codec_CODEC_TOPK && !(req.TopKFraction > 0 && req.TopKFraction <= 1) {
		return nil, badRequest("codec topk needs topk_fraction in (0, 1]")
	}
	for _, v := range []float64{req.Fraction, float64(req.LearningRate), float64(req.ProximalMu), float64(req.ClipNorm), req.TargetAccuracy,
		req.DPNoiseMultiplier, req.DPClip, req.DPDelta, req.DPSamplingRate} {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return nil, badRequest("numbers must be finite and non-negative")
		}
	}
	for k, v := range req.Tags {
		if k == "" || len(k) > 64 || len(v) > 64 {
			return nil, badRequest("tag filter %q=%q: keys 1-64 bytes, values up to 64", k, v)
		}
	}
	cfg := &fedgepb.RunConfig{
		ModelId: req.Model, Strategy: defString(req.Strategy, "fedavg"), StrategyConfig: req.StrategyConfig,
		Fraction: defF(req.Fraction, 1), MinClients: defU(req.MinClients, 1), MaxClients: req.MaxClients,
		TagFilter: req.Tags, Quorum: req.Quorum, RoundTimeoutMs: defI(req.DeadlineMs, 60_000),
		Rounds: req.Rounds, TargetAccuracy: req.TargetAccuracy, Seed: req.Seed,
		Train: &fedgepb.TrainConfig{
			Epochs: defU(req.Epochs, 1), BatchSize: defU(req.BatchSize, 32), LearningRate: float32(defF(float64(req.LearningRate), 0.05)),
			ProximalMu: req.ProximalMu, Seed: req.Seed, Codec: c, MaxSamples: req.MaxSamples, ClipNorm: req.ClipNorm, TopkFraction: req.TopKFraction,
		},
		Evaluate:            &fedgepb.EvaluateConfig{BatchSize: defU(req.EvalBatchSize, 64), MaxSamples: req.EvalMaxSamples},
		FederatedEvaluation: req.FederatedEval, ServerEvaluation: req.ServerEval, MaxFailedRounds: req.MaxFailed,
	}
	if cfg.Rounds == 0 && cfg.TargetAccuracy == 0 {
		cfg.Rounds = 1
	}
	if cfg.FederatedEvaluation || cfg.ServerEvaluation {
		cfg.EvalTimeoutMs = defI(req.EvalTimeoutMs, 30_000)
	}
	if err := round.ValidateRunConfig(cfg); err != nil {
		return nil, badRequest("%v", err)
	}
	st, err := NewStrategy(cfg)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	if err := secureRunConfig(req, cfg, st); err != nil {
		return nil, badRequest("%v", err)
	}
	if err := dpRunConfig(req, cfg); err != nil {
		return nil, badRequest("%v", err)
	}
	return cfg, nil
}

// dpRunConfig puts the request's differential privacy settings into the
// run's strategy configuration and sets the devices' clip norm to the DP
// clip, so every device clips its delta to C before sending it (the
// server clips again when it sees individual updates).
func dpRunConfig(req admin.StartRequest, cfg *fedgepb.RunConfig) error {
	sc, err := ParseStrategyConfig(cfg.StrategyConfig)
	if err != nil {
		return err
	}
	if sc.DP != nil {
		return errors.New("strategy_config.dp is set from the request's dp_* fields, not directly")
	}
	if req.DPNoiseMultiplier == 0 {
		if req.DPClip != 0 || req.DPDelta != 0 || req.DPSamplingRate != 0 || req.DPNoiseSeed != 0 {
			return errors.New("dp_clip, dp_delta, dp_sampling_rate and dp_noise_seed need dp_noise_multiplier > 0")
		}
		return nil
	}
	// The clip travels to the devices as a float32: use that value
	// everywhere so the device bound and the accounted sensitivity agree.
	clip := float64(float32(req.DPClip))
	switch {
	case !(clip > 0) || math.IsInf(clip, 0):
		return fmt.Errorf("dp_noise_multiplier needs a positive dp_clip (the L2 bound of each update) up to %g, got %v", math.MaxFloat32, req.DPClip)
	case req.ClipNorm != 0 && float64(req.ClipNorm) != clip:
		return fmt.Errorf("clip_norm %v differs from dp_clip %v: with differential privacy the devices clip to dp_clip (leave clip_norm unset)", req.ClipNorm, req.DPClip)
	case req.Secure:
		return errors.New("dp_noise_multiplier with secure: DP needs uniformly weighted updates and secure aggregation weights them by sample count; not supported yet")
	}
	d := &DPConfig{NoiseMultiplier: req.DPNoiseMultiplier, Clip: clip, Delta: defF(req.DPDelta, DefaultDPDelta),
		SamplingRate: defF(req.DPSamplingRate, cfg.Fraction), NoiseSeed: req.DPNoiseSeed}
	if !(d.Delta < 1) {
		return fmt.Errorf("dp_delta %v not in (0, 1)", d.Delta)
	}
	if !(d.SamplingRate <= 1) {
		return fmt.Errorf("dp_sampling_rate %v not in (0, 1]", d.SamplingRate)
	}
	if _, err := dpEpsilon(d, 1); err != nil {
		return fmt.Errorf("dp_noise_multiplier %v: the accountant cannot bound one round (%v); use a larger multiplier", d.NoiseMultiplier, err)
	}
	sc.DP = d
	raw, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	cfg.StrategyConfig = raw
	cfg.Train.ClipNorm = float32(clip)
	if _, err := NewStrategy(cfg); err != nil {
		return err
	}
	return nil
}

// secureRunConfig puts the request's secure aggregation settings into the
// run's strategy configuration after checking that the strategy can
// finish from a sum.
func secureRunConfig(req admin.StartRequest, cfg *fedgepb.RunConfig, st aggregation.Strategy) error {
	sc, err := ParseStrategyConfig(cfg.StrategyConfig)
	if err != nil {
		return err
	}
	if sc.Secure != nil {
		return errors.New("strategy_config.secure is set from the request's secure fields, not directly")
	}
	if !req.Secure {
		if req.SecureThreshold != 0 || req.SecureDegree != 0 || req.SecureClipRange != 0 {
			return errors.New("secure_threshold, secure_degree and secure_clip_range need secure")
		}
		return nil
	}
	if _, err := aggregation.RequireStreaming(st); err != nil {
		return fmt.Errorf("secure aggregation reveals only the sum of the updates, so strategy %q, which needs every update, cannot be used with it; use fedavg, fedavgm, fedadam, fedyogi or fedadagrad", cfg.Strategy)
	}
	sc.Secure = &SecureConfig{Threshold: defF(req.SecureThreshold, DefaultSecureThreshold), Degree: req.SecureDegree,
		ClipRange: defF(req.SecureClipRange, DefaultSecureClip)}
	if err := validateSecure(sc.Secure, cfg, sc); err != nil {
		return err
	}
	raw, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	cfg.StrategyConfig = raw
	// Only agents that speak the protocol are selected: an older one would
	// send a plain update, which the coordinator refuses but would have seen.
	cfg.RequiredFeatures = append(cfg.RequiredFeatures, fedgepb.FeatureSecAgg)
	return nil
}

func defString(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
func defF(x, d float64) float64 {
	if x == 0 {
		return d
	}
	return x
}
func defU(x, d uint32) uint32 {
	if x == 0 {
		return d
	}
	return x
}
func defI(x, d int64) int64 {
	if x == 0 {
		return d
	}
	return x
}

func (s *Server) audit(ctx context.Context, actor, action, target, detail string) error {
	b := &store.Batch{Audit: []*store.AuditEntry{{UnixMs: s.nowMs(), Actor: defString(actor, "admin"), Action: action, Target: target, Detail: detail}}}
	if err := s.st.Apply(ctx, b); err != nil {
		return fmt.Errorf("%w: audit %s: %v", errFatal, action, err)
	}
	return nil
}

// StartRun starts a multi-round run from the model's latest version (or
// fresh initial weights with Reinit or when the model has none).
func (s *Server) StartRun(ctx context.Context, actor string, req admin.StartRequest) (*admin.RunDoc, error) {
	cfg, err := RunConfig(req)
	if err != nil {
		return nil, err
	}
	if cfg.ServerEvaluation && s.cfg.Evaluator == nil {
		return nil, badRequest("server evaluation: the coordinator has no test set (serve --test-data)")
	}
	mod, err := s.cfg.Models.Get(ctx, cfg.ModelId)
	if errors.Is(err, registry.ErrUnknownModel) {
		return nil, fmt.Errorf("%w: %v", admin.ErrNotFound, err)
	}
	if err != nil {
		return nil, badRequest("%v", err)
	}
	var doc *admin.RunDoc
	err = s.do(ctx, func(ctx context.Context) error {
		if st := s.m.Status(); st.RunID != 0 {
			return fmt.Errorf("%w: run %d is active (round stop first)", admin.ErrConflict, st.RunID)
		}
		base, err := s.baseVersion(ctx, cfg, mod, req.Reinit)
		if err != nil {
			return err
		}
		runID, err := s.st.NextSequence(ctx, "run")
		if err != nil {
			return fmt.Errorf("%w: run id: %v", errFatal, err)
		}
		if err := s.m.Step(round.StartRun{RunID: runID, Config: cfg, Base: base}); err != nil {
			return badRequest("%v", err)
		}
		if err := s.flush(ctx); err != nil {
			return err
		}
		if err := s.audit(ctx, actor, "round.start", fmt.Sprintf("run/%d", runID), fmt.Sprintf("model=%s strategy=%s rounds=%d", cfg.ModelId, cfg.Strategy, cfg.Rounds)); err != nil {
			return err
		}
		r, err := s.st.Run(ctx, runID)
		if err != nil {
			return err
		}
		doc = runDoc(r)
		return nil
	})
	return doc, err
}

// baseVersion is the latest stored version of the model, or a new initial
// model (version 0: the machine numbers, signs and persists it).
func (s *Server) baseVersion(ctx context.Context, cfg *fedgepb.RunConfig, mod *registry.Module, reinit bool) (*store.ModelVersion, error) {
	if !reinit {
		vs, err := s.st.ModelVersions(ctx, false)
		if err != nil {
			return nil, err
		}
		for i := len(vs) - 1; i >= 0; i-- {
			if vs[i].ModelId == cfg.ModelId {
				mv, err := s.st.ModelVersion(ctx, vs[i].Version)
				if err != nil {
					return nil, err
				}
				if len(mv.Weights) == 4*mod.Meta.Params {
					return mv, nil
				}
				break
			}
		}
	}
	w, err := s.cfg.Models.InitialWeights(ctx, cfg.ModelId, cfg.Seed)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	man, err := proto.Marshal(&fedgepb.ModelManifest{ModelId: cfg.ModelId, WasmHash: mod.Hash[:], WasmLength: uint64(len(mod.Wasm))})
	if err != nil {
		return nil, err
	}
	return &store.ModelVersion{ModelId: cfg.ModelId, Weights: round.EncodeWeights(w), Manifest: man}, nil
}

// StopRun stops the active run.
func (s *Server) StopRun(ctx context.Context, actor, reason string) (*admin.RunDoc, error) {
	if len(reason) > 200 {
		return nil, badRequest("reason longer than 200 bytes")
	}
	var doc *admin.RunDoc
	err := s.do(ctx, func(ctx context.Context) error {
		st := s.m.Status()
		if st.RunID == 0 {
			return fmt.Errorf("%w: no active run", admin.ErrConflict)
		}
		if err := s.m.Step(round.Stop{Reason: defString(reason, "by "+defString(actor, "admin"))}); err != nil {
			return err
		}
		if err := s.flush(ctx); err != nil {
			return err
		}
		if err := s.audit(ctx, actor, "round.stop", fmt.Sprintf("run/%d", st.RunID), reason); err != nil {
			return err
		}
		r, err := s.st.Run(ctx, st.RunID)
		if err != nil {
			return err
		}
		doc = runDoc(r)
		return nil
	})
	return doc, err
}

// Status reports the active (or last) run, its round and history.
func (s *Server) Status(ctx context.Context) (*admin.StatusDoc, error) {
	var st round.Status
	var counters map[string]uint64
	var online int
	if err := s.do(ctx, func(context.Context) error {
		st, counters, online = s.m.Status(), s.m.Counters(), len(s.online)
		return nil
	}); err != nil {
		return nil, err
	}
	doc := &admin.StatusDoc{Schema: admin.StatusSchema, NowUnixMs: st.NowUnixMs, ModelVersion: st.ModelVersion,
		History: []admin.HistoryEntry{}, Rejections: map[string]uint64{}, DevicesOnline: online, Inbound: s.inboundDoc()}
	for k, v := range counters {
		doc.Rejections[k] = v
	}
	for r, v := range s.wireCnt.Snapshot().Rejected {
		doc.Rejections[string(r)] += v
	}
	runID := st.RunID
	if runID == 0 {
		runs, err := s.st.Runs(ctx)
		if err != nil {
			return nil, err
		}
		if len(runs) == 0 {
			return doc, nil
		}
		runID = runs[len(runs)-1].RunId
	}
	run, err := s.st.Run(ctx, runID)
	if err != nil {
		return nil, err
	}
	doc.Run = runDoc(run)
	if st.RunID != 0 {
		doc.Round = &admin.RoundDoc{RoundID: st.RoundID, Phase: phaseName(st.Phase), Selected: st.Selected,
			Accepted: st.Accepted, Dropped: st.Dropped, DeadlineUnixMs: st.DeadlineUnixMs}
	}
	mets, err := s.st.Metrics(ctx, runID)
	if err != nil {
		return nil, err
	}
	for _, m := range mets {
		doc.History = append(doc.History, historyEntry(m))
	}
	return doc, nil
}

func historyEntry(m *store.Metrics) admin.HistoryEntry {
	rej := map[string]uint64{}
	for k, v := range m.Rejections {
		rej[k] = v
	}
	return admin.HistoryEntry{
		RoundID: m.RoundId, ModelVersion: m.ModelVersion, Failed: m.Failed, Selected: m.Selected, Accepted: m.Accepted,
		Late: m.Late, Dropped: m.Dropped, TrainLoss: m.TrainLoss, TrainAccuracy: m.TrainAccuracy, EvalLoss: m.EvalLoss,
		EvalAccuracy: m.EvalAccuracy, EvalSamples: m.EvalSamples, HasServerEval: m.HasServerEval,
		ServerLoss: m.ServerLoss, ServerAccuracy: m.ServerAccuracy, Accuracy: Accuracy(m), DurationMs: m.DurationMs,
		Rejections: rej,
	}
}

func phaseName(p fedgepb.RoundPhase) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "ROUND_PHASE_"))
}

func runDoc(r *store.Run) *admin.RunDoc {
	return &admin.RunDoc{
		RunID: r.RunId, State: strings.ToLower(strings.TrimPrefix(r.State.String(), "RUN_STATE_")),
		Model: r.Config.GetModelId(), Strategy: r.Config.GetStrategy(), Rounds: r.Config.GetRounds(),
		TargetAccuracy: r.Config.GetTargetAccuracy(), RoundsCommitted: r.RoundsCommitted, CurrentRound: r.CurrentRound,
		ModelVersion: r.ModelVersion, LastAccuracy: r.LastAccuracy, HasAccuracy: r.HasAccuracy, Reason: r.Reason,
		StartedUnixMs: r.StartedUnixMs, FinishedUnixMs: r.FinishedUnixMs, DP: dpDoc(r), Secure: secureDoc(r.Config),
	}
}

// secureDoc reports a secure aggregation run's settings.
func secureDoc(cfg *fedgepb.RunConfig) *admin.SecureDoc {
	c := secureOf(cfg)
	if c == nil {
		return nil
	}
	return &admin.SecureDoc{Threshold: c.Threshold, Degree: c.Degree, ClipRange: c.ClipRange}
}

// dpDoc reports a DP run's settings and the ε its committed rounds spent;
// it is computed from the stored run, so it survives restarts.
func dpDoc(r *store.Run) *admin.DPDoc {
	c := dpOf(r.Config)
	if c == nil {
		return nil
	}
	doc := &admin.DPDoc{NoiseMultiplier: c.NoiseMultiplier, Clip: c.Clip, SamplingRate: c.SamplingRate, Delta: c.Delta,
		RoundsCharged: r.RoundsCommitted}
	if r.RoundsCommitted == 0 {
		return doc // nothing released yet: ε = 0
	}
	eps, err := dpEpsilon(c, r.RoundsCommitted)
	if err != nil {
		// Only a corrupt stored configuration gets here; never report a
		// privacy guarantee that was not computed.
		eps = -1
	}
	doc.Epsilon = eps
	return doc
}

// dpEpsilon is ε at c.Delta after rounds committed rounds.
func dpEpsilon(c *DPConfig, rounds uint32) (float64, error) {
	a, err := DPAccountant(c, rounds)
	if err != nil {
		return 0, err
	}
	eps, _, err := a.Epsilon(c.Delta)
	if err != nil {
		return 0, err
	}
	if math.IsNaN(eps) || math.IsInf(eps, 0) {
		return 0, fmt.Errorf("epsilon %v after %d rounds", eps, rounds)
	}
	return eps, nil
}

// Runs lists every run.
func (s *Server) Runs(ctx context.Context) ([]admin.RunDoc, error) {
	runs, err := s.st.Runs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]admin.RunDoc, 0, len(runs))
	for _, r := range runs {
		out = append(out, *runDoc(r))
	}
	return out, nil
}

// Models lists the registered modules and the global versions.
func (s *Server) Models(ctx context.Context) (*admin.ModelsDoc, error) {
	mods, err := s.cfg.Models.List(ctx)
	if err != nil {
		return nil, err
	}
	doc := &admin.ModelsDoc{Modules: []admin.ModuleDoc{}, Versions: []admin.VersionDoc{}}
	for _, m := range mods {
		doc.Modules = append(doc.Modules, moduleDoc(m))
	}
	vs, err := s.st.ModelVersions(ctx, false)
	if err != nil {
		return nil, err
	}
	for _, v := range vs {
		doc.Versions = append(doc.Versions, versionDoc(v))
	}
	return doc, nil
}

func moduleDoc(m *registry.Module) admin.ModuleDoc {
	return admin.ModuleDoc{Name: m.Name, WasmHash: hex.EncodeToString(m.Hash[:]), Bytes: len(m.Wasm), Params: m.Meta.Params,
		Input: m.Meta.Input, Classes: m.Meta.Classes, Builtin: m.Builtin}
}

func versionDoc(v *store.ModelVersion) admin.VersionDoc {
	return admin.VersionDoc{Version: v.Version, Model: v.ModelId, ParentVersion: v.ParentVersion, RoundID: v.RoundId,
		RunID: v.RunId, Strategy: v.Strategy, Participants: v.Participants, WeightsHash: hex.EncodeToString(v.WeightsHash),
		TrainAccuracy: v.GetMetrics().GetTrainAccuracy(), CreatedUnixMs: v.CreatedUnixMs}
}

// AddModel registers a user module after validating it.
func (s *Server) AddModel(ctx context.Context, actor, name string, wasm []byte) (*admin.ModuleDoc, error) {
	mod, err := s.cfg.Models.Add(ctx, name, wasm)
	switch {
	case errors.Is(err, registry.ErrExists):
		return nil, fmt.Errorf("%w: %v", admin.ErrConflict, err)
	case err != nil:
		return nil, badRequest("%v", err)
	}
	if err := s.do(ctx, func(ctx context.Context) error {
		return s.audit(ctx, actor, "models.add", name, "wasm sha256 "+hex.EncodeToString(mod.Hash[:]))
	}); err != nil {
		return nil, err
	}
	d := moduleDoc(mod)
	return &d, nil
}

// Rollback publishes a NEW version whose weights are those of version
// (agents never accept a lower version number). No run may be active.
func (s *Server) Rollback(ctx context.Context, actor string, version uint64) (*admin.VersionDoc, error) {
	var doc *admin.VersionDoc
	err := s.do(ctx, func(ctx context.Context) error {
		if st := s.m.Status(); st.RunID != 0 {
			return fmt.Errorf("%w: run %d is active (round stop first)", admin.ErrConflict, st.RunID)
		}
		old, err := s.st.ModelVersion(ctx, version)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%w: model version %d", admin.ErrNotFound, version)
		}
		if err != nil {
			return err
		}
		latest, err := s.st.LatestModelVersion(ctx)
		if err != nil {
			return err
		}
		now := s.nowMs()
		mv := &store.ModelVersion{
			Version: latest + 1, ModelId: old.ModelId, ParentVersion: old.Version, Strategy: "rollback",
			Weights: old.Weights, WeightsHash: old.WeightsHash, CreatedUnixMs: now, Metrics: old.Metrics,
		}
		man := &fedgepb.ModelManifest{}
		if err := proto.Unmarshal(old.Manifest, man); err != nil {
			return fmt.Errorf("manifest of version %d: %w", old.Version, err)
		}
		man.Version, man.RoundId, man.CreatedUnixMs, man.Signature = mv.Version, 0, now, nil
		if err := (manifestSigner{s.cfg.Key}).SignManifest(man); err != nil {
			return err
		}
		raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(man)
		if err != nil {
			return err
		}
		mv.Manifest = raw
		b := &store.Batch{ModelVersions: []*store.ModelVersion{mv}, Audit: []*store.AuditEntry{{
			UnixMs: now, Actor: defString(actor, "admin"), Action: "models.rollback",
			Target: fmt.Sprintf("version/%d", mv.Version), Detail: fmt.Sprintf("weights of version %d", old.Version),
		}}}
		if err := s.st.Apply(ctx, b); err != nil {
			return fmt.Errorf("%w: persist rollback: %v", errFatal, err)
		}
		// Rebuild the machine so its version sequence continues after the
		// rollback version; its first Ready publishes that manifest.
		if err := s.restore(ctx); err != nil {
			return fmt.Errorf("%w: %v", errFatal, err)
		}
		d := versionDoc(mv)
		doc = &d
		return nil
	})
	return doc, err
}

// Devices lists the registered devices.
func (s *Server) Devices(ctx context.Context) ([]admin.DeviceDoc, error) {
	devs, err := s.st.Devices(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]admin.DeviceDoc, 0, len(devs))
	for _, d := range devs {
		out = append(out, deviceDoc(d))
	}
	return out, nil
}

func deviceDoc(d *store.Device) admin.DeviceDoc {
	doc := admin.DeviceDoc{
		DeviceID: d.DeviceId, State: strings.ToLower(strings.TrimPrefix(d.EnrollState.String(), "ENROLL_STATE_")),
		Online: d.Online, LastSeenUnixMs: d.LastSeenUnixMs, EnrolledUnixMs: d.EnrolledUnixMs,
	}
	if len(d.PublicKey) > 0 {
		doc.PublicKey = hex.EncodeToString(d.PublicKey)
	}
	if c := d.Capabilities; c != nil {
		doc.Arch, doc.MemoryBytes, doc.SampleCount, doc.Tags = c.Arch, c.MemoryBytes, c.SampleCount, c.Tags
	}
	return doc
}

// AddDevice registers a device: broker credentials (when the coordinator
// keeps them) and a one-time enrollment token, both returned only here.
func (s *Server) AddDevice(ctx context.Context, actor, id string) (*admin.AddDeviceResult, error) {
	if err := topics.ValidateID(id); err != nil {
		return nil, badRequest("%v", err)
	}
	var res *admin.AddDeviceResult
	err := s.do(ctx, func(ctx context.Context) error {
		now := s.nowMs()
		tok, b, err := s.devices.Add(ctx, id, now, now+s.cfg.EnrollTokenTTL.Milliseconds())
		switch {
		case errors.Is(err, registry.ErrExists):
			return fmt.Errorf("%w: %v", admin.ErrConflict, err)
		case err != nil:
			return badRequest("%v", err)
		}
		res = &admin.AddDeviceResult{DeviceID: id, Token: tok}
		if s.cfg.Credentials != nil {
			pw, h, err := s.cfg.Credentials.IssueDevice(id)
			if err != nil {
				return err
			}
			if s.cfg.BrokerCredentials != nil {
				if err := s.cfg.BrokerCredentials.AddHashed(id, h, topics.Identity{Role: topics.RoleDevice, ID: id, Fleet: s.cfg.Fleet}); err != nil {
					return err
				}
			}
			res.Username, res.Password = id, pw
		}
		b.Audit = append(b.Audit, &store.AuditEntry{UnixMs: now, Actor: defString(actor, "admin"), Action: "devices.add", Target: id})
		if err := s.st.Apply(ctx, b); err != nil {
			return fmt.Errorf("%w: persist device %s: %v", errFatal, id, err)
		}
		s.devices.Committed(b)
		return nil
	})
	return res, err
}

// ApproveDevice approves a device that asked to enroll without a token.
func (s *Server) ApproveDevice(ctx context.Context, actor, id string) (*admin.DeviceDoc, error) {
	var doc *admin.DeviceDoc
	err := s.do(ctx, func(ctx context.Context) error {
		b, err := s.devices.Approve(ctx, id, s.nowMs())
		switch {
		case errors.Is(err, registry.ErrUnknownDevice):
			return fmt.Errorf("%w: %v", admin.ErrNotFound, err)
		case errors.Is(err, registry.ErrState):
			return fmt.Errorf("%w: %v", admin.ErrConflict, err)
		case err != nil:
			return err
		}
		b.Audit = append(b.Audit, &store.AuditEntry{UnixMs: s.nowMs(), Actor: defString(actor, "admin"), Action: "devices.approve", Target: id})
		if err := s.st.Apply(ctx, b); err != nil {
			return fmt.Errorf("%w: persist approval of %s: %v", errFatal, id, err)
		}
		s.devices.Committed(b)
		rec, err := s.st.Device(ctx, id)
		if err != nil {
			return err
		}
		d := deviceDoc(rec)
		doc = &d
		// Tell the device; it retries enrollment anyway.
		return s.publish(ctx, topics.DeviceIn(s.cfg.Fleet, id, topics.KindEnroll), fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_RESPONSE,
			&fedgepb.EnrollResponse{DeviceId: id, Accepted: true}, false)
	})
	return doc, err
}

// Audit lists audit entries after seq.
func (s *Server) Audit(ctx context.Context, after uint64, limit int) ([]admin.AuditDoc, error) {
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	es, err := s.st.Audit(ctx, after, limit)
	if err != nil {
		return nil, err
	}
	out := make([]admin.AuditDoc, 0, len(es))
	for _, e := range es {
		out = append(out, admin.AuditDoc{Seq: e.Seq, UnixMs: e.UnixMs, Actor: e.Actor, Action: e.Action, Target: e.Target, Detail: e.Detail})
	}
	return out, nil
}

// PublicKey is the coordinator's public key in hex.
func (s *Server) PublicKey() string {
	return hex.EncodeToString(s.cfg.Key.Public().(ed25519.PublicKey))
}
