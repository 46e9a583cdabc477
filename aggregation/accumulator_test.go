package aggregation

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// naiveMean is the float64 reference: Σ w_i Δ_i / Σ w_i.
func naiveMean(deltas [][]float32, weights []float64) []float64 {
	out := make([]float64, len(deltas[0]))
	var tot float64
	for k, d := range deltas {
		for i, x := range d {
			out[i] += weights[k] * float64(x)
		}
		tot += weights[k]
	}
	for i := range out {
		out[i] /= tot
	}
	return out
}

func TestWeightedSumMatchesFloat64Reference(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for trial := range 30 {
		n := 1 + r.IntN(40)
		dim := 1 + r.IntN(300)
		sampleCap := int64(0)
		if trial%3 == 0 {
			sampleCap = 500
		}
		acc, err := NewWeightedSum(dim, sampleCap, false)
		if err != nil {
			t.Fatal(err)
		}
		var deltas [][]float32
		var weights []float64
		for k := range n {
			d := randDelta(r, dim, math.Pow(10, float64(r.IntN(7)-3)))
			s := 1 + r.Int64N(1000)
			if err := acc.Add(fmt.Sprint("c", k), d, s); err != nil {
				t.Fatal(err)
			}
			deltas = append(deltas, d)
			w := float64(s)
			if sampleCap > 0 {
				w = math.Min(w, float64(sampleCap))
			}
			weights = append(weights, w)
		}
		want := naiveMean(deltas, weights)
		agg := acc.Aggregate()
		if agg.Clients != n {
			t.Fatalf("clients %d, want %d", agg.Clients, n)
		}
		got, err := meanDelta(dim, agg)
		if err != nil {
			t.Fatal(err)
		}
		mean32 := make([]float32, dim)
		if err := acc.Mean(mean32); err != nil {
			t.Fatal(err)
		}
		for i := range mean32 {
			if mean32[i] != float32(got[i]) {
				t.Fatalf("Mean %v vs %v", mean32[i], got[i])
			}
		}
		// Bound: each coordinate sums n terms in float64.
		for i := range want {
			var mag float64
			for k := range deltas {
				mag += weights[k] * math.Abs(float64(deltas[k][i]))
			}
			tol := float64(n+2) * 0x1p-52 * mag / agg.TotalWeight
			if math.Abs(got[i]-want[i]) > tol {
				t.Fatalf("trial %d coord %d: got %v want %v (tol %v)", trial, i, got[i], want[i], tol)
			}
		}
	}
}

func TestWeightedSumAddDoesNotAllocate(t *testing.T) {
	const dim = 1000
	acc, _ := NewWeightedSum(dim, 0, false)
	d := randDelta(rand.New(rand.NewPCG(1, 1)), dim, 1)
	names := make([]string, 64)
	for i := range names {
		names[i] = fmt.Sprint("client-", i)
	}
	for _, name := range names { // warm the seen set
		_ = acc.Add(name, d, 10)
	}
	i := 0
	allocs := testing.AllocsPerRun(200, func() {
		if i%len(names) == 0 {
			acc.Reset()
		}
		if err := acc.Add(names[i%len(names)], d, 10); err != nil {
			t.Fatal(err)
		}
		i++
	})
	if allocs != 0 {
		t.Fatalf("Add allocates %v times per call", allocs)
	}
}

