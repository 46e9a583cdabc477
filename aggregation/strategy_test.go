package aggregation

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/fedge-dev/fedge/aggregation/codec"
)

func clients(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("dev-%03d", i))
	}
	return out
}

func TestSamplingIsDeterministicAndSized(t *testing.T) {
	cases := []struct {
		s         Sampling
		available int
		want      int
	}{
		{Sampling{}, 10, 10},
		{Sampling{Fraction: 0.1, Seed: 1}, 100, 10},
		{Sampling{Fraction: 0.01, MinClients: 5, Seed: 1}, 100, 5},
		{Sampling{Fraction: 0.25, Seed: 2}, 7, 2},
		{Sampling{Fraction: 0.07, Seed: 3}, 100, 7},
		{Sampling{Fraction: 1, Seed: 3}, 100, 100},
	}
	for _, tc := range cases {
		avail := clients(tc.available)
		a, err := tc.s.Select(3, avail)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := tc.s.Select(3, slices.Clone(avail))
		if len(a) != tc.want || !slices.Equal(a, b) || !slices.IsSorted(a) {
			t.Fatalf("%+v: got %v / %v, want %d sorted, equal", tc.s, a, b, tc.want)
		}
		if c, _ := tc.s.Select(4, avail); tc.want < tc.available && slices.Equal(a, c) {
			t.Logf("%+v: rounds 3 and 4 picked the same clients (possible, unlikely)", tc.s)
		}
	}
	if _, err := (Sampling{MinClients: 5}).Select(1, clients(4)); !errors.Is(err, ErrTooFewClients) {
		t.Fatalf("too few: %v", err)
	}
	if _, err := (Sampling{}).Select(1, []string{"a", "b", "a"}); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate available: %v", err)
	}
	// Over many rounds every client is picked about equally often.
	counts := map[string]int{}
	s := Sampling{Fraction: 0.2, Seed: 9}
	for round := range uint64(500) {
		picked, _ := s.Select(round, clients(20))
		for _, c := range picked {
			counts[c]++
		}
	}
	for c, n := range counts {
		if n < 60 || n > 140 { // expectation 100, sd ~9
			t.Fatalf("client %s picked %d times in 500 rounds", c, n)
		}
	}
}

func TestConfigureTrainCarriesTypedConfig(t *testing.T) {
	common := Common{
		Train:         TrainConfig{LocalEpochs: 2, BatchSize: 32, LearningRate: 0.05},
		TrainSampling: Sampling{Fraction: 0.5, Seed: 1},
		NormBound:     3,
	}
	prox, err := NewFedProx(FedAvgConfig{Common: common}, 0.01)
	if err != nil {
		t.Fatal(err)
	}
	ins, err := prox.ConfigureTrain(7, clients(10))
	if err != nil {
		t.Fatal(err)
	}
	if len(ins) != 5 {
		t.Fatalf("%d instructions", len(ins))
	}
	for _, in := range ins {
		c := in.Config
		if c.Round != 7 || c.ProximalMu != 0.01 || c.LocalEpochs != 2 || c.BatchSize != 32 || c.Codec.ID != codec.Float32 || c.ClipNorm != 3 {
			t.Fatalf("config %+v", c)
		}
	}
	ev, err := prox.ConfigureEvaluate(7, clients(3))
	if err != nil || len(ev) != 3 || ev[0].Config.Round != 7 {
		t.Fatalf("evaluate: %v %v", ev, err)
	}
}

func TestAggregateEvaluate(t *testing.T) {
	s, _ := NewFedAvg(FedAvgConfig{})
	got, err := s.AggregateEvaluate(2, []EvalResult{
		{Client: "a", Examples: 100, Loss: 1, Accuracy: 0.5},
		{Client: "b", Examples: 300, Loss: 2, Accuracy: 0.9},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Examples != 400 || math.Abs(got.Loss-1.75) > 1e-12 || math.Abs(got.Accuracy-0.8) > 1e-12 {
		t.Fatalf("summary %+v", got)
	}
	bad := []struct {
		r    EvalResult
		want error
	}{
		{EvalResult{Client: "neg", Examples: -3, Loss: 1, Accuracy: 0.5}, ErrSampleCount},
		{EvalResult{Client: "nanloss", Examples: 3, Loss: math.NaN(), Accuracy: 0.5}, ErrBadMetric},
		{EvalResult{Client: "acc", Examples: 3, Loss: 1, Accuracy: 1.5}, ErrBadMetric},
		{EvalResult{Client: "a", Examples: 3, Loss: 1, Accuracy: 0.5}, ErrDuplicate},
	}
	for _, tc := range bad {
		_, err := s.AggregateEvaluate(2, []EvalResult{{Client: "a", Examples: 1, Loss: 1, Accuracy: 1}, tc.r})
		var ce *ClientError
		if !errors.As(err, &ce) || ce.Client != tc.r.Client || !errors.Is(err, tc.want) {
			t.Fatalf("%+v: err %v", tc.r, err)
		}
	}
	if _, err := s.AggregateEvaluate(2, nil); !errors.Is(err, ErrTooFewClients) {
		t.Fatalf("empty: %v", err)
	}
}

// Robust strategies configure rounds like the others and accumulate
// evaluation the same way.
func TestRobustConfigureAndEvaluate(t *testing.T) {
	r, err := NewRobust(RobustConfig{Common: Common{TrainSampling: Sampling{Fraction: 0.5, Seed: 1}, Train: TrainConfig{ProximalMu: 0.1}}, Aggregator: Median{}})
	if err != nil {
		t.Fatal(err)
	}
	ins, err := r.ConfigureTrain(2, clients(8))
	if err != nil || len(ins) != 4 || ins[0].Config.ProximalMu != 0.1 || ins[0].Config.Round != 2 {
		t.Fatalf("%+v %v", ins, err)
	}
	ev, err := r.ConfigureEvaluate(2, clients(3))
	if err != nil || len(ev) != 3 {
		t.Fatalf("%+v %v", ev, err)
	}
	sum, err := r.AggregateEvaluate(2, []EvalResult{{Client: "a", Examples: 1, Loss: 0.5, Accuracy: 0.25}})
	if err != nil || sum.Loss != 0.5 || sum.Accuracy != 0.25 {
		t.Fatalf("%+v %v", sum, err)
	}
}
