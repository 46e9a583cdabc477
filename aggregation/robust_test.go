package aggregation

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
)

// Naive float64 references, written for clarity, not speed.

func refMedian(deltas [][]float32) []float64 {
	out := make([]float64, len(deltas[0]))
	for j := range out {
		var col []float64
		for _, d := range deltas {
			col = append(col, float64(d[j]))
		}
		sort.Float64s(col)
		n := len(col)
		out[j] = (col[(n-1)/2] + col[n/2]) / 2
	}
	return out
}

func refTrimmed(deltas [][]float32, beta float64) []float64 {
	n := len(deltas)
	k := int(beta * float64(n))
	out := make([]float64, len(deltas[0]))
	for j := range out {
		var col []float64
		for _, d := range deltas {
			col = append(col, float64(d[j]))
		}
		sort.Float64s(col)
		var s float64
		for _, v := range col[k : n-k] {
			s += v
		}
		out[j] = s / float64(n-2*k)
	}
	return out
}

func refScores(deltas [][]float32, set []int, nb int) []float64 {
	var scores []float64
	for _, i := range set {
		var ds []float64
		for _, j := range set {
			if i == j {
				continue
			}
			var s float64
			for t := range deltas[i] {
				x := float64(deltas[i][t]) - float64(deltas[j][t])
				s += x * x
			}
			ds = append(ds, s)
		}
		sort.Float64s(ds)
		var s float64
		for _, v := range ds[:min(nb, len(ds))] {
			s += v
		}
		scores = append(scores, s)
	}
	return scores
}

func refMultiKrum(deltas [][]float32, f, m int) []float64 {
	n := len(deltas)
	set := make([]int, n)
	for i := range set {
		set[i] = i
	}
	scores := refScores(deltas, set, n-f-2)
	sort.SliceStable(set, func(a, b int) bool { return scores[set[a]] < scores[set[b]] })
	out := make([]float64, len(deltas[0]))
	for _, i := range set[:m] {
		for j, v := range deltas[i] {
			out[j] += float64(v) / float64(m)
		}
	}
	return out
}

func refBulyan(deltas [][]float32, f int) []float64 {
	n := len(deltas)
	theta := n - 2*f
	beta := theta - 2*f
	remaining := make([]int, n)
	for i := range remaining {
		remaining[i] = i
	}
	var sel []int
	for len(sel) < theta {
		sc := refScores(deltas, remaining, max(1, len(remaining)-f-2))
		best := 0
		for k := range sc {
			if sc[k] < sc[best] {
				best = k
			}
		}
		sel = append(sel, remaining[best])
		remaining = append(remaining[:best:best], remaining[best+1:]...)
	}
	out := make([]float64, len(deltas[0]))
	for j := range out {
		var col []float64
		for _, i := range sel {
			col = append(col, float64(deltas[i][j]))
		}
		sort.Float64s(col)
		med := (col[(theta-1)/2] + col[theta/2]) / 2
		// β closest to the median, by brute force over all windows.
		bestLo, bestSpan := 0, math.Inf(1)
		for lo := 0; lo+beta <= theta; lo++ {
			span := math.Max(math.Abs(col[lo]-med), math.Abs(col[lo+beta-1]-med))
			if span < bestSpan {
				bestLo, bestSpan = lo, span
			}
		}
		var s float64
		for _, v := range col[bestLo : bestLo+beta] {
			s += v
		}
		out[j] = s / float64(beta)
	}
	return out
}

