package aggregation

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkFedAvg measures the streaming accumulator against a plain copy
// of the same update bytes. One op is one round: 100 clients folded into a
// 1M-parameter accumulator (8 distinct update buffers, 32 MB, cycled so the
// updates do not all sit in L1/L2). GB/s counts float32 update bytes folded
// in (or copied, for the baseline).
func BenchmarkFedAvg(b *testing.B) {
	const dim = 1_000_000
	const clients = 100
	r := rand.New(rand.NewPCG(1, 2))
	bufs := make([][]float32, 8)
	for i := range bufs {
		bufs[i] = randDelta(r, dim, 0.01)
	}
	names := make([]string, clients)
	for i := range names {
		names[i] = fmt.Sprint("client-", i)
	}
	bytesPerOp := float64(clients * dim * 4)
	b.Run(fmt.Sprintf("baseline=memcopy/dim=%d", dim), func(b *testing.B) {
		dst := make([]float32, dim)
		b.ReportAllocs()
		for b.Loop() {
			for c := range clients {
				copy(dst, bufs[c%len(bufs)])
			}
		}
		b.ReportMetric(bytesPerOp*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
	})
	b.Run(fmt.Sprintf("clients=%d/dim=%d", clients, dim), func(b *testing.B) {
		acc, err := NewWeightedSum(dim, 0, false)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			acc.Reset()
			for c := range clients {
				if err := acc.Add(names[c], bufs[c%len(bufs)], int64(100+c)); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(bytesPerOp*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
	})
}
