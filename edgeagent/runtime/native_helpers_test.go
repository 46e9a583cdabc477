package runtime

import (
	"math"
	"math/rand/v2"

	"github.com/fedge-dev/fedge/edgeagent/native"
)

// initNative gives a native model Glorot-uniform weights from seed.
func initNative(m *native.MLP, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 2))
	p := m.Params()
	lim := float32(math.Sqrt(6.0 / 794))
	for i := range p {
		p[i] = (2*r.Float32() - 1) * lim
	}
}
