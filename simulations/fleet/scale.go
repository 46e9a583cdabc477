package fleet

import (
	"fmt"
	"math/rand/v2"
	"slices"
)

// resampledIID is the IID split for fleets with more devices than the
// training set has samples to deal out (MNIST's 60,000 images over
// 100,000 devices): each device draws perClient sample indices uniformly
// with replacement from the n samples, from its own random stream seeded
// by the scenario seed and its index. Devices may therefore hold some of
// the same images (as real devices hold similar data), a device may hold
// an image twice, and device i's data does not depend on the fleet size,
// so a larger fleet only adds devices.
func resampledIID(n, clients, perClient int, seed uint64) ([][]int, error) {
	if n < 1 || clients < 1 || perClient < 1 {
		return nil, fmt.Errorf("resampled iid: %d samples, %d clients, %d per client", n, clients, perClient)
	}
	out := make([][]int, clients)
	// One backing array: 100,000 small slices would cost a header and an
	// allocation each.
	all := make([]int, clients*perClient)
	for c := range out {
		r := rand.New(rand.NewPCG(seed, 0x5ca1ab1e^uint64(c)))
		part := all[c*perClient : (c+1)*perClient : (c+1)*perClient]
		for i := range part {
			part[i] = r.IntN(n)
		}
		slices.Sort(part)
		out[c] = part
	}
	return out, nil
}