// Every bad input is an error that names the client, wraps the right
// sentinel, and leaves the accumulator unchanged.
func TestBadUpdatesNameTheClient(t *testing.T) {
	good := []float32{1, 2, 3, 4}
	nan := []float32{1, float32(math.NaN()), 3, 4}
	inf := []float32{1, 2, float32(math.Inf(-1)), 4}
	cases := []struct {
		name    string
		client  string
		delta   []float32
		samples int64
		want    error
	}{
		{"short", "dev-short", []float32{1, 2, 3}, 5, ErrDimension},
		{"long", "dev-long", []float32{1, 2, 3, 4, 5}, 5, ErrDimension},
		{"nan", "dev-nan", nan, 5, ErrNonFinite},
		{"inf", "dev-inf", inf, 5, ErrNonFinite},
		{"negative samples", "dev-neg", good, -1, ErrSampleCount},
		{"zero samples", "dev-zero", good, 0, ErrSampleCount},
		{"absurd samples", "dev-absurd", good, MaxSamples + 1, ErrSampleCount},
		{"duplicate", "dev-first", good, 5, ErrDuplicate},
	}
	strategies := map[string]func() Accumulator{
		"weighted": func() Accumulator { a, _ := NewWeightedSum(4, 0, false); return a },
		"clipped": func() Accumulator {
			w, _ := NewWeightedSum(4, 0, false)
			a, _ := NewClippedAccumulator(w, 4, 1)
			return a
		},
	}
	for sname, mk := range strategies {
		for _, tc := range cases {
			t.Run(sname+"/"+tc.name, func(t *testing.T) {
				acc := mk()
				if err := acc.Add("dev-first", good, 5); err != nil {
					t.Fatal(err)
				}
				before := append([]float64(nil), acc.Aggregate().Sum...)
				err := acc.Add(tc.client, tc.delta, tc.samples)
				var ce *ClientError
				if !errors.As(err, &ce) || ce.Client != tc.client || !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want client %q and %v", err, tc.client, tc.want)
				}
				agg := acc.Aggregate()
				if agg.Clients != 1 || acc.Count() != 1 || agg.TotalWeight != 5 {
					t.Fatalf("rejected update counted: %+v", agg)
				}
				for i := range before {
					if agg.Sum[i] != before[i] {
						t.Fatalf("rejected update changed the sum")
					}
				}
			})
		}
	}
}

func TestStrategiesRejectBadResultsNamingClient(t *testing.T) {
	global := []float32{0, 0, 0}
	results := []TrainResult{
		{Client: "ok-1", Delta: []float32{1, 1, 1}, Samples: 10},
		{Client: "ok-2", Delta: []float32{1, 1, 1}, Samples: 10},
		{Client: "ok-3", Delta: []float32{1, 1, 1}, Samples: 10},
		{Client: "bad-dev", Delta: []float32{1, float32(math.Inf(1)), 1}, Samples: 10},
	}
	fedavg, _ := NewFedAvg(FedAvgConfig{})
	med, _ := NewRobust(RobustConfig{Aggregator: Median{}})
	for _, s := range []Strategy{fedavg, med} {
		_, err := s.AggregateTrain(1, global, results)
		var ce *ClientError
		if !errors.As(err, &ce) || ce.Client != "bad-dev" || !errors.Is(err, ErrNonFinite) {
			t.Fatalf("%s: err = %v", s.Name(), err)
		}
		if global[0] != 0 {
			t.Fatalf("%s: global changed on error", s.Name())
		}
	}
}

func TestSampleCapAndCounts(t *testing.T) {
	acc, _ := NewWeightedSum(1, 100, false)
	_ = acc.Add("small", []float32{1}, 50)
	_ = acc.Add("huge", []float32{-1}, 1_000_000)
	agg := acc.Aggregate()
	if agg.TotalWeight != 150 || agg.CappedClients != 1 {
		t.Fatalf("cap: %+v", agg)
	}
	if got := agg.Sum[0] / agg.TotalWeight; math.Abs(got-(-50.0/150)) > 1e-15 {
		t.Fatalf("capped mean %v", got)
	}
}

