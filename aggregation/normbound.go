package aggregation

import (
	"fmt"
	"math"
)

// L2Norm is the Euclidean norm of v, accumulated in float64.
func L2Norm(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

// ClipL2 writes src scaled by min(1, bound/||src||) into dst (norm
// bounding, Sun et al. 2019; DP clipping) and returns ||src|| and whether
// it was scaled. dst and src may alias; len(dst) must be len(src).
func ClipL2(dst, src []float32, bound float64) (norm float64, clipped bool) {
	norm = L2Norm(src)
	if norm <= bound {
		copy(dst, src)
		return norm, false
	}
	f := bound / norm
	for i, x := range src {
		dst[i] = float32(float64(x) * f)
	}
	return norm, true
}

// ClippedAccumulator bounds the L2 norm of every delta before handing it to
// an inner accumulator. It keeps one scratch vector, so Add allocates
// nothing.
type ClippedAccumulator struct {
	inner   Accumulator
	bound   float64
	scratch []float32
	clipped int
}

// NewClippedAccumulator wraps inner (for dim parameters) with an L2 bound.
func NewClippedAccumulator(inner Accumulator, dim int, bound float64) (*ClippedAccumulator, error) {
	if !(bound > 0) || math.IsInf(bound, 0) {
		return nil, fmt.Errorf("clipped accumulator: %w: bound %v must be positive and finite", ErrConfig, bound)
	}
	return &ClippedAccumulator{inner: inner, bound: bound, scratch: make([]float32, dim)}, nil
}

// Add implements Accumulator.
func (c *ClippedAccumulator) Add(client string, delta []float32, samples int64) error {
	if len(delta) != len(c.scratch) || !allFinite(delta) {
		return c.inner.Add(client, delta, samples) // the inner check names the fault
	}
	_, clipped := ClipL2(c.scratch, delta, c.bound)
	if err := c.inner.Add(client, c.scratch, samples); err != nil {
		return err
	}
	if clipped {
		c.clipped++
	}
	return nil
}

// Count implements Accumulator.
func (c *ClippedAccumulator) Count() int { return c.inner.Count() }

// Aggregate implements Accumulator.
func (c *ClippedAccumulator) Aggregate() Aggregate {
	a := c.inner.Aggregate()
	a.ClippedClients += c.clipped
	return a
}

// Reset implements Accumulator.
func (c *ClippedAccumulator) Reset() {
	c.inner.Reset()
	c.clipped = 0
}
