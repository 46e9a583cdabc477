package aggregation

import (
	"fmt"
	"math"
	"slices"
)

// TrimmedMean is the coordinate-wise β-trimmed mean (Yin et al. 2018): for
// each coordinate drop the k = floor(β·n) largest and k smallest values and
// average the rest. It needs n >= 2k+1 and β in [0, 0.5).
type TrimmedMean struct {
	Beta float64
}

// Name implements RobustAggregator.
func (t TrimmedMean) Name() string { return fmt.Sprintf("trimmedmean(beta=%g)", t.Beta) }

// MinClients implements RobustAggregator: the smallest n with n > 2·floor(β·n).
func (t TrimmedMean) MinClients() int {
	for n := 1; ; n++ {
		if n > 2*t.trim(n) {
			return n
		}
	}
}

func (t TrimmedMean) trim(n int) int { return int(math.Floor(t.Beta * float64(n))) }

// Aggregate implements RobustAggregator.
func (t TrimmedMean) Aggregate(dst []float64, deltas [][]float32) error {
	if math.IsNaN(t.Beta) || t.Beta < 0 || t.Beta >= 0.5 {
		return fmt.Errorf("%s: %w: beta not in [0, 0.5)", t.Name(), ErrConfig)
	}
	n := len(deltas)
	k := t.trim(n)
	if n < 1 || n <= 2*k {
		return tooFew(t.Name(), "2·floor(beta·n)+1", max(1, 2*k+1), n)
	}
	buf := make([]float64, 0, n)
	for j := range dst {
		col := column(buf, deltas, j)
		slices.Sort(col)
		var s float64
		for _, v := range col[k : n-k] {
			s += v
		}
		dst[j] = s / float64(n-2*k)
	}
	return nil
}
