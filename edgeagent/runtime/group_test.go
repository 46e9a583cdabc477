package runtime

import (
	"context"
	"math"
	"testing"

	"github.com/fedge-dev/fedge/wasm-models"
)

// TestGroupMatchesSingleInstance trains each C model with a two-thread
// Group (the batch split over two instances, gradients summed by the host)
// and with one instance from the same weights on the same batches, and
// checks the losses after every step and the parameters at the end agree
// up to summation order; with FedProx too. A one-thread group must match
// the single instance exactly.
func TestGroupMatchesSingleInstance(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, Config{})
	ds := synthetic(t, 96, 784, 10, 5)
	for _, tc := range []struct {
		model string
		batch int
		steps int
	}{{"logreg", 16, 6}, {"mlp", 16, 6}, {"cnn", 11, 2}} {
		t.Run(tc.model, func(t *testing.T) {
			m, err := h.Compile(ctx, wasmmodels.MustGet(tc.model).Wasm)
			if err != nil {
				t.Fatal(err)
			}
			single := instance(t, h, tc.model, Options{MaxBatch: 16})
			g1, err := m.NewGroup(ctx, Options{MaxBatch: 16}, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer g1.Close(ctx)
			g2, err := m.NewGroup(ctx, Options{MaxBatch: 16}, 2)
			if err != nil {
				t.Fatal(err)
			}
			defer g2.Close(ctx)
			if g2.Threads() != 2 {
				t.Fatalf("group of %d threads, want 2", g2.Threads())
			}
			if err := single.Init(ctx, 3); err != nil {
				t.Fatal(err)
			}
			w0, _ := single.Params(ctx)
			global := make([]float32, len(w0))
			for i := range global {
				global[i] = w0[i] * 0.5
			}
			for _, x := range []interface {
				SetParams(context.Context, []float32) error
				SetGlobal(context.Context, []float32) error
			}{single, g1, g2} {
				if err := x.SetParams(ctx, w0); err != nil {
					t.Fatal(err)
				}
				if err := x.SetGlobal(ctx, global); err != nil {
					t.Fatal(err)
				}
			}
			for s := 0; s < tc.steps; s++ {
				idx := make([]int, tc.batch)
				for i := range idx {
					idx[i] = (s*tc.batch + i) % ds.Len()
				}
				mu := float32(0)
				if s%2 == 1 {
					mu = 0.1
				}
				r0, err := single.TrainBatch(ctx, ds, idx, 0.05, mu)
				if err != nil {
					t.Fatal(err)
				}
				r1, err := g1.TrainBatch(ctx, ds, idx, 0.05, mu)
				if err != nil {
					t.Fatal(err)
				}
				r2, err := g2.TrainBatch(ctx, ds, idx, 0.05, mu)
				if err != nil {
					t.Fatal(err)
				}
				if r1 != r0 {
					t.Fatalf("step %d: one-thread group %+v, instance %+v", s, r1, r0)
				}
				if math.Abs(r2.LossSum-r0.LossSum) > 1e-5*math.Abs(r0.LossSum) || r2.Correct != r0.Correct {
					t.Fatalf("step %d: two-thread group %+v, instance %+v", s, r2, r0)
				}
			}
			p0, _ := single.Params(ctx)
			p1, _ := g1.Params(ctx)
			p2, _ := g2.Params(ctx)
			second, _ := g2.ins[1].Params(ctx)
			var maxW, d1, d2, dInst float64
			for i := range p0 {
				maxW = math.Max(maxW, math.Abs(float64(p0[i])))
				d1 = math.Max(d1, math.Abs(float64(p1[i]-p0[i])))
				d2 = math.Max(d2, math.Abs(float64(p2[i]-p0[i])))
				dInst = math.Max(dInst, math.Abs(float64(second[i]-p2[i])))
			}
			t.Logf("%s: max |w| %.3g, one thread %.3g, two threads %.3g off the instance", tc.model, maxW, d1, d2)
			if d1 != 0 || dInst != 0 {
				t.Fatalf("one-thread group off by %g, the group's two instances differ by %g", d1, dInst)
			}
			if d2 > 1e-5*(1+maxW) {
				t.Fatalf("two-thread group parameters off by %g", d2)
			}
		})
	}
}

// TestGroupVersion1Module: a module without the version 2 exports (the Go
// model) trains in a group single-threaded.
func TestGroupVersion1Module(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, Config{GrantWASI: true})
	m, err := h.Compile(ctx, wasmmodels.MustGet("gologreg").Wasm)
	if err != nil {
		t.Fatal(err)
	}
	g, err := m.NewGroup(ctx, Options{MaxBatch: 8}, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close(ctx)
	if g.Threads() != 1 {
		t.Fatalf("version 1 module in a group of %d threads", g.Threads())
	}
	if err := g.Init(ctx, 1); err != nil {
		t.Fatal(err)
	}
	ds := synthetic(t, 32, 784, 10, 2)
	st, err := g.TrainEpochs(ctx, ds, TrainConfig{Epochs: 1, BatchSize: 8, LR: 0.1, Seed: 1})
	if err != nil || st.Steps != 4 {
		t.Fatalf("train: %+v, %v", st, err)
	}
	if _, err := m.NewGroup(ctx, Options{MaxBatch: 8}, 0); err == nil {
		t.Fatal("a group of 0 threads was created")
	}
}