func TestRobustAggregatorsMatchReference(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for trial := range 25 {
		f := r.IntN(3)
		n := 4*f + 3 + r.IntN(6)
		dim := 1 + r.IntN(40)
		deltas := make([][]float32, n)
		for i := range deltas {
			deltas[i] = randDelta(r, dim, 1)
		}
		m := 1 + r.IntN(n-f)
		beta := []float64{0, 0.1, 0.2, 0.45}[r.IntN(4)]
		cases := []struct {
			agg  RobustAggregator
			want []float64
		}{
			{Median{}, refMedian(deltas)},
			{TrimmedMean{Beta: beta}, refTrimmed(deltas, beta)},
			{Krum{F: f}, refMultiKrum(deltas, f, 1)},
			{MultiKrum{F: f, M: m}, refMultiKrum(deltas, f, m)},
			{Bulyan{F: f}, refBulyan(deltas, f)},
		}
		for _, tc := range cases {
			got := make([]float64, dim)
			if err := tc.agg.Aggregate(got, deltas); err != nil {
				t.Fatalf("trial %d %s: %v", trial, tc.agg.Name(), err)
			}
			for j := range got {
				if math.Abs(got[j]-tc.want[j]) > 1e-12*(1+math.Abs(tc.want[j])) {
					t.Fatalf("trial %d %s coord %d: %v want %v", trial, tc.agg.Name(), j, got[j], tc.want[j])
				}
			}
		}
	}
}

func TestRobustMinimumCohort(t *testing.T) {
	cases := []struct {
		agg  RobustAggregator
		min  int
		rule string
	}{
		{Median{}, 1, "n >= 1"},
		{TrimmedMean{Beta: 0.2}, 1, "2·floor(beta·n)+1"},
		{TrimmedMean{Beta: 0.4}, 1, "2·floor(beta·n)+1"},
		{Krum{F: 2}, 7, "n >= 2f+3 = 7"},
		{MultiKrum{F: 1, M: 3}, 5, "n >= 2f+3 = 5"},
		{Bulyan{F: 1}, 7, "n >= 4f+3 = 7"},
		{Bulyan{F: 2}, 11, "n >= 4f+3 = 11"},
	}
	for _, tc := range cases {
		if got := tc.agg.MinClients(); got != tc.min {
			t.Fatalf("%s: MinClients %d, want %d", tc.agg.Name(), got, tc.min)
		}
		// Exactly at the minimum it works (when the minimum is above 0)...
		mk := func(n int) [][]float32 {
			d := make([][]float32, n)
			for i := range d {
				d[i] = []float32{float32(i), 1}
			}
			return d
		}
		dst := make([]float64, 2)
		if err := tc.agg.Aggregate(dst, mk(tc.min)); err != nil {
			t.Fatalf("%s at n=%d: %v", tc.agg.Name(), tc.min, err)
		}
		// ...and one below it is refused with the requirement spelled out.
		err := tc.agg.Aggregate(dst, mk(tc.min-1))
		if !errors.Is(err, ErrTooFewClients) || !strings.Contains(err.Error(), tc.rule) {
			t.Fatalf("%s at n=%d: err %v, want ErrTooFewClients mentioning %q", tc.agg.Name(), tc.min-1, err, tc.rule)
		}
	}
	// A trimmed mean with β=0.4 at n=5 trims 2+2, leaving one: fine; at
	// n=3 trims 1+1; both are above the minimum by construction.
	if err := (TrimmedMean{Beta: 0.5}).Aggregate(make([]float64, 1), [][]float32{{1}}); !errors.Is(err, ErrConfig) {
		t.Fatalf("beta 0.5: %v", err)
	}
}

