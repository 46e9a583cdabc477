package aggregation

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fedge-dev/fedge/aggregation/codec"
)

// Golden vectors for Reddi et al. 2021, "Adaptive Federated Optimization",
// Algorithm 2, with η=0.1, β1=0.9, β2=0.99, τ=0.01, x_0 = (1, -2) and mean
// deltas Δ_1 = (0.5, 0.1), Δ_2 = (-0.2, 0.3). Worked by hand for the first
// coordinate of FedAdam, round 1:
//
//	m = 0.1·0.5 = 0.05; v = 0.99·τ² + 0.01·0.25 = 0.002599
//	x = 1 + 0.1·0.05/(√0.002599 + 0.01) = 1.0819936
//
// and evaluated in float64 (rounded to float32 each round) for the rest.
// FedAvgM (Hsu et al. 2019) uses η=1, β=0.9: m=Δ_1, x=1.5; m=0.9·0.5-0.2.
func TestServerOptimizerGoldenVectors(t *testing.T) {
	deltas := [][]float64{{0.5, 0.1}, {-0.2, 0.3}}
	ac := AdaptiveConfig{ServerLR: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 0.01}
	adam, _ := NewFedAdam(ac)
	yogi, _ := NewFedYogi(ac)
	adagrad, _ := NewFedAdagrad(ac)
	avgm, _ := NewFedAvgM(FedAvgMConfig{ServerLR: 1, Momentum: 0.9})
	avg, _ := NewFedAvg(FedAvgConfig{ServerLR: 0.5})
	cases := []struct {
		s    *SumStrategy
		want [][]float32
	}{
		{adam, [][]float32{{1.081993579864502, -1.9585177898406982}, {1.1207380294799805, -1.868074893951416}}},
		{yogi, [][]float32{{1.0819803476333618, -1.9585785865783691}, {1.120577096939087, -1.8682302236557007}}},
		{adagrad, [][]float32{{1.009801983833313, -1.990950107574463}, {1.0143589973449707, -1.9790010452270508}}},
		{avgm, [][]float32{{1.5, -1.9}, {1.75, -1.51}}},
		{avg, [][]float32{{1.25, -1.95}, {1.15, -1.8}}},
	}
	for _, tc := range cases {
		t.Run(tc.s.Name(), func(t *testing.T) {
			x := []float32{1, -2}
			for r, d := range deltas {
				// Feed the mean delta as a one-client aggregate of weight 1.
				if _, err := tc.s.ApplyAggregate(uint64(r+1), x, Aggregate{Sum: d, TotalWeight: 1, Clients: 1}); err != nil {
					t.Fatal(err)
				}
				for i := range x {
					if math.Abs(float64(x[i]-tc.want[r][i])) > 1e-6 {
						t.Fatalf("round %d: x = %v, want %v", r+1, x, tc.want[r])
					}
				}
			}
		})
	}
}

// refAdaptive is a direct float64 transcription of Algorithm 2.
func refAdaptive(kind string, x []float64, deltas [][]float64, eta, b1, b2, tau float64) []float64 {
	m := make([]float64, len(x))
	v := make([]float64, len(x))
	for i := range v {
		v[i] = tau * tau
	}
	for _, d := range deltas {
		for i := range x {
			m[i] = b1*m[i] + (1-b1)*d[i]
			d2 := d[i] * d[i]
			switch kind {
			case "fedadam":
				v[i] = b2*v[i] + (1-b2)*d2
			case "fedyogi":
				sign := 0.0
				if v[i] > d2 {
					sign = 1
				} else if v[i] < d2 {
					sign = -1
				}
				v[i] -= (1 - b2) * d2 * sign
			case "fedadagrad":
				v[i] = v[i] + d2
			}
			x[i] = float64(float32(x[i] + eta*m[i]/(math.Sqrt(v[i])+tau)))
		}
	}
	return x
}

