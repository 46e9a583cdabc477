package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/aggregation"
	"github.com/fedge-dev/fedge/aggregation/dp"
	"github.com/fedge-dev/fedge/coordinator/round"
	"github.com/fedge-dev/fedge/coordinator/store"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// StrategyConfig is the JSON carried in RunConfig.strategy_config: the
// hyperparameters of the named strategy. Zero fields take the defaults
// listed per field.
type StrategyConfig struct {
	ServerLR  float64 `json:"server_lr,omitempty"`  // all; default 1 (fedavg, robust), 0.1 (fedadam/yogi/adagrad), 1 (fedavgm)
	Momentum  float64 `json:"momentum,omitempty"`   // fedavgm; default 0.9
	Beta1     float64 `json:"beta1,omitempty"`      // fedadam/yogi/adagrad; default 0.9
	Beta2     float64 `json:"beta2,omitempty"`      // fedadam/yogi; default 0.99
	Tau       float64 `json:"tau,omitempty"`        // fedadam/yogi/adagrad; default 1e-3
	F         int     `json:"f,omitempty"`          // krum, multikrum, bulyan: Byzantine clients tolerated; default 1
	M         int     `json:"m,omitempty"`          // multikrum: updates averaged; default max(1, min_clients-f)
	Beta      float64 `json:"beta,omitempty"`       // trimmed_mean: fraction trimmed at each end; default 0.1
	SampleCap int64   `json:"sample_cap,omitempty"` // bound on a client's sample weight; 0 none
	NormBound float64 `json:"norm_bound,omitempty"` // server-side L2 bound of each delta; 0 none
	// Secure, when set, runs every round with secure aggregation (secure.go);
	// only sum-based strategies accept it.
	Secure *SecureConfig `json:"secure,omitempty"`
	// DP, when set, wraps the strategy with central differential privacy
	// (aggregation/dp); only sum-based strategies accept it.
	DP *DPConfig `json:"dp,omitempty"`
}

// DPConfig is strategy_config.dp, set from the start request's dp_* fields.
type DPConfig struct {
	NoiseMultiplier float64 `json:"noise_multiplier"`
	Clip            float64 `json:"clip"`
	SamplingRate    float64 `json:"sampling_rate"`
	Delta           float64 `json:"delta"`
	// NoiseSeed, for reproducible simulations, derives the noise key from
	// a seed; 0 (production) draws a random 256-bit key each time the
	// strategy is built (once per run per coordinator process).
	NoiseSeed uint64 `json:"noise_seed,omitempty"`
}

// DefaultDPDelta is the δ at which ε is reported unless the run sets one.
const DefaultDPDelta = 1e-5

