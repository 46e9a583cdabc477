// Package aggregation is the coordinator's aggregation math: the Strategy
// interface (Flower style), streaming sample-weighted FedAvg, the FedOpt
// server optimizers of Reddi et al. 2021 (FedAvgM, FedAdam, FedYogi,
// FedAdagrad), FedProx's round configuration, Byzantine-robust aggregators
// (coordinate-wise median, trimmed mean, Krum, Multi-Krum, Bulyan) and
// norm bounding of client deltas.
//
// Clients send model deltas (local minus global weights) as float32
// vectors. Everything here is pure: no IO, no logging, no clocks, no
// goroutines. Randomness (client sampling) comes from explicit seeds.
//
// Two aggregation paths exist and the types say which one a strategy
// supports:
//
//   - Sum-based strategies (FedAvg and the FedOpt family) implement
//     StreamingStrategy: the coordinator folds each update into an
//     Accumulator as it arrives (O(model size) memory) and finishes with
//     ApplyAggregate, which also accepts a sum computed elsewhere (secure
//     aggregation, partial sums from several workers).
//   - Robust strategies need every update at once; they implement only
//     Strategy and report SumBased() == false, so a coordinator can refuse
//     to combine them with secure aggregation (see RequireStreaming).
//
// Update codecs live in aggregation/codec, differential privacy in
// aggregation/dp.
package aggregation

import (
	"fmt"

	"github.com/fedge-dev/fedge/aggregation/codec"
)

// TrainConfig is what one client is asked to do in a training round. It is
// a typed struct on purpose: no free-form maps.
type TrainConfig struct {
	Round        uint64
	LocalEpochs  int
	BatchSize    int
	LearningRate float64
	// ProximalMu is FedProx's proximal coefficient μ (Li et al. 2020): the
	// client adds μ/2·||w - w_global||² to its local loss. Zero disables it.
	ProximalMu float64
	// ClipNorm asks the client to bound the L2 norm of its delta (norm
	// bounding, DP). Zero means no client-side clipping is requested. The
	// server clips again whenever it sees the plain update.
	ClipNorm float64
	// Codec is the update encoding chosen for this round (see
	// codec.Negotiate) with its parameters.
	Codec codec.Spec
}

// EvalConfig is what one client is asked to do in an evaluation round.
type EvalConfig struct {
	Round     uint64
	BatchSize int
	// MaxExamples bounds the examples evaluated; zero means all.
	MaxExamples int64
}

// TrainInstruction is the training configuration sent to one client.
type TrainInstruction struct {
	Client string
	Config TrainConfig
}

// EvalInstruction is the evaluation configuration sent to one client.
type EvalInstruction struct {
	Client string
	Config EvalConfig
}

// TrainResult is one client's training update.
type TrainResult struct {
	Client string
	// Delta is local minus global weights, same length as the model.
	Delta []float32
	// Samples is the client's self-reported number of training examples.
	Samples int64
}

// EvalResult is one client's evaluation report.
type EvalResult struct {
	Client   string
	Examples int64
	Loss     float64
	Accuracy float64
}

// TrainSummary describes one applied aggregation.
type TrainSummary struct {
	Round   uint64
	Clients int
	// TotalWeight is the sum of aggregation weights (capped sample counts,
	// or the client count for unweighted aggregators).
	TotalWeight float64
	// CappedClients counts updates whose sample count was capped.
	CappedClients int
	// ClippedClients counts updates whose norm was bounded.
	ClippedClients int
	// DeltaNorm is the L2 norm of the aggregated mean delta before the
	// server optimizer.
	DeltaNorm float64
	// Epsilon is the cumulative DP epsilon at the configured delta after
	// this round; zero when the strategy is not differentially private.
	Epsilon float64
}

// EvalSummary is the example-weighted mean of the clients' evaluations.
type EvalSummary struct {
	Round    uint64
	Clients  int
	Examples int64
	Loss     float64
	Accuracy float64
}

// Strategy decides which clients train and evaluate each round and turns
// their results into a new global model.
type Strategy interface {
	// Name identifies the strategy in logs and errors.
	Name() string
	// SumBased reports whether aggregation only needs the weighted sum of
	// the deltas (true for FedAvg and FedOpt; false for robust
	// aggregators). Only sum-based strategies work with secure aggregation.
	SumBased() bool
	// ConfigureTrain picks clients among the available ones and returns
	// their training configuration for the round.
	ConfigureTrain(round uint64, available []string) ([]TrainInstruction, error)
	// AggregateTrain validates the results, aggregates them and applies the
	// server update to global in place. On error global is unchanged.
	AggregateTrain(round uint64, global []float32, results []TrainResult) (TrainSummary, error)
	// ConfigureEvaluate picks clients for evaluation.
	ConfigureEvaluate(round uint64, available []string) ([]EvalInstruction, error)
	// AggregateEvaluate validates and averages evaluation results.
	AggregateEvaluate(round uint64, results []EvalResult) (EvalSummary, error)
}

// Aggregate is a finished weighted sum of client deltas: what an
// Accumulator or a secure aggregation round produces.
type Aggregate struct {
	// Sum is Σ w_i·Δ_i per coordinate.
	Sum []float64
	// TotalWeight is Σ w_i.
	TotalWeight float64
	// Clients is the number of updates in the sum.
	Clients int
	// CappedClients and ClippedClients are carried into the summary.
	CappedClients  int
	ClippedClients int
}

// StreamingStrategy is a sum-based strategy: updates are folded in one at a
// time and the aggregate is applied at the end of the round.
type StreamingStrategy interface {
	Strategy
	// NewAccumulator returns an empty accumulator for a model of dim
	// parameters, configured with the strategy's weighting, sample cap and
	// norm bound.
	NewAccumulator(dim int) (Accumulator, error)
	// ApplyAggregate turns a weighted sum into the mean delta and applies
	// the server optimizer to global in place. On error global is
	// unchanged.
	ApplyAggregate(round uint64, global []float32, agg Aggregate) (TrainSummary, error)
}

// RequireStreaming returns s as a StreamingStrategy, or an error wrapping
// ErrNotSumBased when s needs every update at once (robust aggregators), for
// example because secure aggregation only reveals the sum.
func RequireStreaming(s Strategy) (StreamingStrategy, error) {
	ss, ok := s.(StreamingStrategy)
	if !ok || !s.SumBased() {
		return nil, fmt.Errorf("strategy %s: %w", s.Name(), ErrNotSumBased)
	}
	return ss, nil
}
