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

// BenchmarkFleetRound runs logreg fleets over the in-memory transport under
// the virtual clock (1% of the devices per round, at least 10) and reports
// wall time per round (setup excluded), the peak heap of the whole run
// (MNIST and the coordinator included) and the marginal peak heap per
// device against the 100-device fleet, the baseline run first.
func BenchmarkFleetRound(b *testing.B) {
	sets := mnistSets(b)
	var basePeak float64
	baseN := 0
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			yaml := fmt.Sprintf("name: bench\nmodel: logreg\ntransport: memory\nclients: %d\nrounds: 4\ntest_samples: 1000\n"+
				"selection: {fraction: 0.01, min_clients: 10}\ntrain: {epochs: 1, batch_size: 10, learning_rate: 0.05}\n", n)
			var msPerRound, peakHeap float64
			for i := 0; i < b.N; i++ {
				sc, err := scenario.Parse([]byte(yaml))
				if err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				base := ms.HeapAlloc
				var peak atomic.Uint64
				stop := make(chan struct{})
				var wg sync.WaitGroup
				wg.Add(1)
				go func() {
					defer wg.Done()
					var m runtime.MemStats
					for {
						runtime.ReadMemStats(&m)
						if m.HeapAlloc > peak.Load() {
							peak.Store(m.HeapAlloc)
						}
						select {
						case <-stop:
							return
						case <-time.After(20 * time.Millisecond):
						}
					}
				}()
				res, err := Run(context.Background(), sc, Options{Out: filepath.Join(b.TempDir(), "out"), MNIST: sets})
				close(stop)
				wg.Wait()
				if err != nil {
					b.Fatal(err)
				}
				r := res.Rounds
				if len(r) < 2 {
					b.Fatalf("%d rounds", len(r))
				}
				msPerRound = (r[len(r)-1].WallSeconds - r[0].WallSeconds) / float64(len(r)-1) * 1000
				peakHeap = float64(peak.Load() - min(peak.Load(), base))
			}
			b.ReportMetric(msPerRound, "wall-ms/round")
			b.ReportMetric(peakHeap/1e6, "peak-heap-MB")
			if baseN == 0 {
				basePeak, baseN = peakHeap, n
				return
			}
			b.ReportMetric((peakHeap-basePeak)/float64(n-baseN), "marginal-peak-heap-B/device")
		})
	}
}
