package aggregation

import (
	"fmt"
	"math"

	"github.com/fedge-dev/fedge/aggregation/codec"
)

// Common is the configuration every strategy shares.
type Common struct {
	// Train is the template sent to every selected client; Round is filled
	// in per round and a zero Codec.ID means codec.Float32.
	Train TrainConfig
	// Eval is the evaluation template; Round is filled in per round.
	Eval EvalConfig
	// TrainSampling and EvalSampling choose the clients of each round.
	TrainSampling Sampling
	EvalSampling  Sampling
	// SampleCap bounds each client's self-reported sample count (0: none).
	SampleCap int64
	// NormBound, when positive, bounds the L2 norm of every client delta
	// before aggregation (norm bounding against model replacement).
	NormBound float64
}

func (c Common) validate() error {
	t := c.Train
	if t.LocalEpochs < 0 || t.BatchSize < 0 || c.Eval.BatchSize < 0 || c.Eval.MaxExamples < 0 {
		return fmt.Errorf("%w: negative epochs, batch size or example limit", ErrConfig)
	}
	for _, v := range []struct {
		name string
		x    float64
	}{{"learning rate", t.LearningRate}, {"proximal mu", t.ProximalMu}, {"clip norm", t.ClipNorm}, {"norm bound", c.NormBound}} {
		if math.IsNaN(v.x) || math.IsInf(v.x, 0) || v.x < 0 {
			return fmt.Errorf("%w: %s %v", ErrConfig, v.name, v.x)
		}
	}
	if err := t.Codec.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if c.SampleCap < 0 {
		return fmt.Errorf("%w: sample cap %d", ErrConfig, c.SampleCap)
	}
	if err := c.TrainSampling.validate(); err != nil {
		return fmt.Errorf("train sampling: %w", err)
	}
	if err := c.EvalSampling.validate(); err != nil {
		return fmt.Errorf("eval sampling: %w", err)
	}
	return nil
}

func (c Common) configureTrain(round uint64, available []string) ([]TrainInstruction, error) {
	clients, err := c.TrainSampling.Select(round, available)
	if err != nil {
		return nil, fmt.Errorf("configure train round %d: %w", round, err)
	}
	cfg := c.Train
	cfg.Round = round
	if cfg.Codec.ID == 0 {
		cfg.Codec.ID = codec.Float32
	}
	if cfg.ClipNorm == 0 && c.NormBound > 0 {
		cfg.ClipNorm = c.NormBound
	}
	out := make([]TrainInstruction, len(clients))
	for i, id := range clients {
		out[i] = TrainInstruction{Client: id, Config: cfg}
	}
	return out, nil
}

func (c Common) configureEvaluate(round uint64, available []string) ([]EvalInstruction, error) {
	clients, err := c.EvalSampling.Select(round, available)
	if err != nil {
		return nil, fmt.Errorf("configure evaluate round %d: %w", round, err)
	}
	cfg := c.Eval
	cfg.Round = round
	out := make([]EvalInstruction, len(clients))
	for i, id := range clients {
		out[i] = EvalInstruction{Client: id, Config: cfg}
	}
	return out, nil
}

// AggregateEvaluate averages evaluation results weighted by example
// count. Every result is validated; the error names the client.
func AggregateEvaluate(round uint64, results []EvalResult) (EvalSummary, error) {
	if len(results) == 0 {
		return EvalSummary{}, fmt.Errorf("aggregate evaluate round %d: %w: no results", round, ErrTooFewClients)
	}
	seen := make(seenSet, len(results))
	var loss, acc, total float64
	var examples int64
	for _, r := range results {
		if err := checkSamples(r.Client, r.Examples); err != nil {
			return EvalSummary{}, fmt.Errorf("aggregate evaluate round %d: %w", round, err)
		}
		if err := seen.add(r.Client); err != nil {
			return EvalSummary{}, fmt.Errorf("aggregate evaluate round %d: %w", round, err)
		}
		if math.IsNaN(r.Loss) || math.IsInf(r.Loss, 0) || r.Loss < 0 {
			return EvalSummary{}, fmt.Errorf("aggregate evaluate round %d: %w", round, clientErr(r.Client, fmt.Errorf("%w: loss %v", ErrBadMetric, r.Loss)))
		}
		if !(r.Accuracy >= 0 && r.Accuracy <= 1) {
			return EvalSummary{}, fmt.Errorf("aggregate evaluate round %d: %w", round, clientErr(r.Client, fmt.Errorf("%w: accuracy %v not in [0, 1]", ErrBadMetric, r.Accuracy)))
		}
		w := float64(r.Examples)
		loss += w * r.Loss
		acc += w * r.Accuracy
		total += w
		examples += r.Examples
	}
	return EvalSummary{Round: round, Clients: len(results), Examples: examples, Loss: loss / total, Accuracy: acc / total}, nil
}

// newAccumulator builds the sum accumulator a Common configuration asks
// for: sample-weighted (or uniform), capped, optionally norm-bounded.
func (c Common) newAccumulator(dim int, uniform bool) (Accumulator, error) {
	ws, err := NewWeightedSum(dim, c.SampleCap, uniform)
	if err != nil {
		return nil, err
	}
	if c.NormBound > 0 {
		return NewClippedAccumulator(ws, dim, c.NormBound)
	}
	return ws, nil
}
