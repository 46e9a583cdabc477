package aggregation

import (
	"fmt"
	"math"
	"slices"
)

// Bulyan (El Mhamdi et al. 2018, "The Hidden Vulnerability of Distributed
// Learning in Byzantium") tolerates f Byzantine clients among n >= 4f+3:
//
//  1. select θ = n-2f updates by repeatedly applying Krum to the remaining
//     set and removing the winner;
//  2. for each coordinate, average the β = θ-2f selected values closest to
//     the coordinate's median among the selected.
//
// Krum on the shrinking set scores with max(1, r-f-2) neighbours, r the
// size of the remaining set.
type Bulyan struct {
	F int
}

// Name implements RobustAggregator.
func (b Bulyan) Name() string { return fmt.Sprintf("bulyan(f=%d)", b.F) }

// MinClients implements RobustAggregator.
func (b Bulyan) MinClients() int { return 4*b.F + 3 }

// Aggregate implements RobustAggregator.
func (b Bulyan) Aggregate(dst []float64, deltas [][]float32) error {
	if b.F < 0 {
		return fmt.Errorf("%s: %w: f < 0", b.Name(), ErrConfig)
	}
	n := len(deltas)
	if n < b.MinClients() {
		return tooFew(b.Name(), "4f+3", b.MinClients(), n)
	}
	theta := n - 2*b.F
	beta := theta - 2*b.F
	dist := pairwiseSq(deltas)
	remaining := make([]int, n)
	for i := range remaining {
		remaining[i] = i
	}
	selected := make([]int, 0, theta)
	for len(selected) < theta {
		scores := krumScores(dist, remaining, max(1, len(remaining)-b.F-2))
		best := remaining[0]
		for _, i := range remaining[1:] {
			if scores[i] < scores[best] {
				best = i
			}
		}
		selected = append(selected, best)
		remaining = slices.DeleteFunc(remaining, func(i int) bool { return i == best })
	}
	col := make([]float64, theta)
	for j := range dst {
		for t, i := range selected {
			col[t] = float64(deltas[i][j])
		}
		slices.Sort(col)
		med := col[theta/2]
		if theta%2 == 0 {
			med = (col[theta/2-1] + col[theta/2]) / 2
		}
		// The β values closest to the median form a contiguous window of
		// the sorted column; slide it to the one with the smallest span.
		lo := 0
		for lo+beta < theta && math.Abs(col[lo+beta]-med) < math.Abs(col[lo]-med) {
			lo++
		}
		var s float64
		for _, v := range col[lo : lo+beta] {
			s += v
		}
		dst[j] = s / float64(beta)
	}
	return nil
}
