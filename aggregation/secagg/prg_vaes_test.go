package secagg

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestVAESMatchesPortable checks that the VAES kernel adds and subtracts
// exactly the masks of the portable AES-CTR path, for lengths around the
// kernel's 64-coordinate step and 8192-coordinate chunk, every domain,
// mixed signs and batches of 0 to 9 masks.
func TestVAESMatchesPortable(t *testing.T) {
	if !haveVAES {
		t.Log("this CPU has no VAES: the portable path is the only one, compared with itself")
	}
	r := rand.New(rand.NewPCG(1, 2))
	domains := []domain{domainSelfMask, domainPairMask, domainGraph}
	for _, n := range []int{0, 1, 3, 63, 64, 65, 127, 128, 1000, 8191, 8192, 8193, 8256, 16384 + 77, 100000} {
		for trial := range 3 {
			jobs := make([]maskJob, trial*3+r.IntN(3))
			for i := range jobs {
				for j := range jobs[i].seed {
					jobs[i].seed[j] = byte(r.Uint32())
				}
				jobs[i].d = domains[r.IntN(len(domains))]
				jobs[i].neg = r.IntN(2) == 0
			}
			start := make([]uint32, n)
			for i := range start {
				start[i] = r.Uint32()
			}
			want, got := slices.Clone(start), slices.Clone(start)
			setVAES(t, false)
			applyMasks(want, jobs)
			setVAES(t, haveVAES)
			applyMasks(got, jobs)
			if i := firstDiff(got, want); i >= 0 {
				t.Fatalf("n=%d, %d masks: coordinate %d: VAES %#x, portable %#x", n, len(jobs), i, got[i], want[i])
			}
			if len(jobs) > 0 && n > 0 && slices.Equal(got, start) {
				t.Fatalf("n=%d, %d masks: sum unchanged", n, len(jobs))
			}
		}
	}
}

// setVAES selects the mask path until the end of the test or benchmark.
func setVAES(t testing.TB, on bool) {
	old := useVAES
	useVAES = on
	t.Cleanup(func() { useVAES = old })
}

func firstDiff(a, b []uint32) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}
