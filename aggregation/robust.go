package aggregation

import (
	"fmt"
)

// RobustAggregator combines client deltas in a way a minority of
// Byzantine clients cannot steer arbitrarily. It needs every update at
// once and is unweighted: sample counts are validated but ignored, since a
// Byzantine client would simply inflate its own.
type RobustAggregator interface {
	// Name identifies the rule and its parameters.
	Name() string
	// MinClients is the smallest cohort the rule is defined for.
	MinClients() int
	// Aggregate writes the robust mean delta into dst. deltas are already
	// validated, all of len(dst). Below MinClients it returns an error
	// wrapping ErrTooFewClients that states the requirement.
	Aggregate(dst []float64, deltas [][]float32) error
}

// RobustConfig configures a Robust strategy.
type RobustConfig struct {
	Common
	// Aggregator is the robust rule.
	Aggregator RobustAggregator
	// ServerLR is the step size applied to the robust delta; zero means 1.
	ServerLR float64
}

// Robust is a strategy built on a robust aggregator. It is not sum-based
// and does not implement StreamingStrategy.
type Robust struct {
	common Common
	agg    RobustAggregator
	opt    ServerOptimizer
}

// NewRobust returns a robust strategy. Common.NormBound, if set, bounds
// every delta before the rule sees it.
func NewRobust(c RobustConfig) (*Robust, error) {
	if c.Aggregator == nil {
		return nil, fmt.Errorf("robust: %w: no aggregator", ErrConfig)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("robust %s: %w", c.Aggregator.Name(), err)
	}
	lr := c.ServerLR
	if lr == 0 {
		lr = 1
	}
	if err := checkPositive("server learning rate", lr); err != nil {
		return nil, fmt.Errorf("robust %s: %w", c.Aggregator.Name(), err)
	}
	return &Robust{common: c.Common, agg: c.Aggregator, opt: &serverSGD{name: c.Aggregator.Name(), eta: lr}}, nil
}

// Name implements Strategy.
func (r *Robust) Name() string { return r.agg.Name() }

// SumBased implements Strategy; always false.
func (r *Robust) SumBased() bool { return false }

// ConfigureTrain implements Strategy.
func (r *Robust) ConfigureTrain(round uint64, available []string) ([]TrainInstruction, error) {
	return r.common.configureTrain(round, available)
}

// ConfigureEvaluate implements Strategy.
func (r *Robust) ConfigureEvaluate(round uint64, available []string) ([]EvalInstruction, error) {
	return r.common.configureEvaluate(round, available)
}

// AggregateEvaluate implements Strategy.
func (r *Robust) AggregateEvaluate(round uint64, results []EvalResult) (EvalSummary, error) {
	return AggregateEvaluate(round, results)
}

// AggregateTrain implements Strategy.
func (r *Robust) AggregateTrain(round uint64, global []float32, results []TrainResult) (TrainSummary, error) {
	fail := func(err error) (TrainSummary, error) {
		return TrainSummary{}, fmt.Errorf("%s round %d: %w", r.agg.Name(), round, err)
	}
	seen := make(seenSet, len(results))
	deltas := make([][]float32, 0, len(results))
	clipped := 0
	for _, res := range results {
		if err := checkDelta(res.Client, res.Delta, len(global), res.Samples); err != nil {
			return fail(err)
		}
		if err := seen.add(res.Client); err != nil {
			return fail(err)
		}
		d := res.Delta
		if r.common.NormBound > 0 {
			d = make([]float32, len(global))
			if _, c := ClipL2(d, res.Delta, r.common.NormBound); c {
				clipped++
			}
		}
		deltas = append(deltas, d)
	}
	mean := make([]float64, len(global))
	if err := r.agg.Aggregate(mean, deltas); err != nil {
		return fail(err)
	}
	if err := r.opt.Step(global, mean); err != nil {
		return fail(err)
	}
	return TrainSummary{Round: round, Clients: len(results), TotalWeight: float64(len(results)), ClippedClients: clipped, DeltaNorm: norm64(mean)}, nil
}

func tooFew(rule string, need string, min, got int) error {
	return fmt.Errorf("%w: %s needs n >= %s = %d clients, got %d", ErrTooFewClients, rule, need, min, got)
}

// column gathers coordinate j of every delta into buf.
func column(buf []float64, deltas [][]float32, j int) []float64 {
	buf = buf[:0]
	for _, d := range deltas {
		buf = append(buf, float64(d[j]))
	}
	return buf
}
