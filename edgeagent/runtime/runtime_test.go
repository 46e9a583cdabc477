package runtime

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/edgeagent/data"
	"github.com/fedge-dev/fedge/wasm-models"
)

// TestEmbeddedModelsMetadata checks every embedded model's self-description,
// including the parameter counts the issue fixes.
func TestEmbeddedModelsMetadata(t *testing.T) {
	h := newHost(t, Config{GrantWASI: true})
	cases := []struct {
		file, name string
		params     int
		tensors    []string
	}{
		{"logreg", "logreg", 7850, []string{"w", "b"}},
		{"gologreg", "logreg-go", 7850, []string{"w", "b"}},
		{"mlp", "mlp", 199210, []string{"fc1.w", "fc1.b", "fc2.w", "fc2.b", "fc3.w", "fc3.b"}},
		{"cnn", "cnn", 1663370, []string{"conv1.w", "conv1.b", "conv2.w", "conv2.b", "fc1.w", "fc1.b", "fc2.w", "fc2.b"}},
	}
	if got := wasmmodels.Names(); !slices.Equal(got, []string{"cnn", "gologreg", "logreg", "mlp"}) {
		t.Fatalf("embedded models %v", got)
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			in := instance(t, h, tc.file, Options{MaxBatch: 8})
			m := in.Metadata()
			var names []string
			for _, tn := range m.Tensors {
				names = append(names, tn.Name)
			}
			if m.Name != tc.name || m.Params != tc.params || m.Classes != 10 || !slices.Equal(m.Input, []int{28, 28, 1}) ||
				m.MaxBatch != 8 || !slices.Equal(names, tc.tensors) {
				t.Fatalf("metadata %+v", m)
			}
		})
	}
}

