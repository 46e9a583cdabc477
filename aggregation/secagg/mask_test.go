package secagg

import (
	"encoding/binary"
	mrand "math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"
)

// BenchmarkApplyMask measures one mask expansion and subtraction over a
// 100k-coordinate vector, the server's cost per survivor for its self mask
// when masks are applied one by one, on the VAES kernel (where the CPU has
// it) and on the standard library's AES-CTR in the same run.
func BenchmarkApplyMask(b *testing.B) {
	benchMaskPaths(b, func(b *testing.B) {
		acc := make([]uint32, 100000)
		var seed [32]byte
		b.SetBytes(int64(4 * len(acc)))
		t0 := threadCPU()
		for b.Loop() {
			seed[0]++
			applyMask(acc, seed, domainSelfMask, -1)
		}
		reportPerMask(b, t0, 1)
	})
}

// BenchmarkApplyMasks4 is BenchmarkApplyMask for four masks applied in one
// batch (applyMasks), reported per mask.
func BenchmarkApplyMasks4(b *testing.B) {
	benchMaskPaths(b, func(b *testing.B) {
		acc := make([]uint32, 100000)
		jobs := make([]maskJob, 4)
		b.SetBytes(int64(4 * len(acc) * len(jobs)))
		t0 := threadCPU()
		for b.Loop() {
			for j := range jobs {
				jobs[j].seed[0]++
				jobs[j].seed[1] = byte(j)
				jobs[j].d, jobs[j].neg = domainSelfMask, true
			}
			applyMasks(acc, jobs)
		}
		reportPerMask(b, t0, len(jobs))
	})
}

// benchMaskPaths runs bench as path=vaes (when the CPU has VAES) and
// path=stdlib, locked to its thread for threadCPU.
func benchMaskPaths(b *testing.B, bench func(*testing.B)) {
	for _, vaes := range []bool{true, false} {
		if vaes && !haveVAES {
			continue
		}
		name := "path=stdlib"
		if vaes {
			name = "path=vaes"
		}
		b.Run(name, func(b *testing.B) {
			setVAES(b, vaes)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			bench(b)
		})
	}
}

func reportPerMask(b *testing.B, cpu0 time.Duration, masks int) {
	n := float64(b.N * masks)
	b.ReportMetric(float64(b.Elapsed().Microseconds())/n, "us/mask")
	b.ReportMetric(float64((threadCPU()-cpu0).Microseconds())/n, "cpu-us/mask")
}

// BenchmarkAddLE measures folding one 100k-coordinate masked input into the sum.
func BenchmarkAddLE(b *testing.B) {
	acc := make([]uint32, 100000)
	msg := make([]byte, 4*len(acc))
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		addLE(acc, msg)
	}
}

// BenchmarkAddFloat32LE measures the plain server's decode-and-sum of one
// 100k-coordinate float32 update, for comparison with BenchmarkAddLE.
func BenchmarkAddFloat32LE(b *testing.B) {
	acc := make([]float32, 100000)
	msg := make([]byte, 4*len(acc))
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		addFloat32LE(acc, msg)
	}
}

// TestApplyMasksMatchesNaive: the batched mask application (four keystreams
// folded per pass, by sign) gives exactly the sum of the masks applied one by
// one with a naive loop, for any number of masks and signs and for lengths
// around the chunk and unroll boundaries.
func TestApplyMasksMatchesNaive(t *testing.T) {
	r := mrand.New(mrand.NewPCG(8, 9))
	for _, n := range []int{0, 1, 3, 4, 5, maskChunk - 1, maskChunk, maskChunk + 3, 3*maskChunk + 7} {
		for k := range 10 {
			acc := make([]uint32, n)
			for i := range acc {
				acc[i] = r.Uint32()
			}
			want := slices.Clone(acc)
			jobs := make([]maskJob, k)
			for j := range jobs {
				for i := range jobs[j].seed {
					jobs[j].seed[i] = byte(r.Uint32())
				}
				jobs[j].d = []domain{domainSelfMask, domainPairMask}[r.IntN(2)]
				jobs[j].neg = r.IntN(2) == 0
				ks := make([]byte, 4*n)
				newPRG(jobs[j].seed, jobs[j].d).stream.XORKeyStream(ks, ks)
				for i := range want {
					m := binary.LittleEndian.Uint32(ks[4*i:])
					if jobs[j].neg {
						want[i] -= m
					} else {
						want[i] += m
					}
				}
			}
			applyMasks(acc, jobs)
			if !slices.Equal(acc, want) {
				t.Fatalf("n=%d, %d masks: batched result differs from the naive one", n, k)
			}
		}
	}
}