// Strategies lists the strategy names round start accepts.
func Strategies() []string {
	out := make([]string, 0, len(strategyBuilders))
	for n := range strategyBuilders {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

var strategyBuilders = map[string]func(c StrategyConfig, common aggregation.Common) (aggregation.Strategy, error){
	"fedavg": func(c StrategyConfig, common aggregation.Common) (aggregation.Strategy, error) {
		return aggregation.NewFedAvg(aggregation.FedAvgConfig{Common: common, ServerLR: c.ServerLR})
	},
	"fedavgm": func(c StrategyConfig, common aggregation.Common) (aggregation.Strategy, error) {
		return aggregation.NewFedAvgM(aggregation.FedAvgMConfig{Common: common, ServerLR: or(c.ServerLR, 1), Momentum: or(c.Momentum, 0.9)})
	},
	"fedadam": func(c StrategyConfig, common aggregation.Common) (aggregation.Strategy, error) {
		return aggregation.NewFedAdam(adaptive(c, common))
	},
	"fedyogi": func(c StrategyConfig, common aggregation.Common) (aggregation.Strategy, error) {
		return aggregation.NewFedYogi(adaptive(c, common))
	},
	"fedadagrad": func(c StrategyConfig, common aggregation.Common) (aggregation.Strategy, error) {
		return aggregation.NewFedAdagrad(adaptive(c, common))
	},
	"median": func(c StrategyConfig, common aggregation.Common) (aggregation.Strategy, error) {
		return aggregation.NewRobust(aggregation.RobustConfig{Common: common, Aggregator: aggregation.Median{}, ServerLR: c.ServerLR})
	},
	"trimmed_mean": func(c StrategyConfig, common aggregation.Common) (aggregation.Strategy, error) {
		return aggregation.NewRobust(aggregation.RobustConfig{Common: common, Aggregator: aggregation.TrimmedMean{Beta: or(c.Beta, 0.1)}, ServerLR: c.ServerLR})
	},
	"krum": func(c StrategyConfig, common aggregation.Common) (aggregation.Strategy, error) {
		return aggregation.NewRobust(aggregation.RobustConfig{Common: common, Aggregator: aggregation.Krum{F: orInt(c.F, 1)}, ServerLR: c.ServerLR})
	},
	"multikrum": func(c StrategyConfig, common aggregation.Common) (aggregation.Strategy, error) {
		return aggregation.NewRobust(aggregation.RobustConfig{Common: common, Aggregator: aggregation.MultiKrum{F: orInt(c.F, 1), M: c.M}, ServerLR: c.ServerLR})
	},
	"bulyan": func(c StrategyConfig, common aggregation.Common) (aggregation.Strategy, error) {
		return aggregation.NewRobust(aggregation.RobustConfig{Common: common, Aggregator: aggregation.Bulyan{F: orInt(c.F, 1)}, ServerLR: c.ServerLR})
	},
}

func adaptive(c StrategyConfig, common aggregation.Common) aggregation.AdaptiveConfig {
	return aggregation.AdaptiveConfig{Common: common, ServerLR: or(c.ServerLR, 0.1), Beta1: or(c.Beta1, 0.9), Beta2: or(c.Beta2, 0.99), Tau: or(c.Tau, 1e-3)}
}

func or(x, def float64) float64 {
	if x == 0 {
		return def
	}
	return x
}

func orInt(x, def int) int {
	if x == 0 {
		return def
	}
	return x
}

// ParseStrategyConfig decodes strategy_config (empty: all defaults).
func ParseStrategyConfig(raw []byte) (StrategyConfig, error) {
	var c StrategyConfig
	if len(raw) == 0 {
		return c, nil
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, fmt.Errorf("strategy config: %w", err)
	}
	return c, nil
}

// NewStrategy builds the aggregation strategy a run configuration names.
func NewStrategy(run *fedgepb.RunConfig) (aggregation.Strategy, error) {
	build, ok := strategyBuilders[run.Strategy]
	if !ok {
		return nil, fmt.Errorf("strategy %q: unknown (have %v)", run.Strategy, Strategies())
	}
	c, err := ParseStrategyConfig(run.StrategyConfig)
	if err != nil {
		return nil, err
	}
	if run.Strategy == "multikrum" && c.M == 0 {
		c.M = max(1, int(run.MinClients)-orInt(c.F, 1))
	}
	s, err := build(c, aggregation.Common{SampleCap: c.SampleCap, NormBound: c.NormBound})
	if err != nil {
		return nil, fmt.Errorf("strategy %q: %w", run.Strategy, err)
	}
	if c.DP == nil {
		return s, nil
	}
	ss, ok := s.(aggregation.StreamingStrategy)
	if !ok || !s.SumBased() {
		return nil, fmt.Errorf("differential privacy adds noise to the sum of the updates, so strategy %q, which needs every update, cannot be used with it; use fedavg, fedavgm, fedadam, fedyogi or fedadagrad", run.Strategy)
	}
	key := dp.KeyFromSeed(c.DP.NoiseSeed)
	if c.DP.NoiseSeed == 0 {
		if key, err = dp.NewKey(); err != nil {
			return nil, err
		}
	}
	w, err := dp.Wrap(ss, dp.Config{NoiseMultiplier: c.DP.NoiseMultiplier, ClipNorm: c.DP.Clip,
		SamplingRate: c.DP.SamplingRate, Delta: c.DP.Delta, Key: key})
	if err != nil {
		return nil, fmt.Errorf("strategy %q: %w", run.Strategy, err)
	}
	return w, nil
}

// dpSteps caches the per-round RDP of each (sampling rate, noise
// multiplier): computing it takes ~150 series evaluations. It holds at most
// maxDPSteps entries (requests choose the keys).
var dpSteps struct {
	sync.Mutex
	m map[[2]float64][]float64
}

const maxDPSteps = 64

// DPAccountant is the accountant of c after rounds committed rounds: every
// committed round charges one sampled Gaussian mechanism of rate
// c.SamplingRate and multiplier c.NoiseMultiplier, so the privacy spent is
// a function of the persisted round count and the run's configuration.
func DPAccountant(c *DPConfig, rounds uint32) (*dp.Accountant, error) {
	key := [2]float64{c.SamplingRate, c.NoiseMultiplier}
	dpSteps.Lock()
	step, ok := dpSteps.m[key]
	dpSteps.Unlock()
	if !ok {
		one, err := dp.NewAccountant(nil)
		if err != nil {
			return nil, err
		}
		if err := one.Compose(c.SamplingRate, c.NoiseMultiplier, 1); err != nil {
			return nil, err
		}
		step = one.RDP()
		dpSteps.Lock()
		if dpSteps.m == nil {
			dpSteps.m = map[[2]float64][]float64{}
		}
		if len(dpSteps.m) < maxDPSteps {
			dpSteps.m[key] = step
		}
		dpSteps.Unlock()
	}
	rdp := append([]float64(nil), step...)
	for i := range rdp {
		rdp[i] *= float64(rounds)
	}
	a, err := dp.NewAccountant(nil)
	if err != nil {
		return nil, err
	}
	if err := a.Restore(rdp); err != nil {
		return nil, err
	}
	return a, nil
}

// dpOf is the run's DP configuration, nil if it has none.
func dpOf(run *fedgepb.RunConfig) *DPConfig {
	c, err := ParseStrategyConfig(run.GetStrategyConfig())
	if err != nil {
		return nil
	}
	return c.DP
}

// strategies keeps the active run's strategy, so the server optimizers'
// memory (momentum, adaptive moments) carries from round to round. The
// machine hands the same *RunConfig for every round of a run (one run is
// active at a time), so the configuration's identity keys the strategy.
// After a restart get rebuilds it from the store: the optimizer's memory
// from the state persisted with the run's latest model version (see
// round.OptimizerSaver), and the DP accountant from the run's committed
// round count (a function of it).
type strategies struct {
	mu     sync.Mutex
	cfg    *fedgepb.RunConfig
	active aggregation.Strategy
	// beforeFinish is called before an aggregate is applied (fault point).
	beforeFinish func()
	// secure makes the aggregator of a secure round.
	secure func(st aggregation.StreamingStrategy, roundID uint64, dim int) round.Aggregator
	// stored is the stored active run of cfg (nil for a run not yet
	// stored) and its persisted optimizer state (nil if none).
	stored func(cfg *fedgepb.RunConfig) (*store.Run, *store.Optimizer, error)
	// warn reports a stored optimizer state that does not fit the run.
	warn func(msg string)
}

func (s *strategies) get(cfg *fedgepb.RunConfig) (aggregation.Strategy, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg == cfg && s.active != nil {
		return s.active, nil
	}
	st, err := NewStrategy(cfg)
	if err != nil {
		return nil, err
	}
	if s.stored != nil {
		if err := s.restore(cfg, st); err != nil {
			return nil, err
		}
	}
	s.cfg, s.active = cfg, st
	return st, nil
}

// restore gives a strategy built for a stored run the state the run had
// reached: the DP accountant and the server optimizer's memory.
func (s *strategies) restore(cfg *fedgepb.RunConfig, st aggregation.Strategy) error {
	run, opt, err := s.stored(cfg)
	if err != nil {
		return fmt.Errorf("restore strategy state: %w", err)
	}
	var committed uint32
	if run != nil {
		committed = run.RoundsCommitted
	}
	if d, ok := st.(*dp.Strategy); ok {
		a, err := DPAccountant(dpOf(cfg), committed)
		if err != nil {
			return fmt.Errorf("dp accountant: %w", err)
		}
		if err := d.Accountant().Restore(a.RDP()); err != nil {
			return fmt.Errorf("dp accountant: %w", err)
		}
	}
	o := optimizerOf(st)
	if run == nil || opt == nil || o == nil {
		return nil
	}
	// The state is written with the version it produced; another version
	// as the run's latest (one committed without state) makes it stale, and
	// the optimizer starts afresh rather than from the wrong point.
	if opt.ModelVersion != run.ModelVersion || opt.Strategy != st.Name() {
		if s.warn != nil {
			s.warn(fmt.Sprintf("%s optimizer starts afresh: the stored state is of %s at version %d, the run is at version %d",
				st.Name(), opt.Strategy, opt.ModelVersion, run.ModelVersion))
		}
		return nil
	}
	if err := o.SetState(aggregation.OptimizerState{Steps: opt.Steps, M: opt.M, V: opt.V}); err != nil {
		return fmt.Errorf("restore %s optimizer: %w", st.Name(), err)
	}
	return nil
}

// optimizerOf is the server optimizer of a strategy (nil if it has none).
func optimizerOf(st aggregation.Strategy) aggregation.ServerOptimizer {
	if o, ok := st.(aggregation.WithOptimizer); ok {
		return o.Optimizer()
	}
	return nil
}

// optimizerState is the record an aggregator hands the machine to persist
// with the version it produced: the optimizer's moments, nil when it keeps
// none (plain server SGD).
func optimizerState(st aggregation.Strategy) *store.Optimizer {
	o := optimizerOf(st)
	if o == nil {
		return nil
	}
	state := o.State()
	if len(state.M) == 0 && len(state.V) == 0 {
		return nil
	}
	return &store.Optimizer{Strategy: st.Name(), Steps: state.Steps, M: state.M, V: state.V}
}

func (s *strategies) reset() {
	s.mu.Lock()
	s.cfg, s.active = nil, nil
	s.mu.Unlock()
}

// newAggregator adapts the strategies to round.NewAggregatorFunc.
func (s *strategies) newAggregator() round.NewAggregatorFunc {
	return func(run *fedgepb.RunConfig, roundID uint64, dim int) (round.Aggregator, error) {
		st, err := s.get(run)
		if err != nil {
			return nil, err
		}
		if secureOf(run) != nil {
			ss, err := aggregation.RequireStreaming(st)
			if err != nil {
				return nil, fmt.Errorf("secure aggregation: %w", err)
			}
			return s.secure(ss, roundID, dim), nil
		}
		if ss, ok := st.(aggregation.StreamingStrategy); ok && st.SumBased() {
			acc, err := ss.NewAccumulator(dim)
			if err != nil {
				return nil, err
			}
			return &streamingAgg{s: ss, acc: acc, round: roundID, before: s.beforeFinish}, nil
		}
		return &collectingAgg{s: st, round: roundID, dim: dim, before: s.beforeFinish}, nil
	}
}

// streamingAgg folds updates into a weighted sum as they arrive.
type streamingAgg struct {
	s      aggregation.StreamingStrategy
	acc    aggregation.Accumulator
	round  uint64
	before func()
}

func (a *streamingAgg) Add(device string, delta []float32, samples uint64) error {
	return a.acc.Add(device, delta, int64(min(samples, 1<<62)))
}

func (a *streamingAgg) OptimizerState() *store.Optimizer { return optimizerState(a.s) }

func (a *streamingAgg) Finish(global []float32) ([]float32, error) {
	if a.before != nil {
		a.before()
	}
	next := append([]float32(nil), global...)
	if _, err := a.s.ApplyAggregate(a.round, next, a.acc.Aggregate()); err != nil {
		return nil, err
	}
	return next, nil
}

// collectingAgg keeps every update for a robust rule (O(clients x model)).
type collectingAgg struct {
	s       aggregation.Strategy
	round   uint64
	dim     int
	results []aggregation.TrainResult
	seen    map[string]bool
	before  func()
}

func (a *collectingAgg) Add(device string, delta []float32, samples uint64) error {
	if len(delta) != a.dim {
		return fmt.Errorf("%w: %d parameters, model %d", aggregation.ErrDimension, len(delta), a.dim)
	}
	if a.seen == nil {
		a.seen = map[string]bool{}
	}
	if a.seen[device] {
		return fmt.Errorf("%w: %s", aggregation.ErrDuplicate, device)
	}
	a.seen[device] = true
	a.results = append(a.results, aggregation.TrainResult{Client: device, Delta: append([]float32(nil), delta...), Samples: int64(min(samples, 1<<62))})
	return nil
}

func (a *collectingAgg) OptimizerState() *store.Optimizer { return optimizerState(a.s) }

func (a *collectingAgg) Finish(global []float32) ([]float32, error) {
	if a.before != nil {
		a.before()
	}
	next := append([]float32(nil), global...)
	if _, err := a.s.AggregateTrain(a.round, next, a.results); err != nil {
		return nil, err
	}
	return next, nil
}

// storedRun is the stored active run whose configuration is cfg, with its
// persisted optimizer state: after a restart, the restored run; for a run
// being started (not stored yet), nil.
func (s *Server) storedRun(cfg *fedgepb.RunConfig) (*store.Run, *store.Optimizer, error) {
	ctx := context.Background()
	runs, err := s.st.Runs(ctx)
	if err != nil || len(runs) == 0 {
		return nil, nil, err
	}
	last := runs[len(runs)-1]
	if last.State != fedgepb.RunState_RUN_STATE_RUNNING || !proto.Equal(last.Config, cfg) {
		return nil, nil, nil
	}
	opt, err := s.st.Optimizer(ctx, last.RunId)
	if errors.Is(err, store.ErrNotFound) {
		return last, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	return last, opt, nil
}
