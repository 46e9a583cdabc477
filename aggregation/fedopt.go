package aggregation

import (
	"fmt"
	"math"
)

// ServerOptimizer turns the round's mean client delta into a step on the
// global model (Reddi et al. 2021, "Adaptive Federated Optimization",
// Algorithm 2: the mean delta Δ_t is the pseudo-gradient's negative).
type ServerOptimizer interface {
	// Name identifies the algorithm.
	Name() string
	// Step updates global in place from the mean delta. If any resulting
	// weight would be non-finite it returns an error and changes nothing.
	Step(global []float32, delta []float64) error
	// State returns a copy of the optimizer's memory for persistence.
	State() OptimizerState
	// SetState restores memory saved by State.
	SetState(OptimizerState) error
}

// WithOptimizer is implemented by strategies that step the global model with
// a server optimizer, so that its state can be persisted.
type WithOptimizer interface {
	Optimizer() ServerOptimizer
}

// OptimizerState is a server optimizer's memory: first moment M and second
// moment V (nil when the algorithm has none) and the number of steps.
type OptimizerState struct {
	Steps uint64
	M, V  []float64
}

// SumStrategy is a sum-based strategy: weighted FedAvg aggregation followed
// by a server optimizer. NewFedAvg, NewFedProx, NewFedAvgM, NewFedAdam,
// NewFedYogi and NewFedAdagrad build one.
type SumStrategy struct {
	name    string
	common  Common
	opt     ServerOptimizer
	uniform bool
}

func newSumStrategy(name string, c Common, opt ServerOptimizer) (*SumStrategy, error) {
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &SumStrategy{name: name, common: c, opt: opt}, nil
}

// Name implements Strategy.
func (s *SumStrategy) Name() string { return s.name }

// SumBased implements Strategy; always true.
func (s *SumStrategy) SumBased() bool { return true }

// Optimizer exposes the server optimizer (for persisting its state).
func (s *SumStrategy) Optimizer() ServerOptimizer { return s.opt }

// ConfigureTrain implements Strategy.
func (s *SumStrategy) ConfigureTrain(round uint64, available []string) ([]TrainInstruction, error) {
	return s.common.configureTrain(round, available)
}

// ConfigureEvaluate implements Strategy.
func (s *SumStrategy) ConfigureEvaluate(round uint64, available []string) ([]EvalInstruction, error) {
	return s.common.configureEvaluate(round, available)
}

// AggregateEvaluate implements Strategy.
func (s *SumStrategy) AggregateEvaluate(round uint64, results []EvalResult) (EvalSummary, error) {
	return AggregateEvaluate(round, results)
}

// NewAccumulator implements StreamingStrategy.
func (s *SumStrategy) NewAccumulator(dim int) (Accumulator, error) {
	acc, err := s.common.newAccumulator(dim, s.uniform)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	return acc, nil
}

// AggregateTrain implements Strategy by streaming the results through an
// accumulator and applying the aggregate.
func (s *SumStrategy) AggregateTrain(round uint64, global []float32, results []TrainResult) (TrainSummary, error) {
	acc, err := s.NewAccumulator(len(global))
	if err != nil {
		return TrainSummary{}, err
	}
	for _, r := range results {
		if err := acc.Add(r.Client, r.Delta, r.Samples); err != nil {
			return TrainSummary{}, fmt.Errorf("%s round %d: %w", s.name, round, err)
		}
	}
	return s.ApplyAggregate(round, global, acc.Aggregate())
}

// ApplyAggregate implements StreamingStrategy.
func (s *SumStrategy) ApplyAggregate(round uint64, global []float32, agg Aggregate) (TrainSummary, error) {
	mean, err := meanDelta(len(global), agg)
	if err != nil {
		return TrainSummary{}, fmt.Errorf("%s round %d: %w", s.name, round, err)
	}
	if err := s.opt.Step(global, mean); err != nil {
		return TrainSummary{}, fmt.Errorf("%s round %d: %w", s.name, round, err)
	}
	return TrainSummary{
		Round: round, Clients: agg.Clients, TotalWeight: agg.TotalWeight,
		CappedClients: agg.CappedClients, ClippedClients: agg.ClippedClients,
		DeltaNorm: norm64(mean),
	}, nil
}

// commit writes next into global if every value is finite.
func commit(global []float32, next []float64) error {
	for i, x := range next {
		if f := float32(x); math.IsNaN(x) || math.IsInf(float64(f), 0) {
			return fmt.Errorf("%w: server step gives %v at index %d", ErrNonFinite, x, i)
		}
	}
	for i, x := range next {
		global[i] = float32(x)
	}
	return nil
}

