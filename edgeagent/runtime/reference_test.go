package runtime

import (
	"context"
	"math"
	"testing"

	"github.com/fedge-dev/fedge/edgeagent/native"
)

// Tolerances for WASM-vs-native agreement. Both sides compute in float32
// but sum in different orders and use different exp/log implementations,
// so after N steps parameters differ by accumulated rounding only.
const (
	agreeParamTol = 2e-4 // max |w_wasm - w_native| / (1 + max|w|)
	agreeLossTol  = 1e-4 // relative difference of each batch loss
)

// TestWASMAgreesWithNative trains the WASM model and its gonum reference
// from the same initial weights on the same batches (with and without the
// FedProx term) and compares losses after every step and parameters at the
// end.
func TestWASMAgreesWithNative(t *testing.T) {
	ctx := context.Background()
	ds := synthetic(t, 400, 784, 10, 3)
	cases := []struct {
		model string
		sizes []int
		wasi  bool
	}{
		{"logreg", []int{784, 10}, false},
		{"mlp", []int{784, 200, 200, 10}, false},
		{"gologreg", []int{784, 10}, true},
	}
	for _, tc := range cases {
		t.Run(tc.model, func(t *testing.T) {
			h := newHost(t, Config{GrantWASI: tc.wasi})
			in := instance(t, h, tc.model, Options{MaxBatch: 16})
			if err := in.Init(ctx, 42); err != nil {
				t.Fatal(err)
			}
			w0, err := in.Params(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ref := native.NewMLP(tc.sizes...)
			if err := ref.SetParams(w0); err != nil {
				t.Fatal(err)
			}
			if err := in.SetGlobal(ctx, w0); err != nil {
				t.Fatal(err)
			}
			const steps = 30
			for s := 0; s < steps; s++ {
				n := 10 + s%7 // varying batch sizes exercise every kernel edge
				idx := make([]int, n)
				x := make([]float32, 0, n*784)
				y := make([]int, n)
				for k := range idx {
					idx[k] = (s*13 + k*7) % ds.Len()
					f, l := ds.Sample(idx[k])
					x = append(x, f...)
					y[k] = l
				}
				mu := float32(0)
				if s%2 == 1 {
					mu = 0.1
				}
				got, err := in.TrainBatch(ctx, ds, idx, 0.05, mu)
				if err != nil {
					t.Fatal(err)
				}
				want, wantCorrect := ref.TrainStep(x, y, n, 0.05, mu, w0)
				if d := math.Abs(got.LossSum-want) / math.Max(1, math.Abs(want)); d > agreeLossTol {
					t.Fatalf("step %d: loss %v, native %v (rel diff %.2g)", s, got.LossSum, want, d)
				}
				if got.Correct != wantCorrect {
					t.Logf("step %d: correct %d, native %d (a near tie may flip)", s, got.Correct, wantCorrect)
				}
			}
			w, err := in.Params(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var maxDiff, maxAbs float64
			for i, v := range ref.Params() {
				maxDiff = math.Max(maxDiff, math.Abs(float64(w[i]-v)))
				maxAbs = math.Max(maxAbs, math.Abs(float64(v)))
			}
			t.Logf("%s: after %d steps max |w_wasm - w_native| = %.3g (max |w| %.3g)", tc.model, steps, maxDiff, maxAbs)
			if maxDiff/(1+maxAbs) > agreeParamTol {
				t.Fatalf("parameters diverge: max diff %.3g", maxDiff)
			}
		})
	}
}