// TestLogregDimensions configures logreg's free dimensions and checks that
// fixed-shape models refuse other ones.
func TestLogregDimensions(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, Config{})
	in := instance(t, h, "logreg", Options{MaxBatch: 4, InputLen: 20, Classes: 3})
	if m := in.Metadata(); m.Params != 63 || m.InputLen() != 20 || m.Classes != 3 {
		t.Fatalf("metadata %+v", m)
	}
	ds := synthetic(t, 300, 20, 3, 9)
	if err := in.Init(ctx, 1); err != nil {
		t.Fatal(err)
	}
	before, err := in.Evaluate(ctx, ds)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.TrainEpochs(ctx, ds, TrainConfig{Epochs: 5, BatchSize: 4, LR: 0.5, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	after, err := in.Evaluate(ctx, ds)
	if err != nil {
		t.Fatal(err)
	}
	if after.Loss >= before.Loss || after.Accuracy < 0.8 {
		t.Fatalf("logreg 20x3 did not learn: before %+v after %+v", before, after)
	}
	wrong := synthetic(t, 10, 784, 10, 1)
	if _, err := in.Evaluate(ctx, wrong); !errors.Is(err, ErrShape) {
		t.Fatalf("784-feature data on a 20-feature model: got %v", err)
	}
	m, err := h.Compile(ctx, wasmmodels.MustGet("mlp").Wasm)
	if err != nil {
		t.Fatal(err)
	}
	for _, opts := range []Options{{MaxBatch: 4, InputLen: 20}, {MaxBatch: 4, Classes: 3}, {MaxBatch: 1 << 20}, {MaxBatch: -1}} {
		if _, err := m.Instantiate(ctx, opts); !errors.Is(err, ErrModel) && !errors.Is(err, ErrShape) {
			t.Fatalf("mlp with %+v: got %v", opts, err)
		}
	}
}

// TestMemoryCapReportedByCModels sets up the CNN with a batch that cannot fit
// under a small cap: the model's own memory.grow fails and it says so.
func TestMemoryCapReportedByCModels(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, Config{MaxMemoryPages: 1024})
	m, err := h.Compile(ctx, wasmmodels.MustGet("cnn").Wasm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Instantiate(ctx, Options{MaxBatch: 1000}); !errors.Is(err, ErrMemoryLimit) {
		t.Fatalf("got %v, want ErrMemoryLimit", err)
	}
	if _, err := m.Instantiate(ctx, Options{MaxBatch: 4}); err != nil {
		t.Fatalf("a small batch fits: %v", err)
	}
}

// TestDeterministicTraining: the same seed gives bit-identical weights and
// statistics on separate instances; another seed gives different ones.
func TestDeterministicTraining(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, Config{})
	ds := synthetic(t, 200, 784, 10, 5)
	run := func(seed uint64) ([]float32, TrainStats) {
		in := instance(t, h, "mlp", Options{MaxBatch: 10})
		if err := in.Init(ctx, seed); err != nil {
			t.Fatal(err)
		}
		st, err := in.TrainEpochs(ctx, ds, TrainConfig{Epochs: 2, BatchSize: 10, LR: 0.05, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		w, err := in.Params(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return w, st
	}
	w1, s1 := run(7)
	w2, s2 := run(7)
	w3, _ := run(8)
	if !slices.Equal(w1, w2) || !slices.Equal(s1.Epochs, s2.Epochs) {
		t.Fatal("same seed, different result")
	}
	if slices.Equal(w1, w3) {
		t.Fatal("different seeds, same weights")
	}
	if s1.Steps != 40 || s1.Samples != 400 || len(s1.Epochs) != 2 {
		t.Fatalf("stats %+v", s1)
	}
}

// TestGoModelAgreesWithC trains the Go-built logreg and the C logreg from
// the same weights over the same epoch and compares the results
// (acceptance point 4).
func TestGoModelAgreesWithC(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, Config{GrantWASI: true})
	ds := synthetic(t, 500, 784, 10, 11)
	c := instance(t, h, "logreg", Options{MaxBatch: 10})
	g := instance(t, h, "gologreg", Options{MaxBatch: 10})
	if err := c.Init(ctx, 3); err != nil {
		t.Fatal(err)
	}
	w0, _ := c.Params(ctx)
	if err := g.SetParams(ctx, w0); err != nil {
		t.Fatal(err)
	}
	cfg := TrainConfig{Epochs: 2, BatchSize: 10, LR: 0.01, Mu: 0.01, Global: w0, Seed: 4}
	sc, err := c.TrainEpochs(ctx, ds, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sg, err := g.TrainEpochs(ctx, ds, cfg)
	if err != nil {
		t.Fatal(err)
	}
	wc, _ := c.Params(ctx)
	wg, _ := g.Params(ctx)
	var maxDiff float64
	for i := range wc {
		maxDiff = math.Max(maxDiff, math.Abs(float64(wc[i]-wg[i])))
	}
	ec, _ := c.Evaluate(ctx, ds)
	eg, _ := g.Evaluate(ctx, ds)
	t.Logf("C vs Go logreg after 2 epochs: max |dw| %.3g, loss %.6f vs %.6f, accuracy %.4f vs %.4f",
		maxDiff, ec.Loss, eg.Loss, ec.Accuracy, eg.Accuracy)
	if maxDiff > agreeParamTol || math.Abs(ec.Loss-eg.Loss) > 1e-4 || math.Abs(sc.Epochs[1].Loss-sg.Epochs[1].Loss) > 1e-4 {
		t.Fatalf("Go and C logreg disagree: max |dw| %.3g, loss %v vs %v", maxDiff, ec.Loss, eg.Loss)
	}
	pc, err := c.Predict(ctx, ds.X[:3*784])
	if err != nil {
		t.Fatal(err)
	}
	pg, err := g.Predict(ctx, ds.X[:3*784])
	if err != nil {
		t.Fatal(err)
	}
	for i := range pc {
		if math.Abs(float64(pc[i]-pg[i])) > 1e-5 {
			t.Fatalf("prediction %d: C %v, Go %v", i, pc[i], pg[i])
		}
	}
}

// TestGradientFiniteDifference checks each model's training step against a
// finite difference of its own loss: one SGD step with rate lr moves the
// weights by -lr*g, and the loss along g must change at rate |g|.
func TestGradientFiniteDifference(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, Config{GrantWASI: true})
	ds := synthetic(t, 4, 784, 10, 13)
	idx := []int{0, 1, 2, 3}
	for _, model := range []string{"logreg", "mlp", "cnn", "gologreg"} {
		t.Run(model, func(t *testing.T) {
			in := instance(t, h, model, Options{MaxBatch: 4})
			if err := in.Init(ctx, 5); err != nil {
				t.Fatal(err)
			}
			w0, _ := in.Params(ctx)
			const lr = 0.01
			if _, err := in.TrainBatch(ctx, ds, idx, lr, 0); err != nil {
				t.Fatal(err)
			}
			w1, _ := in.Params(ctx)
			g := make([]float64, len(w0))
			var norm float64
			for i := range g {
				g[i] = float64(w0[i]-w1[i]) / lr
				norm += g[i] * g[i]
			}
			norm = math.Sqrt(norm)
			loss := func(eps float64) float64 {
				w := make([]float32, len(w0))
				for i := range w {
					w[i] = w0[i] + float32(eps*g[i]/norm)
				}
				if err := in.SetParams(ctx, w); err != nil {
					t.Fatal(err)
				}
				ev, err := in.Evaluate(ctx, ds)
				if err != nil {
					t.Fatal(err)
				}
				return ev.Loss
			}
			const eps = 1e-3
			fd := (loss(eps) - loss(-eps)) / (2 * eps)
			t.Logf("%s: |g| = %.6f, finite difference along g = %.6f", model, norm, fd)
			if math.Abs(fd-norm) > 0.03*norm {
				t.Fatalf("gradient norm %.6f, finite difference %.6f", norm, fd)
			}
		})
	}
}

// TestCompileCache: the same bytes compile once; Evict drops them.
func TestCompileCache(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, Config{})
	wasm := wasmmodels.MustGet("logreg").Wasm
	a, err := h.Compile(ctx, wasm)
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.Compile(ctx, slices.Clone(wasm))
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatal("same module compiled twice")
	}
	if err := h.Evict(ctx, a.Hash); err != nil {
		t.Fatal(err)
	}
	c, err := h.Compile(ctx, wasm)
	if err != nil {
		t.Fatal(err)
	}
	if c == a || c.Hash != a.Hash {
		t.Fatal("evicted module still cached")
	}
}

