package runtime

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/fedge-dev/fedge/edgeagent/data"
	"github.com/fedge-dev/fedge/wasm-models"
	"github.com/tetratelabs/wazero"
)

// testCache shares compiled code between the tests' hosts, so the 1.8 MB
// Go model is compiled once per test binary rather than once per test.
var testCache = wazero.NewCompilationCache()

// newHost returns a host closed at the end of the test.
func newHost(tb testing.TB, cfg Config) *Host {
	tb.Helper()
	if cfg.CompilationCache == nil {
		cfg.CompilationCache = testCache
	}
	h, err := NewHost(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = h.Close(context.Background()) })
	return h
}

// instance compiles the named embedded model and instantiates it.
func instance(tb testing.TB, h *Host, name string, opts Options) *Instance {
	tb.Helper()
	m, err := h.Compile(context.Background(), wasmmodels.MustGet(name).Wasm)
	if err != nil {
		tb.Fatal(err)
	}
	in, err := m.Instantiate(context.Background(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = in.Close(context.Background()) })
	return in
}

// synthetic returns n samples of dim features in [0,1) whose label is the
// argmax of a fixed random linear map, so models can learn it.
func synthetic(tb testing.TB, n, dim, classes int, seed uint64) *data.Dataset {
	tb.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	proj := make([]float32, dim*classes)
	for i := range proj {
		proj[i] = float32(r.NormFloat64())
	}
	x := make([]float32, n*dim)
	y := make([]int, n)
	for i := 0; i < n; i++ {
		row := x[i*dim : (i+1)*dim]
		best, arg := float32(-1e30), 0
		for f := range row {
			row[f] = r.Float32()
		}
		for c := 0; c < classes; c++ {
			var s float32
			for f, v := range row {
				s += v * proj[f*classes+c]
			}
			if s > best {
				best, arg = s, c
			}
		}
		y[i] = arg
	}
	ds, err := data.NewDataset(x, y, dim, classes)
	if err != nil {
		tb.Fatal(err)
	}
	return ds
}
