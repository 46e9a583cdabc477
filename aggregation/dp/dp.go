// Package dp wraps a sum-based aggregation strategy with central
// differential privacy in the style of DP-FedAvg (McMahan et al. 2018,
// "Learning Differentially Private Recurrent Language Models"): every
// client delta is clipped to L2 norm C and weighted uniformly, Gaussian
// noise of standard deviation z·C is added to the sum (so z·C/n on the
// mean of n clients), and a Rényi DP accountant for the sampled Gaussian
// mechanism reports ε at the configured δ after every round.
//
// Noise is drawn from a ChaCha8 stream keyed by the configured seed and
// the round number, so a simulation replays exactly. The noise is
// float64 Gaussian sampling; like most ML DP libraries it does not defend
// against floating-point side channels (Mironov 2012).
package dp

import (
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/fedge-dev/fedge/aggregation"
)

// ErrConfig reports an invalid DP configuration.
var ErrConfig = errors.New("invalid DP configuration")

// Config configures the DP wrapper.
type Config struct {
	// NoiseMultiplier z: noise std on the sum is z·ClipNorm.
	NoiseMultiplier float64
	// ClipNorm C: the L2 bound of each client delta (the sensitivity of the
	// sum under add/remove-one-client adjacency).
	ClipNorm float64
	// SamplingRate q: the probability that a client takes part in a round
	// (clients per round / population). It must describe the inner
	// strategy's sampling; the accountant assumes Poisson sampling.
	SamplingRate float64
	// Delta is the δ at which ε is reported.
	Delta float64
	// Key keys the noise stream. Whoever knows it can subtract the noise,
	// so in production it is secret and random (NewKey); a fixed key
	// (KeyFromSeed) is for reproducible simulations only.
	Key [32]byte
	// Orders are the Rényi orders; nil means DefaultOrders.
	Orders []float64
}

// Strategy is a differentially private wrapper around a sum-based
// strategy. It is itself sum-based, so it works with secure aggregation
// when clients clip locally (the round configuration asks them to); the
// server cannot check clipping it cannot see.
type Strategy struct {
	inner aggregation.StreamingStrategy
	cfg   Config
	acct  *Accountant
}

var _ aggregation.StreamingStrategy = (*Strategy)(nil)

// Wrap returns inner with central DP.
func Wrap(inner aggregation.StreamingStrategy, cfg Config) (*Strategy, error) {
	if inner == nil {
		return nil, fmt.Errorf("dp: %w: nil strategy", ErrConfig)
	}
	bad := func(name string, v float64) error {
		return fmt.Errorf("dp(%s): %w: %s %v", inner.Name(), ErrConfig, name, v)
	}
	switch {
	case !(cfg.NoiseMultiplier > 0) || math.IsInf(cfg.NoiseMultiplier, 0):
		return nil, bad("noise multiplier", cfg.NoiseMultiplier)
	case !(cfg.ClipNorm > 0) || math.IsInf(cfg.ClipNorm, 0):
		return nil, bad("clip norm", cfg.ClipNorm)
	case !(cfg.SamplingRate > 0 && cfg.SamplingRate <= 1):
		return nil, bad("sampling rate", cfg.SamplingRate)
	case !(cfg.Delta > 0 && cfg.Delta < 1):
		return nil, bad("delta", cfg.Delta)
	}
	acct, err := NewAccountant(cfg.Orders)
	if err != nil {
		return nil, fmt.Errorf("dp(%s): %w", inner.Name(), err)
	}
	return &Strategy{inner: inner, cfg: cfg, acct: acct}, nil
}

// Name implements aggregation.Strategy.
func (s *Strategy) Name() string { return "dp(" + s.inner.Name() + ")" }

// SumBased implements aggregation.Strategy; always true.
func (s *Strategy) SumBased() bool { return true }

// Optimizer exposes the wrapped strategy's server optimizer (for persisting
// its state), nil if it has none.
func (s *Strategy) Optimizer() aggregation.ServerOptimizer {
	if o, ok := s.inner.(aggregation.WithOptimizer); ok {
		return o.Optimizer()
	}
	return nil
}

// Accountant exposes the privacy accountant (for persistence).
func (s *Strategy) Accountant() *Accountant { return s.acct }

// Epsilon is the cumulative ε at the configured δ.
func (s *Strategy) Epsilon() (float64, error) {
	eps, _, err := s.acct.Epsilon(s.cfg.Delta)
	return eps, err
}

// ConfigureTrain implements aggregation.Strategy; it asks every client to
// clip its delta to ClipNorm.
func (s *Strategy) ConfigureTrain(round uint64, available []string) ([]aggregation.TrainInstruction, error) {
	ins, err := s.inner.ConfigureTrain(round, available)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Name(), err)
	}
	for i := range ins {
		ins[i].Config.ClipNorm = s.cfg.ClipNorm
	}
	return ins, nil
}