// TestPool lends two instances to eight concurrent simulated devices, each
// training its own weights; each device's result must equal training alone.
func TestPool(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, Config{})
	m, err := h.Compile(ctx, wasmmodels.MustGet("logreg").Wasm)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := m.NewPool(Options{MaxBatch: 10}, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close(ctx)
	full := synthetic(t, 400, 784, 10, 17)
	train := func(dev int) ([]float32, error) {
		in, err := pool.Get(ctx)
		if err != nil {
			return nil, err
		}
		defer pool.Put(ctx, in)
		if err := in.Init(ctx, uint64(dev)); err != nil {
			return nil, err
		}
		idx := make([]int, 50)
		for i := range idx {
			idx[i] = dev*50 + i
		}
		part, err := data.Subset(full, idx)
		if err != nil {
			return nil, err
		}
		if _, err := in.TrainEpochs(ctx, part, TrainConfig{Epochs: 1, BatchSize: 10, LR: 0.1, Seed: uint64(dev)}); err != nil {
			return nil, err
		}
		return in.Params(ctx)
	}
	results := make([][]float32, 8)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for dev := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[dev], errs[dev] = train(dev)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if n := pool.Idle(); n < 1 || n > 2 {
		t.Fatalf("%d idle instances, want 1 or 2", n)
	}
	for _, dev := range []int{0, 5} {
		alone, err := train(dev)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(alone, results[dev]) {
			t.Fatalf("device %d: pooled result differs from training alone", dev)
		}
	}
	ctxDone, cancel := context.WithCancel(ctx)
	a, _ := pool.Get(ctx)
	b, _ := pool.Get(ctx)
	cancel()
	if _, err := pool.Get(ctxDone); !errors.Is(err, context.Canceled) {
		t.Fatalf("third Get on a pool of 2: got %v", err)
	}
	pool.Put(ctx, a)
	pool.Put(ctx, b)
}

// TestCompilerMatchesInterpreter runs the same training steps under
// wazero's compiler and its interpreter: the weights must be bit-identical.
func TestCompilerMatchesInterpreter(t *testing.T) {
	ctx := context.Background()
	ds := synthetic(t, 8, 784, 10, 21)
	var results [][]float32
	for _, interp := range []bool{false, true} {
		// The interpreter under the race detector on a loaded machine can
		// take tens of seconds per mlp step: this test is about results,
		// so the call deadline is generous.
		h := newHost(t, Config{Interpreter: interp, CallTimeout: 10 * time.Minute})
		in := instance(t, h, "mlp", Options{MaxBatch: 8})
		if err := in.Init(ctx, 2); err != nil {
			t.Fatal(err)
		}
		for step := 0; step < 2; step++ {
			if _, err := in.TrainBatch(ctx, ds, []int{0, 1, 2, 3, 4, 5, 6}, 0.1, 0.01); err != nil {
				t.Fatal(err)
			}
		}
		w, err := in.Params(ctx)
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, w)
	}
	if !slices.Equal(results[0], results[1]) {
		t.Fatal("compiler and interpreter disagree")
	}
}
