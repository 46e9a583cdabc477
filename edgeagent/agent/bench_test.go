package agent

import (
	"context"
	"crypto/ed25519"
	"fmt"
	goruntime "runtime"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/edgeagent/runtime"
	"github.com/fedge-dev/fedge/internal/clock"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport/memory"
	"github.com/fedge-dev/fedge/internal/wire"
	wasmmodels "github.com/fedge-dev/fedge/wasm-models"
)

// BenchmarkTrainTask measures a whole training task as the agent runs it
// (instantiate, load weights, train one epoch, delta, encode, seal) in
// samples/s, next to the baseline of the bare runtime training loop on the
// same model and data.
func BenchmarkTrainTask(b *testing.B) {
	for _, name := range []string{"logreg", "mlp"} {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			host := newHost(b)
			wasm := wasmmodels.MustGet(name).Wasm
			mod, err := host.Compile(ctx, wasm)
			must(b, err)
			probe, err := mod.Instantiate(ctx, runtime.Options{MaxBatch: 32})
			must(b, err)
			must(b, probe.Init(ctx, 1))
			w, err := probe.Params(ctx)
			must(b, err)
			weights := EncodeWeights(w)
			_, key, _ := ed25519.GenerateKey(nil)
			m := signedModel(b, key, 1, wasm, weights)
			src := synthetic(b, 512, 1)
			task := trainTask(1, m.Manifest, 7)
			task.Train.BatchSize = 32
			r := &taskRunner{host: host, src: src, clock: clock.Wall{}, deviceID: "bench", inlineLimit: DefaultInlineLimit}

			// Baseline: the runtime's training loop alone, same data and config.
			start := time.Now()
			const baseRuns = 3
			for range baseRuns {
				must(b, probe.SetParams(ctx, w))
				_, err := probe.TrainEpochs(ctx, src, runtime.TrainConfig{Epochs: 1, BatchSize: 32, LR: 0.1, Seed: 7})
				must(b, err)
			}
			base := float64(baseRuns*src.Len()) / time.Since(start).Seconds()
			_ = probe.Close(ctx)

			b.ResetTimer()
			for range b.N {
				res, err := r.run(ctx, task, m)
				must(b, err)
				if _, err := wire.SealEnvelope(key, "bench", res.typ, res.msg, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*src.Len())/b.Elapsed().Seconds(), "samples/s")
			b.ReportMetric(base, "baseline_samples/s")
		})
	}
}

// BenchmarkIdleAgentMemory starts agents on one memory bus with a shared
// host, each with a model installed, and reports the heap each idle agent
// adds (bytes/agent), next to the baseline of a bare bus client with the
// same two subscriptions.
func BenchmarkIdleAgentMemory(b *testing.B) {
	const n = 200
	host := newHost(b)
	bus := memory.NewBus(memory.Config{}, nil)
	c := newFakeCoordinatorKey(b, bus, func() ed25519.PrivateKey { _, k, _ := ed25519.GenerateKey(nil); return k }())
	wasm, weights := logregModel(b, host)
	m := signedModel(b, c.key, 1, wasm, weights)
	src := synthetic(b, 32, 1)
	heap := func() float64 {
		goruntime.GC()
		var ms goruntime.MemStats
		goruntime.ReadMemStats(&ms)
		return float64(ms.HeapAlloc)
	}
	for range b.N {
		h0 := heap()
		var clients []*memory.Client
		for i := range n {
			id := fmt.Sprintf("base-%d", i)
			cl, err := bus.Connect(memory.ClientOptions{Identity: topics.Identity{Role: topics.RoleDevice, ID: id, Fleet: fleet}, CleanSession: true})
			must(b, err)
			for _, f := range []string{topics.DeviceIn(fleet, id, "+"), topics.Manifest(fleet)} {
				_, err := cl.Subscribe(context.Background(), f)
				must(b, err)
			}
			clients = append(clients, cl)
		}
		base := (heap() - h0) / n
		for _, cl := range clients {
			_ = cl.Close()
		}

		h1 := heap()
		var devs []*device
		for i := range n {
			d := newDevice(b, c, host, fmt.Sprintf("dev-%d", i), src, func(o *Options) { o.TickInterval = time.Hour })
			must(b, d.models.Install(m)) // shares the model's bytes, as the simulator's BlobCache does
			d.start(b, bus)
			devs = append(devs, d)
		}
		eventually(b, "agents said hello", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.hellos) >= n })
		per := (heap() - h1) / n
		for _, d := range devs {
			d.stop(b)
		}
		c.mu.Lock()
		c.hellos = nil
		c.mu.Unlock()
		b.ReportMetric(per, "bytes/agent")
		b.ReportMetric(base, "baseline_bytes/client")
	}
}
