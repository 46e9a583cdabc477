package runtime

import (
	"context"
	"fmt"
	goruntime "runtime"
	"syscall"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/edgeagent/native"
	"github.com/fedge-dev/fedge/wasm-models"
)

// BenchmarkTrainStep measures one SGD step of the mlp and logreg models in
// WASM and in native Go on gonum (single-threaded, GOMAXPROCS=1) in the same
// run, reporting samples/s; the wasm sub-benchmarks also report their ratio
// to the native baseline measured just before (x-native). The cnn has no
// native twin and reports samples/s only.
func BenchmarkTrainStep(b *testing.B) {
	ctx := context.Background()
	h := newHost(b, Config{})
	ds := synthetic(b, 640, 784, 10, 1)
	nativeRate := map[string]float64{} // by model/batch
	for _, model := range []string{"mlp", "logreg", "cnn"} {
		for _, engine := range []string{"native", "wasm"} {
			if engine == "native" && model == "cnn" {
				continue
			}
			for _, batch := range []int{10, 64} {
				name := fmt.Sprintf("model=%s/engine=%s/batch=%d", model, engine, batch)
				b.Run(name, func(b *testing.B) {
					idx := make([]int, batch)
					for i := range idx {
						idx[i] = i
					}
					var step func()
					if engine == "wasm" {
						in := instance(b, h, model, Options{MaxBatch: 64})
						if err := in.Init(ctx, 1); err != nil {
							b.Fatal(err)
						}
						step = func() {
							if _, err := in.TrainBatch(ctx, ds, idx, 0.01, 0); err != nil {
								b.Fatal(err)
							}
						}
					} else {
						sizes := []int{784, 200, 200, 10}
						if model == "logreg" {
							sizes = []int{784, 10}
						}
						m := native.NewMLP(sizes...)
						initNative(m, 1)
						x := ds.X[:batch*784]
						y := ds.Y[:batch]
						prev := goruntime.GOMAXPROCS(1)
						defer goruntime.GOMAXPROCS(prev)
						step = func() { m.TrainStep(x, y, batch, 0.01, 0, nil) }
					}
					step()
					b.ResetTimer()
					for b.Loop() {
						step()
					}
					rate := float64(b.N*batch) / b.Elapsed().Seconds()
					b.ReportMetric(rate, "samples/s")
					key := fmt.Sprintf("%s/%d", model, batch)
					if engine == "native" {
						nativeRate[key] = rate
					} else if nr := nativeRate[key]; nr > 0 {
						b.ReportMetric(rate/nr, "x-native")
					}
				})
			}
		}
	}
}

// BenchmarkTrainStepRatio alternates one wasm and one native mlp step per
// iteration, so both see the same machine load, and reports each rate and
// their ratio (wasm/native); on a shared machine this ratio is steadier
// than comparing two sub-benchmarks of BenchmarkTrainStep run one after
// the other.
func BenchmarkTrainStepRatio(b *testing.B) {
	ctx := context.Background()
	h := newHost(b, Config{})
	ds := synthetic(b, 640, 784, 10, 1)
	for _, batch := range []int{10, 64} {
		b.Run(fmt.Sprintf("model=mlp/batch=%d", batch), func(b *testing.B) {
			idx := make([]int, batch)
			for i := range idx {
				idx[i] = i
			}
			in := instance(b, h, "mlp", Options{MaxBatch: 64})
			if err := in.Init(ctx, 1); err != nil {
				b.Fatal(err)
			}
			w, err := in.Params(ctx)
			if err != nil {
				b.Fatal(err)
			}
			m := native.NewMLP(784, 200, 200, 10)
			if err := m.SetParams(w); err != nil {
				b.Fatal(err)
			}
			x, y := ds.X[:batch*784], ds.Y[:batch]
			prev := goruntime.GOMAXPROCS(1)
			defer goruntime.GOMAXPROCS(prev)
			var tw, tn time.Duration
			for b.Loop() {
				t0 := time.Now()
				if _, err := in.TrainBatch(ctx, ds, idx, 0.01, 0); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				m.TrainStep(x, y, batch, 0.01, 0, nil)
				tw += t1.Sub(t0)
				tn += time.Since(t1)
			}
			n := float64(b.N * batch)
			b.ReportMetric(n/tw.Seconds(), "wasm-samples/s")
			b.ReportMetric(n/tn.Seconds(), "native-samples/s")
			b.ReportMetric(tn.Seconds()/tw.Seconds(), "wasm/native")
		})
	}
}

// BenchmarkTrainStepThreads alternates one step of a one-thread and of a
// two-thread Group (the batch split over two instances, gradients summed
// by the host) per iteration, so both see the same machine load, and
// reports each rate and the speedup (2-thread/1-thread samples/s).
func BenchmarkTrainStepThreads(b *testing.B) {
	ctx := context.Background()
	h := newHost(b, Config{})
	ds := synthetic(b, 640, 784, 10, 1)
	for _, model := range []string{"mlp", "cnn"} {
		for _, batch := range []int{32, 64} {
			b.Run(fmt.Sprintf("model=%s/batch=%d", model, batch), func(b *testing.B) {
				m, err := h.Compile(ctx, wasmmodels.MustGet(model).Wasm)
				if err != nil {
					b.Fatal(err)
				}
				var groups [2]*Group
				for i := range groups {
					if groups[i], err = m.NewGroup(ctx, Options{MaxBatch: 64}, i+1); err != nil {
						b.Fatal(err)
					}
					defer groups[i].Close(ctx)
					if err := groups[i].Init(ctx, 1); err != nil {
						b.Fatal(err)
					}
				}
				idx := make([]int, batch)
				for i := range idx {
					idx[i] = i
				}
				var took, cpu [2]time.Duration
				for b.Loop() {
					for i, g := range groups {
						c0, t0 := processCPU(b), time.Now()
						if _, err := g.TrainBatch(ctx, ds, idx, 0.01, 0); err != nil {
							b.Fatal(err)
						}
						took[i] += time.Since(t0)
						cpu[i] += processCPU(b) - c0
					}
				}
				n := float64(b.N * batch)
				b.ReportMetric(n/took[0].Seconds(), "1thread-samples/s")
				b.ReportMetric(n/took[1].Seconds(), "2thread-samples/s")
				b.ReportMetric(took[0].Seconds()/took[1].Seconds(), "speedup")
				// On a machine whose second core is busy the speedup is
				// bounded by the CPU the scheduler gives; these two say
				// how much it gave (CPU seconds per wall second of the
				// two-thread steps) and how much work a CPU second did
				// (two-thread samples per CPU second over one-thread).
				b.ReportMetric(cpu[1].Seconds()/took[1].Seconds(), "2thread-cpu/wall")
				b.ReportMetric(cpu[0].Seconds()/cpu[1].Seconds(), "2thread-efficiency")
			})
		}
	}
}

// processCPU is the user and system CPU time of the whole process.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