// Acceptance 2: f attackers among n. Honest deltas are drawn around a
// common direction μ with per-coordinate noise σ=0.1. The robust rules stay
// within 0.5·||μ|| of the honest mean; plain FedAvg is pulled at least
// 2·||μ|| away (sign flip at 100x scale, or 100x scaling).
func TestRobustUnderAttack(t *testing.T) {
	const (
		n   = 15
		f   = 3
		dim = 200
	)
	r := rand.New(rand.NewPCG(21, 22))
	mu := make([]float32, dim)
	for i := range mu {
		mu[i] = float32(0.05 * (1 + r.Float64()))
	}
	muNorm := L2Norm(mu)
	attacks := map[string]func(d []float32) []float32{
		"signflip-100x": func(d []float32) []float32 {
			out := make([]float32, len(d))
			for i, x := range d {
				out[i] = -100 * x
			}
			return out
		},
		"scale-100x": func(d []float32) []float32 {
			out := make([]float32, len(d))
			for i, x := range d {
				out[i] = 100 * x
			}
			return out
		},
	}
	rules := []RobustAggregator{Median{}, TrimmedMean{Beta: 0.25}, MultiKrum{F: f, M: n - f}, Bulyan{F: f}}
	for aname, attack := range attacks {
		t.Run(aname, func(t *testing.T) {
			var results []TrainResult
			var honest [][]float32
			for i := range n {
				d := make([]float32, dim)
				for j := range d {
					d[j] = mu[j] + float32(0.1*r.NormFloat64())
				}
				if i < f {
					d = attack(d)
				} else {
					honest = append(honest, d)
				}
				results = append(results, TrainResult{Client: fmt.Sprint("dev-", i), Delta: d, Samples: 100})
			}
			ones := make([]float64, len(honest))
			for i := range ones {
				ones[i] = 1
			}
			honestMean := naiveMean(honest, ones)
			dist := func(global []float32) float64 {
				var s float64
				for i, x := range global {
					e := float64(x) - honestMean[i]
					s += e * e
				}
				return math.Sqrt(s)
			}
			fedavg, _ := NewFedAvg(FedAvgConfig{})
			g := make([]float32, dim)
			if _, err := fedavg.AggregateTrain(1, g, results); err != nil {
				t.Fatal(err)
			}
			if d := dist(g); d < 2*muNorm {
				t.Fatalf("fedavg under attack is only %.3f from the honest mean (||mu|| = %.3f): the attack is too weak to show anything", d, muNorm)
			} else {
				t.Logf("fedavg: distance %.3f (%.1fx ||mu||)", d, d/muNorm)
			}
			for _, rule := range rules {
				s, err := NewRobust(RobustConfig{Aggregator: rule})
				if err != nil {
					t.Fatal(err)
				}
				g := make([]float32, dim)
				if _, err := s.AggregateTrain(1, g, results); err != nil {
					t.Fatal(err)
				}
				d := dist(g)
				t.Logf("%s: distance %.3f (%.2fx ||mu||)", rule.Name(), d, d/muNorm)
				if d > 0.5*muNorm {
					t.Errorf("%s: distance %.3f from honest mean exceeds 0.5·||mu|| = %.3f", rule.Name(), d, 0.5*muNorm)
				}
			}
		})
	}
}

func TestRobustStrategyIsNotStreaming(t *testing.T) {
	rs, _ := NewRobust(RobustConfig{Aggregator: Bulyan{F: 1}})
	if rs.SumBased() {
		t.Fatal("robust strategy claims to be sum-based")
	}
	if _, err := RequireStreaming(rs); !errors.Is(err, ErrNotSumBased) || !strings.Contains(err.Error(), "bulyan(f=1)") {
		t.Fatalf("RequireStreaming(bulyan): %v", err)
	}
	fa, _ := NewFedAvg(FedAvgConfig{})
	if _, err := RequireStreaming(fa); err != nil {
		t.Fatal(err)
	}
}

func TestRobustNormBounding(t *testing.T) {
	s, _ := NewRobust(RobustConfig{Common: Common{NormBound: 1}, Aggregator: TrimmedMean{Beta: 0}})
	g := []float32{0, 0}
	sum, err := s.AggregateTrain(1, g, []TrainResult{
		{Client: "a", Delta: []float32{3, 4}, Samples: 1},
		{Client: "b", Delta: []float32{0.3, 0.4}, Samples: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	// (0.6, 0.8) and (0.3, 0.4) average to (0.45, 0.6).
	if math.Abs(float64(g[0])-0.45) > 1e-6 || math.Abs(float64(g[1])-0.6) > 1e-6 || sum.ClippedClients != 1 {
		t.Fatalf("global %v summary %+v", g, sum)
	}
}