func TestMergeEqualsSingleAccumulator(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	whole, _ := NewWeightedSum(50, 0, false)
	a, _ := NewWeightedSum(50, 0, false)
	b, _ := NewWeightedSum(50, 0, false)
	for k := range 10 {
		d := randDelta(r, 50, 1)
		name := fmt.Sprint("c", k)
		_ = whole.Add(name, d, int64(k+1))
		part := a
		if k%2 == 1 {
			part = b
		}
		_ = part.Add(name, d, int64(k+1))
	}
	if err := a.Merge(b); err != nil {
		t.Fatal(err)
	}
	wa, aa := whole.Aggregate(), a.Aggregate()
	if wa.Clients != aa.Clients || wa.TotalWeight != aa.TotalWeight {
		t.Fatalf("merged %+v vs %+v", aa, wa)
	}
	for i := range wa.Sum {
		if math.Abs(wa.Sum[i]-aa.Sum[i]) > 1e-12*(1+math.Abs(wa.Sum[i])) {
			t.Fatalf("coord %d: %v vs %v", i, aa.Sum[i], wa.Sum[i])
		}
	}
	empty, _ := NewWeightedSum(2, 0, false)
	if err := empty.Mean(make([]float32, 2)); !errors.Is(err, ErrTooFewClients) {
		t.Fatalf("mean of nothing: %v", err)
	}
	if err := a.Mean(make([]float32, 3)); !errors.Is(err, ErrDimension) {
		t.Fatalf("mean into wrong size: %v", err)
	}
	if err := a.Merge(b); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("merging twice: %v", err)
	}
	c, _ := NewWeightedSum(49, 0, false)
	if err := a.Merge(c); !errors.Is(err, ErrDimension) {
		t.Fatalf("merging wrong dim: %v", err)
	}
}

func TestClipL2(t *testing.T) {
	cases := []struct {
		in      []float32
		bound   float64
		want    []float32
		clipped bool
	}{
		{[]float32{3, 4}, 10, []float32{3, 4}, false},
		{[]float32{3, 4}, 5, []float32{3, 4}, false},
		{[]float32{3, 4}, 1, []float32{0.6, 0.8}, true},
		{[]float32{0, 0}, 1, []float32{0, 0}, false},
	}
	for _, tc := range cases {
		dst := make([]float32, len(tc.in))
		_, c := ClipL2(dst, tc.in, tc.bound)
		if c != tc.clipped {
			t.Fatalf("%v: clipped=%v", tc.in, c)
		}
		for i := range dst {
			if math.Abs(float64(dst[i]-tc.want[i])) > 1e-7 {
				t.Fatalf("%v bound %v: got %v want %v", tc.in, tc.bound, dst, tc.want)
			}
		}
		if L2Norm(dst) > tc.bound*(1+1e-6) {
			t.Fatalf("norm %v above bound %v", L2Norm(dst), tc.bound)
		}
	}
}

func TestAccumulatorConstructorsAndReset(t *testing.T) {
	if _, err := NewWeightedSum(-1, 0, false); !errors.Is(err, ErrConfig) {
		t.Fatal(err)
	}
	if _, err := NewWeightedSum(3, -1, false); !errors.Is(err, ErrConfig) {
		t.Fatal(err)
	}
	ws, _ := NewWeightedSum(2, 0, false)
	for _, bound := range []float64{0, -1, math.Inf(1), math.NaN()} {
		if _, err := NewClippedAccumulator(ws, 2, bound); !errors.Is(err, ErrConfig) {
			t.Fatalf("bound %v: %v", bound, err)
		}
	}
	c, _ := NewClippedAccumulator(ws, 2, 1)
	_ = c.Add("a", []float32{3, 4}, 1)
	if c.Count() != 1 || c.Aggregate().ClippedClients != 1 {
		t.Fatalf("%+v", c.Aggregate())
	}
	c.Reset()
	if agg := c.Aggregate(); c.Count() != 0 || agg.ClippedClients != 0 || agg.TotalWeight != 0 || agg.Sum[0] != 0 {
		t.Fatalf("after reset %+v", agg)
	}
	if err := c.Add("a", []float32{3, 4}, 1); err != nil {
		t.Fatalf("client not forgotten by Reset: %v", err)
	}
}
