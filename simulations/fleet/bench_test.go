package fleet

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedge-dev/fedge/simulations/scenario"
)

// BenchmarkFleetRound runs logreg fleets under the virtual clock (1% of
// the devices per round, at least 10; 6 samples per device as in
// scale-10k) over the in-memory transport and over the embedded broker's
// in-process listener, and reports:
//
//   - wall-ms/round: wall time per round, setup (connecting the fleet)
//     excluded;
//   - peak-MB: the peak of heap plus goroutine stacks over the whole run,
//     MNIST and the coordinator included (sampled every 20 ms);
//   - peak-KB/device: that peak divided by the devices;
//   - marginal-peak-KB/device: the growth of the peak per device against
//     the smallest fleet of the same transport, i.e. what one more
//     simulated device costs.
func BenchmarkFleetRound(b *testing.B) {
	sets := mnistSets(b)
	for _, tc := range []struct {
		transport string
		sizes     []int
	}{
		{"memory", []int{100, 1000, 10000}},
		{"broker", []int{100, 1000}},
	} {
		var basePeak float64
		baseN := 0
		for _, n := range tc.sizes {
			b.Run(fmt.Sprintf("transport=%s/devices=%d", tc.transport, n), func(b *testing.B) {
				yaml := fmt.Sprintf("name: bench\nmodel: logreg\ntransport: %s\nclients: %d\nrounds: 4\ntest_samples: 1000\n"+
					"partition: {kind: iid, min_per_client: 6}\n"+
					"selection: {fraction: 0.01, min_clients: 10}\ntrain: {epochs: 1, batch_size: 6, learning_rate: 0.05}\n", tc.transport, n)
				var msPerRound, peak float64
				for i := 0; i < b.N; i++ {
					sc, err := scenario.Parse([]byte(yaml))
					if err != nil {
						b.Fatal(err)
					}
					var res *Result
					peak, err = peakMemory(func() error {
						var err error
						res, err = Run(context.Background(), sc, Options{Out: filepath.Join(b.TempDir(), "out"), MNIST: sets})
						return err
					})
					if err != nil {
						b.Fatal(err)
					}
					r := res.Rounds
					if len(r) < 2 {
						b.Fatalf("%d rounds", len(r))
					}
					msPerRound = (r[len(r)-1].WallSeconds - r[0].WallSeconds) / float64(len(r)-1) * 1000
				}
				b.ReportMetric(msPerRound, "wall-ms/round")
				b.ReportMetric(peak/1e6, "peak-MB")
				b.ReportMetric(peak/1e3/float64(n), "peak-KB/device")
				if baseN == 0 {
					basePeak, baseN = peak, n
					return
				}
				b.ReportMetric((peak-basePeak)/1e3/float64(n-baseN), "marginal-peak-KB/device")
			})
		}
	}
}

// peakMemory runs f and returns the peak of heap objects (allocated and
// not yet freed) plus goroutine stacks while it ran, above what was in use
// before, sampled every 20 ms.
func peakMemory(f func() error) (float64, error) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc + ms.StackInuse
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if v := m.HeapAlloc + m.StackInuse; v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	err := f()
	close(stop)
	wg.Wait()
	return float64(peak.Load() - min(peak.Load(), base)), err
}
