package aggregation

import (
	"fmt"
	"math"
)

// Accumulator folds client deltas into a weighted sum as they arrive.
// Memory is O(model size) whatever the number of clients. A rejected update
// leaves the accumulator unchanged. Accumulators are not safe for
// concurrent use; the coordinator owns one per round (or one per worker,
// combined with WeightedSum.Merge).
type Accumulator interface {
	// Add validates and folds in one client's delta. Errors are
	// *ClientError wrapping ErrDimension, ErrNonFinite, ErrSampleCount or
	// ErrDuplicate.
	Add(client string, delta []float32, samples int64) error
	// Count is the number of updates folded in.
	Count() int
	// Aggregate returns the sum so far. Its Sum aliases the accumulator's
	// memory and is valid until the next Add or Reset.
	Aggregate() Aggregate
	// Reset empties the accumulator, keeping its memory.
	Reset()
}

// WeightedSum is the sum-based accumulator: Σ w_i·Δ_i in float64 with
// w_i the (optionally capped) sample count. Each coordinate sees one
// float32→float64 widening, one multiply and one add per update, so the
// error of the final sum is bounded by the usual recursive-summation bound
// n·u·Σ|w_i·Δ_i| with u = 2^-53, far below float32 output resolution for
// any realistic cohort. Add allocates nothing in steady state.
type WeightedSum struct {
	sum       []float64
	total     float64
	count     int
	capped    int
	sampleCap int64
	uniform   bool
	seen      seenSet
}

// NewWeightedSum returns an empty accumulator for dim parameters. A
// positive sampleCap bounds each client's weight (clients self-report
// sample counts); uniform gives every client weight 1 (DP-FedAvg,
// unweighted means) while still validating the sample count.
func NewWeightedSum(dim int, sampleCap int64, uniform bool) (*WeightedSum, error) {
	if dim < 0 {
		return nil, fmt.Errorf("new accumulator: %w: dimension %d", ErrConfig, dim)
	}
	if sampleCap < 0 {
		return nil, fmt.Errorf("new accumulator: %w: sample cap %d", ErrConfig, sampleCap)
	}
	return &WeightedSum{sum: make([]float64, dim), sampleCap: sampleCap, uniform: uniform, seen: make(seenSet, 64)}, nil
}

// Add implements Accumulator.
func (a *WeightedSum) Add(client string, delta []float32, samples int64) error {
	if err := checkDelta(client, delta, len(a.sum), samples); err != nil {
		return err
	}
	if err := a.seen.add(client); err != nil {
		return err
	}
	s, capped := capSamples(samples, a.sampleCap)
	w := float64(s)
	if a.uniform {
		w = 1
	}
	axpy(a.sum, delta, w)
	a.total += w
	a.count++
	if capped {
		a.capped++
	}
	return nil
}

// Count implements Accumulator.
func (a *WeightedSum) Count() int { return a.count }

// Aggregate implements Accumulator.
func (a *WeightedSum) Aggregate() Aggregate {
	return Aggregate{Sum: a.sum, TotalWeight: a.total, Clients: a.count, CappedClients: a.capped}
}

// Mean writes the weighted mean delta Σ w_i·Δ_i / Σ w_i into dst, which
// must have the accumulator's dimension. It fails on an empty accumulator.
func (a *WeightedSum) Mean(dst []float32) error {
	if len(dst) != len(a.sum) {
		return fmt.Errorf("mean: %w: destination has %d parameters, accumulator %d", ErrDimension, len(dst), len(a.sum))
	}
	if a.count == 0 {
		return fmt.Errorf("mean: %w: no updates", ErrTooFewClients)
	}
	for i, v := range a.sum {
		dst[i] = float32(v / a.total)
	}
	return nil
}

// Reset implements Accumulator.
func (a *WeightedSum) Reset() {
	clear(a.sum)
	clear(a.seen)
	a.total, a.count, a.capped = 0, 0, 0
}

// Merge adds another partial sum over a disjoint set of clients (several
// aggregation workers, gateways). Overlapping clients are an error naming
// the first duplicate; on error a is unchanged.
func (a *WeightedSum) Merge(b *WeightedSum) error {
	if len(b.sum) != len(a.sum) {
		return fmt.Errorf("merge accumulators: %w: %d vs %d parameters", ErrDimension, len(b.sum), len(a.sum))
	}
	for c := range b.seen {
		if _, dup := a.seen[c]; dup {
			return fmt.Errorf("merge accumulators: %w", clientErr(c, ErrDuplicate))
		}
	}
	for c := range b.seen {
		a.seen[c] = struct{}{}
	}
	for i, v := range b.sum {
		a.sum[i] += v
	}
	a.total += b.total
	a.count += b.count
	a.capped += b.capped
	return nil
}

// meanDelta validates agg against dim and returns Sum/TotalWeight.
func meanDelta(dim int, agg Aggregate) ([]float64, error) {
	if len(agg.Sum) != dim {
		return nil, fmt.Errorf("%w: aggregate has %d parameters, model %d", ErrDimension, len(agg.Sum), dim)
	}
	if agg.Clients < 1 {
		return nil, fmt.Errorf("%w: aggregate of %d clients", ErrTooFewClients, agg.Clients)
	}
	if !(agg.TotalWeight > 0) || math.IsInf(agg.TotalWeight, 0) {
		return nil, fmt.Errorf("%w: total weight %v", ErrSampleCount, agg.TotalWeight)
	}
	if i := allFinite64(agg.Sum); i >= 0 {
		return nil, fmt.Errorf("%w: aggregate sum at index %d", ErrNonFinite, i)
	}
	mean := make([]float64, dim)
	for i, v := range agg.Sum {
		mean[i] = v / agg.TotalWeight
	}
	return mean, nil
}

func norm64(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x * x
	}
	return math.Sqrt(s)
}
