package aggregation

import (
	"fmt"
	"math"
)

// checkDelta validates one update: length, finiteness and sample count.
func checkDelta(client string, delta []float32, dim int, samples int64) error {
	if len(delta) != dim {
		return clientErr(client, fmt.Errorf("%w: got %d parameters, model has %d", ErrDimension, len(delta), dim))
	}
	if err := checkSamples(client, samples); err != nil {
		return err
	}
	if i := firstNonFinite(delta); i >= 0 {
		return clientErr(client, fmt.Errorf("%w at index %d: %v", ErrNonFinite, i, delta[i]))
	}
	return nil
}

func checkSamples(client string, samples int64) error {
	if samples <= 0 || samples > MaxSamples {
		return clientErr(client, fmt.Errorf("%w: %d (want 1..%d)", ErrSampleCount, samples, MaxSamples))
	}
	return nil
}

// capSamples applies an optional cap (0 = none) and reports whether it bit.
func capSamples(samples, limit int64) (int64, bool) {
	if limit > 0 && samples > limit {
		return limit, true
	}
	return samples, false
}

// firstNonFinite returns the index of the first NaN or ±Inf, or -1.
func firstNonFinite(v []float32) int {
	if allFinite(v) {
		return -1
	}
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return i
		}
	}
	return -1
}

func allFinite64(v []float64) int {
	for i, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return i
		}
	}
	return -1
}

// seenSet tracks which clients contributed in a round.
type seenSet map[string]struct{}

func (s seenSet) add(client string) error {
	if _, dup := s[client]; dup {
		return clientErr(client, ErrDuplicate)
	}
	s[client] = struct{}{}
	return nil
}
