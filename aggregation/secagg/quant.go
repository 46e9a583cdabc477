package secagg

import (
	"fmt"
	"math"
	"math/bits"
)

// Quantizer maps clipped float values to fixed point in Z_{2^32} so that the
// sum of up to N inputs cannot overflow: each value becomes a signed integer
// of magnitude at most MaxQ = 2^(31-ceil(log2 N)) - 1 (two's complement mod
// 2^32), hence |sum| <= N*MaxQ < 2^31 and the sum reads back exactly as an
// int32. Rounding is deterministic, to the nearest integer (half away from
// zero): reproducible from a seed, with error at most 0.5/Scale per client
// per coordinate (a bias that stochastic rounding would remove at the cost
// of client-side randomness).
type Quantizer struct {
	Clip  float64 // values are clipped to [-Clip, Clip]
	MaxQ  int32   // largest quantized magnitude
	Scale float64 // MaxQ / Clip: quantized units per input unit
}

// NewQuantizer sizes a quantizer for sums of n inputs clipped to [-clip, clip].
func NewQuantizer(clip float64, n int) (Quantizer, error) {
	if !(clip > 0) || math.IsInf(clip, 0) || n < 1 || n > MaxClients {
		return Quantizer{}, fmt.Errorf("quantizer for clip %v and %d clients: %w", clip, n, ErrConfig)
	}
	headroom := bits.Len(uint(n - 1)) // ceil(log2 n)
	maxQ := int32(1)<<(31-headroom) - 1
	return Quantizer{Clip: clip, MaxQ: maxQ, Scale: float64(maxQ) / clip}, nil
}

// Quantizer returns the quantizer of the round.
func (c *Config) Quantizer() Quantizer {
	q, err := NewQuantizer(c.Clip, c.N)
	if err != nil {
		panic("secagg: quantizer of a validated config: " + err.Error())
	}
	return q
}

// Quantize returns round(clip(v) * Scale) as an element of Z_{2^32}.
func (q Quantizer) Quantize(v float64) uint32 {
	v = math.Max(-q.Clip, math.Min(q.Clip, v))
	return uint32(int32(math.Round(v * q.Scale)))
}

// Dequantize reads a sum of quantized values back as a float64.
func (q Quantizer) Dequantize(sum uint32) float64 { return float64(int32(sum)) / q.Scale }

// Encode quantizes a client's input into the vector that gets masked:
// values (times w/MaxWeight when the weight channel is on) and, with the
// weight channel, the weight fraction w/MaxWeight as the last coordinate.
// NaN or infinite values and weights are rejected.
func (c *Config) Encode(values []float32, weight float64) ([]uint32, error) {
	if len(values) != c.Dim {
		return nil, fmt.Errorf("input of length %d, want %d: %w", len(values), c.Dim, ErrNoInput)
	}
	q := c.Quantizer()
	scale := 1.0
	out := make([]uint32, c.VectorLen())
	if c.MaxWeight > 0 {
		if math.IsNaN(weight) || math.IsInf(weight, 0) {
			return nil, fmt.Errorf("weight %v: %w", weight, ErrNoInput)
		}
		scale = math.Max(0, math.Min(c.MaxWeight, weight)) / c.MaxWeight
		out[c.Dim] = uint32(int32(math.Round(scale * float64(q.MaxQ))))
	}
	for i, v := range values {
		f := float64(v)
		// Plain comparisons instead of math.Max/Min, which also propagate
		// NaN and order signed zeros at several times the cost; neither
		// matters here (NaN is rejected, -0 and +0 quantize alike), and
		// TestEncodeMatchesReference checks the results are identical.
		switch {
		case f != f || math.IsInf(f, 0):
			return nil, fmt.Errorf("input[%d]=%v: %w", i, v, ErrNoInput)
		case f > q.Clip:
			f = q.Clip
		case f < -q.Clip:
			f = -q.Clip
		}
		out[i] = uint32(int32(math.Round(f * scale * q.Scale)))
	}
	return out, nil
}

// Result is the outcome of a completed round.
type Result struct {
	// Sum is the exact sum mod 2^32 of the encoded inputs of Survivors
	// (VectorLen coordinates).
	Sum []uint32
	// Survivors are the clients whose inputs are in Sum, ascending.
	Survivors []uint32
	q         Quantizer
	dim       int
	weighted  bool
}

// Values dequantizes the first Dim coordinates of Sum: the sum of the
// clipped (and, with the weight channel, weight-scaled) inputs.
func (r *Result) Values() []float64 {
	out := make([]float64, r.dim)
	for i := range out {
		out[i] = r.q.Dequantize(r.Sum[i])
	}
	return out
}

// WeightSum is the sum of the survivors' weights in units of MaxWeight (the
// weight channel), or the number of survivors without it.
func (r *Result) WeightSum() float64 {
	if !r.weighted {
		return float64(len(r.Survivors))
	}
	return float64(int32(r.Sum[r.dim])) / float64(r.q.MaxQ)
}

// Mean is Values()/WeightSum(): the weighted average of the survivors'
// inputs (FedAvg) with the weight channel, the plain average without it.
// It returns nil if the weight sum is zero.
func (r *Result) Mean() []float64 {
	w := r.WeightSum()
	if w == 0 {
		return nil
	}
	v := r.Values()
	for i := range v {
		v[i] /= w
	}
	return v
}