// ConfigureEvaluate implements aggregation.Strategy.
func (s *Strategy) ConfigureEvaluate(round uint64, available []string) ([]aggregation.EvalInstruction, error) {
	return s.inner.ConfigureEvaluate(round, available)
}

// AggregateEvaluate implements aggregation.Strategy.
func (s *Strategy) AggregateEvaluate(round uint64, results []aggregation.EvalResult) (aggregation.EvalSummary, error) {
	return s.inner.AggregateEvaluate(round, results)
}

// NewAccumulator implements aggregation.StreamingStrategy: uniform weights
// and clipping to ClipNorm.
func (s *Strategy) NewAccumulator(dim int) (aggregation.Accumulator, error) {
	ws, err := aggregation.NewWeightedSum(dim, 0, true)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Name(), err)
	}
	acc, err := aggregation.NewClippedAccumulator(ws, dim, s.cfg.ClipNorm)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Name(), err)
	}
	return acc, nil
}

// AggregateTrain implements aggregation.Strategy.
func (s *Strategy) AggregateTrain(round uint64, global []float32, results []aggregation.TrainResult) (aggregation.TrainSummary, error) {
	acc, err := s.NewAccumulator(len(global))
	if err != nil {
		return aggregation.TrainSummary{}, err
	}
	for _, r := range results {
		if err := acc.Add(r.Client, r.Delta, r.Samples); err != nil {
			return aggregation.TrainSummary{}, fmt.Errorf("%s round %d: %w", s.Name(), round, err)
		}
	}
	return s.ApplyAggregate(round, global, acc.Aggregate())
}

// ApplyAggregate implements aggregation.StreamingStrategy. agg must be a
// sum of clipped, uniformly weighted deltas (TotalWeight == Clients); the
// noise is added to a copy of the sum, the inner strategy applies the
// result, and one round is charged to the accountant.
func (s *Strategy) ApplyAggregate(round uint64, global []float32, agg aggregation.Aggregate) (aggregation.TrainSummary, error) {
	if agg.TotalWeight != float64(agg.Clients) {
		return aggregation.TrainSummary{}, fmt.Errorf("%s round %d: %w: total weight %v for %d clients; DP needs uniform weights", s.Name(), round, ErrConfig, agg.TotalWeight, agg.Clients)
	}
	noisy := agg
	noisy.Sum = make([]float64, len(agg.Sum))
	copy(noisy.Sum, agg.Sum)
	AddGaussianNoise(noisy.Sum, s.cfg.NoiseMultiplier*s.cfg.ClipNorm, s.cfg.Key, round)
	sum, err := s.inner.ApplyAggregate(round, global, noisy)
	if err != nil {
		return aggregation.TrainSummary{}, fmt.Errorf("%s: %w", s.Name(), err)
	}
	if err := s.acct.Compose(s.cfg.SamplingRate, s.cfg.NoiseMultiplier, 1); err != nil {
		return aggregation.TrainSummary{}, fmt.Errorf("%s: %w", s.Name(), err)
	}
	if sum.Epsilon, err = s.Epsilon(); err != nil {
		return aggregation.TrainSummary{}, fmt.Errorf("%s: %w", s.Name(), err)
	}
	return sum, nil
}

// NewKey returns a random noise key (256 bits from the system's CSPRNG).
func NewKey() ([32]byte, error) {
	var k [32]byte
	if _, err := crand.Read(k[:]); err != nil {
		return k, fmt.Errorf("dp noise key: %w", err)
	}
	return k, nil
}

// KeyFromSeed derives a noise key from a seed, for reproducible
// simulations: a 64-bit seed is guessable, so it must not key production
// noise.
func KeyFromSeed(seed uint64) [32]byte {
	h := sha256.New()
	h.Write([]byte("fedge/dp/noise-seed/1"))
	h.Write(binary.LittleEndian.AppendUint64(nil, seed))
	return [32]byte(h.Sum(nil))
}

// AddGaussianNoise adds N(0, std²) to every element, drawn from a ChaCha8
// stream keyed by SHA-256(key, round): the same inputs give the same noise,
// and each round's stream is independent of the others'.
func AddGaussianNoise(v []float64, std float64, key [32]byte, round uint64) {
	h := sha256.New()
	h.Write([]byte("fedge/dp/noise/2"))
	h.Write(key[:])
	h.Write(binary.LittleEndian.AppendUint64(nil, round))
	r := rand.New(rand.NewChaCha8([32]byte(h.Sum(nil))))
	for i := range v {
		v[i] += std * r.NormFloat64()
	}
}
