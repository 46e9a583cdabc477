package aggregation

import (
	"math"
	"math/rand/v2"
	"testing"
)

func randDelta(r *rand.Rand, n int, scale float64) []float32 {
	d := make([]float32, n)
	for i := range d {
		d[i] = float32(r.NormFloat64() * scale)
	}
	return d
}

// The vector kernels must match the portable ones bit for bit, for every
// length around the block size and for every position of a bad value.
func TestKernelsMatchGeneric(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 3, 15, 16, 17, 31, 32, 33, 100, 1023, 4096 + 7} {
		d := randDelta(r, n, 3)
		s1 := make([]float64, n)
		s2 := make([]float64, n)
		for i := range s1 {
			s1[i] = r.NormFloat64()
			s2[i] = s1[i]
		}
		w := 1 + r.Float64()*1000
		axpy(s1, d, w)
		axpyGeneric(s2, d, w)
		for i := range s1 {
			if math.Float64bits(s1[i]) != math.Float64bits(s2[i]) {
				t.Fatalf("n=%d i=%d: axpy %v, generic %v", n, i, s1[i], s2[i])
			}
		}
		if !allFinite(d) || !allFiniteGeneric(d) {
			t.Fatalf("n=%d: finite vector reported non-finite", n)
		}
		for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
			for i := 0; i < n; i++ {
				if n > 100 && i > 40 && i < n-40 && i%97 != 0 {
					continue // every position near the ends, a stride in between
				}
				old := d[i]
				d[i] = bad
				if allFinite(d) || allFiniteGeneric(d) {
					t.Fatalf("n=%d: %v at %d not detected", n, bad, i)
				}
				d[i] = old
			}
		}
	}
	// Largest finite values and subnormals are finite.
	edge := []float32{math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, 0, float32(math.Copysign(0, -1))}
	for len(edge) < 40 {
		edge = append(edge, edge...)
	}
	if !allFinite(edge) {
		t.Fatal("edge values reported non-finite")
	}
}