func TestServerOptimizersMatchReferenceOnRandomRounds(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	ac := AdaptiveConfig{ServerLR: 0.03, Beta1: 0.8, Beta2: 0.95, Tau: 1e-3}
	ctors := map[string]func(AdaptiveConfig) (*SumStrategy, error){"fedadam": NewFedAdam, "fedyogi": NewFedYogi, "fedadagrad": NewFedAdagrad}
	for name, ctor := range ctors {
		s, err := ctor(ac)
		if err != nil {
			t.Fatal(err)
		}
		const dim = 64
		x := make([]float32, dim)
		ref := make([]float64, dim)
		var ds [][]float64
		for round := range 8 {
			// Three clients with random weights; the reference sees their mean.
			var results []TrainResult
			for c := range 3 {
				results = append(results, TrainResult{Client: fmt.Sprint("c", c), Delta: randDelta(r, dim, 0.1), Samples: 1 + r.Int64N(100)})
			}
			w := []float64{float64(results[0].Samples), float64(results[1].Samples), float64(results[2].Samples)}
			ds = append(ds, naiveMean([][]float32{results[0].Delta, results[1].Delta, results[2].Delta}, w))
			if _, err := s.AggregateTrain(uint64(round), x, results); err != nil {
				t.Fatal(err)
			}
		}
		want := refAdaptive(name, ref, ds, ac.ServerLR, ac.Beta1, ac.Beta2, ac.Tau)
		for i := range x {
			if math.Abs(float64(x[i])-want[i]) > 1e-5 {
				t.Fatalf("%s coord %d: %v want %v", name, i, x[i], want[i])
			}
		}
		st := s.Optimizer().State()
		if st.Steps != 8 || len(st.M) != dim || len(st.V) != dim {
			t.Fatalf("%s state %+v", name, st)
		}
	}
}

// The streaming path, AggregateTrain and ApplyAggregate from a sum computed
// elsewhere (secure aggregation) give the same model.
func TestApplyAggregateFromExternalSum(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const dim = 33
	var results []TrainResult
	sum := make([]float64, dim)
	var tot float64
	for c := range 5 {
		res := TrainResult{Client: fmt.Sprint("c", c), Delta: randDelta(r, dim, 1), Samples: int64(10 * (c + 1))}
		results = append(results, res)
		for i, v := range res.Delta {
			sum[i] += float64(res.Samples) * float64(v)
		}
		tot += float64(res.Samples)
	}
	a, _ := NewFedAvg(FedAvgConfig{})
	b, _ := NewFedAvg(FedAvgConfig{})
	x1 := make([]float32, dim)
	x2 := make([]float32, dim)
	if _, err := a.AggregateTrain(1, x1, results); err != nil {
		t.Fatal(err)
	}
	sumAgg, err := b.ApplyAggregate(1, x2, Aggregate{Sum: sum, TotalWeight: tot, Clients: 5})
	if err != nil {
		t.Fatal(err)
	}
	if sumAgg.Clients != 5 || sumAgg.TotalWeight != tot {
		t.Fatalf("summary %+v", sumAgg)
	}
	for i := range x1 {
		if math.Abs(float64(x1[i]-x2[i])) > 1e-6 {
			t.Fatalf("coord %d: %v vs %v", i, x1[i], x2[i])
		}
	}
	bad := []struct {
		agg  Aggregate
		want error
	}{
		{Aggregate{Sum: sum[:dim-1], TotalWeight: 1, Clients: 1}, ErrDimension},
		{Aggregate{Sum: sum, TotalWeight: 0, Clients: 1}, ErrSampleCount},
		{Aggregate{Sum: sum, TotalWeight: 1, Clients: 0}, ErrTooFewClients},
		{Aggregate{Sum: append(append([]float64(nil), sum[:dim-1]...), math.NaN()), TotalWeight: 1, Clients: 1}, ErrNonFinite},
		{Aggregate{Sum: append(append([]float64(nil), sum[:dim-1]...), 1e300), TotalWeight: 1, Clients: 1}, ErrNonFinite},
	}
	for _, tc := range bad {
		before := append([]float32(nil), x2...)
		if _, err := b.ApplyAggregate(2, x2, tc.agg); !errors.Is(err, tc.want) {
			t.Fatalf("err %v, want %v", err, tc.want)
		}
		for i := range x2 {
			if x2[i] != before[i] {
				t.Fatal("global changed on error")
			}
		}
	}
}

