package dp

import (
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/fedge-dev/fedge/aggregation"
)

func newDP(t *testing.T, cfg Config) *Strategy {
	t.Helper()
	inner, err := aggregation.NewFedAvg(aggregation.FedAvgConfig{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Wrap(inner, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var baseCfg = Config{NoiseMultiplier: 1, ClipNorm: 1, SamplingRate: 0.01, Delta: 1e-5, Key: KeyFromSeed(7)}

// With zero deltas the new model is pure noise: its per-coordinate std must
// be z·C/n (DP-FedAvg, McMahan et al. 2018).
func TestNoiseScale(t *testing.T) {
	const dim = 20000
	cfg := baseCfg
	cfg.NoiseMultiplier, cfg.ClipNorm = 1.5, 2
	s := newDP(t, cfg)
	var results []aggregation.TrainResult
	for c := range 4 {
		results = append(results, aggregation.TrainResult{Client: fmt.Sprint("c", c), Delta: make([]float32, dim), Samples: 10})
	}
	g := make([]float32, dim)
	if _, err := s.AggregateTrain(1, g, results); err != nil {
		t.Fatal(err)
	}
	var ss, mean float64
	for _, x := range g {
		mean += float64(x)
		ss += float64(x) * float64(x)
	}
	mean /= dim
	std := math.Sqrt(ss/dim - mean*mean)
	want := 1.5 * 2 / 4
	if math.Abs(std-want)/want > 0.03 || math.Abs(mean) > 4*want/math.Sqrt(dim) {
		t.Fatalf("noise std %v mean %v, want std %v mean 0", std, mean, want)
	}
}

// Clipping bounds every client's influence and weights are uniform.
func TestClippingAndUniformWeights(t *testing.T) {
	cfg := baseCfg
	cfg.NoiseMultiplier = 1e-9 // effectively noiseless, to see the mean
	s := newDP(t, cfg)
	g := []float32{0, 0}
	sum, err := s.AggregateTrain(1, g, []aggregation.TrainResult{
		{Client: "big", Delta: []float32{30, 40}, Samples: 1_000_000},
		{Client: "small", Delta: []float32{0, 0.5}, Samples: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	// (0.6, 0.8) and (0, 0.5), averaged uniformly: (0.3, 0.65).
	if math.Abs(float64(g[0])-0.3) > 1e-6 || math.Abs(float64(g[1])-0.65) > 1e-6 {
		t.Fatalf("global %v", g)
	}
	if sum.ClippedClients != 1 || sum.TotalWeight != 2 || sum.Epsilon <= 0 {
		t.Fatalf("summary %+v", sum)
	}
}

func TestNoiseIsSeededAndEpsilonGrows(t *testing.T) {
	run := func(seed uint64) ([]float32, []float64) {
		cfg := baseCfg
		cfg.Key = KeyFromSeed(seed)
		s := newDP(t, cfg)
		g := make([]float32, 8)
		var eps []float64
		for round := uint64(1); round <= 3; round++ {
			sum, err := s.AggregateTrain(round, g, []aggregation.TrainResult{{Client: "a", Delta: []float32{1, 0, 0, 0, 0, 0, 0, 0}, Samples: 1}})
			if err != nil {
				t.Fatal(err)
			}
			eps = append(eps, sum.Epsilon)
		}
		return g, eps
	}
	a, epsA := run(1)
	b, _ := run(1)
	c, _ := run(2)
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("same seed, different noise")
		}
	}
	if a[3] == c[3] {
		t.Fatal("different seeds, same noise")
	}
	acct, _ := NewAccountant(nil)
	for r, e := range epsA {
		_ = acct.Compose(baseCfg.SamplingRate, baseCfg.NoiseMultiplier, 1)
		want, _, _ := acct.Epsilon(baseCfg.Delta)
		if math.Abs(e-want) > 1e-12 || (r > 0 && e <= epsA[r-1]) {
			t.Fatalf("round %d: eps %v, want %v, increasing", r+1, e, want)
		}
	}
}

func TestDPValidation(t *testing.T) {
	s := newDP(t, baseCfg)
	ins, err := s.ConfigureTrain(1, []string{"a", "b"})
	if err != nil || ins[0].Config.ClipNorm != baseCfg.ClipNorm {
		t.Fatalf("clients are not asked to clip: %+v %v", ins, err)
	}
	_, err = s.AggregateTrain(1, []float32{0, 0}, []aggregation.TrainResult{{Client: "evil", Delta: []float32{float32(math.NaN()), 0}, Samples: 1}})
	var ce *aggregation.ClientError
	if !errors.As(err, &ce) || ce.Client != "evil" || !errors.Is(err, aggregation.ErrNonFinite) {
		t.Fatalf("NaN update: %v", err)
	}
	// A sample-weighted sum breaks the sensitivity bound: refused.
	if _, err := s.ApplyAggregate(1, []float32{0}, aggregation.Aggregate{Sum: []float64{1}, TotalWeight: 10, Clients: 1}); !errors.Is(err, ErrConfig) {
		t.Fatalf("weighted aggregate: %v", err)
	}
	for _, cfg := range []Config{
		{NoiseMultiplier: 0, ClipNorm: 1, SamplingRate: 0.1, Delta: 1e-5},
		{NoiseMultiplier: 1, ClipNorm: 0, SamplingRate: 0.1, Delta: 1e-5},
		{NoiseMultiplier: 1, ClipNorm: 1, SamplingRate: 0, Delta: 1e-5},
		{NoiseMultiplier: 1, ClipNorm: 1, SamplingRate: 0.1, Delta: 1},
	} {
		inner, _ := aggregation.NewFedAvg(aggregation.FedAvgConfig{})
		if _, err := Wrap(inner, cfg); !errors.Is(err, ErrConfig) {
			t.Fatalf("%+v: %v", cfg, err)
		}
	}
	if !s.SumBased() || s.Name() != "dp(fedavg)" {
		t.Fatal("identity")
	}
	if _, err := aggregation.RequireStreaming(s); err != nil {
		t.Fatal(err)
	}
}
