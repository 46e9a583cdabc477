package aggregation

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

// FuzzWeightedSumAdd feeds arbitrary bytes as a client's float32 delta and
// an arbitrary sample count: Add either rejects it with a *ClientError
// wrapping a sentinel and leaves the sum untouched, or folds in exactly
// w·delta.
func FuzzWeightedSumAdd(f *testing.F) {
	le := func(vs ...float32) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		return b
	}
	seeds := []struct {
		data    []byte
		samples int64
	}{
		{le(1, 2, 3, 4), 10},
		{le(1, 2, 3), 10},                     // wrong dimension
		{le(1, float32(math.NaN()), 3, 4), 1}, // NaN
		{le(float32(math.Inf(1)), 0, 0, 0), 1},
		{le(1, 2, 3, 4), -5},
		{le(1, 2, 3, 4), MaxSamples + 1},
		{le(math.MaxFloat32, -math.MaxFloat32, 0, 1e-45), MaxSamples},
	}
	for _, s := range seeds {
		f.Add(s.data, s.samples)
	}
	f.Fuzz(func(t *testing.T, data []byte, samples int64) {
		const dim = 4
		delta := make([]float32, len(data)/4)
		for i := range delta {
			delta[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
		acc, _ := NewWeightedSum(dim, 1000, false)
		err := acc.Add("fuzz-client", delta, samples)
		agg := acc.Aggregate()
		if err != nil {
			var ce *ClientError
			if !errors.As(err, &ce) || ce.Client != "fuzz-client" {
				t.Fatalf("error does not name the client: %v", err)
			}
			if !errors.Is(err, ErrDimension) && !errors.Is(err, ErrNonFinite) && !errors.Is(err, ErrSampleCount) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			if agg.Clients != 0 || agg.TotalWeight != 0 {
				t.Fatalf("rejected update counted: %+v", agg)
			}
			for _, v := range agg.Sum {
				if v != 0 {
					t.Fatal("rejected update changed the sum")
				}
			}
			return
		}
		w := float64(min(samples, 1000))
		for i, v := range agg.Sum {
			if want := w * float64(delta[i]); v != want || math.IsInf(v, 0) {
				t.Fatalf("coord %d: sum %v, want %v", i, v, want)
			}
		}
	})
}

// Streaming FedAvg with a norm bound clips each update before weighting.
func TestFedAvgNormBoundStreaming(t *testing.T) {
	s, err := NewFedAvg(FedAvgConfig{Common: Common{NormBound: 1}})
	if err != nil {
		t.Fatal(err)
	}
	acc, err := s.NewAccumulator(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := acc.Add("big", []float32{30, 40}, 3); err != nil {
		t.Fatal(err)
	}
	if err := acc.Add("small", []float32{0, 0.5}, 1); err != nil {
		t.Fatal(err)
	}
	g := []float32{0, 0}
	sum, err := s.ApplyAggregate(1, g, acc.Aggregate())
	if err != nil {
		t.Fatal(err)
	}
	// (3·(0.6, 0.8) + (0, 0.5)) / 4 = (0.45, 0.725).
	if math.Abs(float64(g[0])-0.45) > 1e-6 || math.Abs(float64(g[1])-0.725) > 1e-6 || sum.ClippedClients != 1 {
		t.Fatalf("global %v summary %+v", g, sum)
	}
}