// Saving and restoring the optimizer's memory (a coordinator restart)
// continues the exact same trajectory, for every server optimizer.
func TestOptimizerStateRoundTrip(t *testing.T) {
	ac := AdaptiveConfig{ServerLR: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 0.01}
	ctors := []func() (*SumStrategy, error){
		func() (*SumStrategy, error) { return NewFedAvg(FedAvgConfig{ServerLR: 0.7}) },
		func() (*SumStrategy, error) { return NewFedAvgM(FedAvgMConfig{ServerLR: 1, Momentum: 0.9}) },
		func() (*SumStrategy, error) { return NewFedAdam(ac) },
		func() (*SumStrategy, error) { return NewFedYogi(ac) },
		func() (*SumStrategy, error) { return NewFedAdagrad(ac) },
	}
	for _, ctor := range ctors {
		a, _ := ctor()
		b, _ := ctor()
		x := []float32{1, 2, 3}
		agg := Aggregate{Sum: []float64{0.1, -0.2, 0.3}, TotalWeight: 1, Clients: 1}
		_, _ = a.ApplyAggregate(1, x, agg)
		_, _ = a.ApplyAggregate(2, x, agg)
		if err := b.Optimizer().SetState(a.Optimizer().State()); err != nil {
			t.Fatalf("%s: %v", a.Name(), err)
		}
		if a.Optimizer().Name() != a.Name() || a.Optimizer().State().Steps != 2 {
			t.Fatalf("%s: optimizer %s state %+v", a.Name(), a.Optimizer().Name(), a.Optimizer().State())
		}
		y := append([]float32(nil), x...)
		_, _ = a.ApplyAggregate(3, x, agg)
		_, _ = b.ApplyAggregate(3, y, agg)
		for i := range x {
			if x[i] != y[i] {
				t.Fatalf("%s: restored optimizer diverged: %v vs %v", a.Name(), x, y)
			}
		}
		// The model cannot change shape under an optimizer with memory.
		if _, err := a.ApplyAggregate(4, []float32{1, 2}, Aggregate{Sum: []float64{0, 0}, TotalWeight: 1, Clients: 1}); a.Name() != "fedavg" && !errors.Is(err, ErrDimension) {
			t.Fatalf("%s: shape change: %v", a.Name(), err)
		}
		if err := a.Optimizer().SetState(OptimizerState{M: []float64{1}, V: []float64{math.NaN()}}); !errors.Is(err, ErrConfig) {
			t.Fatalf("%s: NaN state accepted: %v", a.Name(), err)
		}
	}
	b, _ := NewFedAdam(ac)
	if err := b.Optimizer().SetState(OptimizerState{M: []float64{1}, V: []float64{-1}}); !errors.Is(err, ErrConfig) {
		t.Fatalf("negative v accepted: %v", err)
	}
	if err := b.Optimizer().Step([]float32{1}, []float64{1, 2}); !errors.Is(err, ErrDimension) {
		t.Fatalf("step with mismatched delta: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	bad := []func() error{
		func() error { _, err := NewFedAdam(AdaptiveConfig{ServerLR: 0, Tau: 1}); return err },
		func() error { _, err := NewFedYogi(AdaptiveConfig{ServerLR: 1, Tau: 0}); return err },
		func() error { _, err := NewFedAdagrad(AdaptiveConfig{ServerLR: 1, Tau: 1, Beta1: 1}); return err },
		func() error { _, err := NewFedAvgM(FedAvgMConfig{ServerLR: 1, Momentum: -0.1}); return err },
		func() error { _, err := NewFedProx(FedAvgConfig{}, 0); return err },
		func() error { _, err := NewFedAvg(FedAvgConfig{ServerLR: -1}); return err },
		func() error { _, err := NewFedAvg(FedAvgConfig{Common: Common{SampleCap: -1}}); return err },
		func() error {
			_, err := NewFedAvg(FedAvgConfig{Common: Common{TrainSampling: Sampling{Fraction: 2}}})
			return err
		},
		func() error { _, err := NewRobust(RobustConfig{}); return err },
		func() error {
			_, err := NewFedAvg(FedAvgConfig{Common: Common{Train: TrainConfig{Codec: codec.Spec{ID: codec.TopK}}}})
			return err
		},
	}
	for i, f := range bad {
		if err := f(); !errors.Is(err, ErrConfig) {
			t.Fatalf("case %d: err %v, want ErrConfig", i, err)
		}
	}
}
