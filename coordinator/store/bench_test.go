package store_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/fedge-dev/fedge/coordinator/store"
	"github.com/fedge-dev/fedge/coordinator/store/storetest"
)

// updateBytes is the encoded delta of the reference MNIST MLP (~100k float32).
const updateBytes = 400_000

// BenchmarkApplyUpdate persists one accepted update per batch, as the round
// machine does, and reports MB/s next to the baseline of appending the same
// bytes to a file with an fsync each.
func BenchmarkApplyUpdate(b *testing.B) {
	delta := make([]byte, updateBytes)
	for i := range delta {
		delta[i] = byte(i)
	}
	for _, kind := range []string{"badger", "memory"} {
		b.Run(kind, func(b *testing.B) {
			dir := b.TempDir()
			var s store.Store = store.NewMemory()
			if kind == "badger" {
				bs, err := store.Open(store.BadgerOptions(dir), nil)
				if err != nil {
					b.Fatal(err)
				}
				s = bs
			}
			defer s.Close()
			f, err := os.Create(filepath.Join(dir, "baseline"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			b.ResetTimer()
			for range b.N {
				if kind == "badger" {
					if _, err := f.Write(delta); err != nil {
						b.Fatal(err)
					}
					if err := f.Sync(); err != nil {
						b.Fatal(err)
					}
				}
			}
			baseNs := b.Elapsed().Nanoseconds()
			ctx := context.Background()
			for i := range b.N {
				u := storetest.SampleUpdate(uint64(1+i/1000), fmt.Sprintf("dev-%d", i), uint32(i%1000))
				u.EncodedDelta = delta
				if err := s.Apply(ctx, &store.Batch{Updates: []*store.Update{u}}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			applyNs := b.Elapsed().Nanoseconds() - baseNs
			mb := float64(b.N) * updateBytes / 1e6
			b.ReportMetric(mb/(float64(applyNs)/1e9), "apply-MB/s")
			b.ReportMetric(float64(b.N)/(float64(applyNs)/1e9), "updates/s")
			if kind == "badger" {
				b.ReportMetric(mb/(float64(baseNs)/1e9), "baseline-fsync-MB/s")
			}
		})
	}
}