func checkStep(global []float32, delta []float64) error {
	if len(global) != len(delta) {
		return fmt.Errorf("%w: delta has %d parameters, model %d", ErrDimension, len(delta), len(global))
	}
	return nil
}

func checkUnit(name string, x float64, allowOne bool) error {
	if math.IsNaN(x) || x < 0 || x > 1 || (x == 1 && !allowOne) {
		return fmt.Errorf("%w: %s %v not in [0, 1)", ErrConfig, name, x)
	}
	return nil
}

func checkPositive(name string, x float64) error {
	if !(x > 0) || math.IsInf(x, 0) {
		return fmt.Errorf("%w: %s %v must be positive and finite", ErrConfig, name, x)
	}
	return nil
}

// adaptive is the FedAdagrad/FedAdam/FedYogi family of Algorithm 2:
//
//	m_t = β1·m_{t-1} + (1-β1)·Δ_t
//	v_t = second-moment rule of the algorithm
//	x_{t+1} = x_t + η·m_t / (√v_t + τ)
//
// with m_{-1} = 0 and v_{-1} = τ² (the paper requires v_{-1} >= τ²). As in
// the paper there is no bias correction.
type adaptive struct {
	name                   string
	eta, beta1, beta2, tau float64
	second                 func(v, d2, beta2 float64) float64
	steps                  uint64
	m, v                   []float64
}

func (a *adaptive) Name() string { return a.name }

func (a *adaptive) Step(global []float32, delta []float64) error {
	if err := checkStep(global, delta); err != nil {
		return err
	}
	if a.m == nil {
		a.m = make([]float64, len(global))
		a.v = make([]float64, len(global))
		for i := range a.v {
			a.v[i] = a.tau * a.tau
		}
	}
	if len(a.m) != len(global) {
		return fmt.Errorf("%w: optimizer state has %d parameters, model %d", ErrDimension, len(a.m), len(global))
	}
	m := make([]float64, len(global))
	v := make([]float64, len(global))
	next := make([]float64, len(global))
	for i, d := range delta {
		m[i] = a.beta1*a.m[i] + (1-a.beta1)*d
		v[i] = a.second(a.v[i], d*d, a.beta2)
		next[i] = float64(global[i]) + a.eta*m[i]/(math.Sqrt(v[i])+a.tau)
	}
	if err := commit(global, next); err != nil {
		return err
	}
	a.m, a.v = m, v
	a.steps++
	return nil
}

func (a *adaptive) State() OptimizerState {
	return OptimizerState{Steps: a.steps, M: append([]float64(nil), a.m...), V: append([]float64(nil), a.v...)}
}

func (a *adaptive) SetState(s OptimizerState) error {
	if len(s.M) != len(s.V) || allFinite64(s.M) >= 0 || allFinite64(s.V) >= 0 {
		return fmt.Errorf("%s: %w: bad optimizer state", a.name, ErrConfig)
	}
	for _, x := range s.V {
		if x < 0 {
			return fmt.Errorf("%s: %w: negative second moment", a.name, ErrConfig)
		}
	}
	a.steps = s.Steps
	a.m = append([]float64(nil), s.M...)
	a.v = append([]float64(nil), s.V...)
	if len(a.m) == 0 {
		a.m, a.v = nil, nil
	}
	return nil
}

// AdaptiveConfig holds the hyperparameters of FedAdam, FedYogi and
// FedAdagrad (Reddi et al. 2021, Algorithm 2). The paper's grid search
// typically settles on Beta1 = 0.9, Beta2 = 0.99 and Tau = 1e-3.
type AdaptiveConfig struct {
	Common
	ServerLR float64 // η > 0
	Beta1    float64 // in [0, 1)
	Beta2    float64 // in [0, 1); unused by FedAdagrad
	Tau      float64 // adaptivity τ > 0
}

func newAdaptive(name string, c AdaptiveConfig, second func(v, d2, beta2 float64) float64) (*SumStrategy, error) {
	for _, err := range []error{checkPositive("server learning rate", c.ServerLR), checkUnit("beta1", c.Beta1, false), checkUnit("beta2", c.Beta2, false), checkPositive("tau", c.Tau)} {
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	opt := &adaptive{name: name, eta: c.ServerLR, beta1: c.Beta1, beta2: c.Beta2, tau: c.Tau, second: second}
	return newSumStrategy(name, c.Common, opt)
}
