package aggregation

import (
	"fmt"
	"slices"
)

// Krum selects the single update closest to its n-f-2 nearest neighbours
// (Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine
// Tolerant Gradient Descent"). It tolerates f Byzantine clients and needs
// n >= 2f+3.
type Krum struct {
	F int
}

// Name implements RobustAggregator.
func (k Krum) Name() string { return fmt.Sprintf("krum(f=%d)", k.F) }

// MinClients implements RobustAggregator.
func (k Krum) MinClients() int { return 2*k.F + 3 }

// Aggregate implements RobustAggregator.
func (k Krum) Aggregate(dst []float64, deltas [][]float32) error {
	return MultiKrum{F: k.F, M: 1}.aggregate(k.Name(), dst, deltas)
}

// MultiKrum averages the M updates with the lowest Krum scores (Blanchard
// et al. 2017, Section 5). It needs n >= 2f+3 and 1 <= M <= n.
type MultiKrum struct {
	F int
	M int
}

// Name implements RobustAggregator.
func (k MultiKrum) Name() string { return fmt.Sprintf("multikrum(f=%d,m=%d)", k.F, k.M) }

// MinClients implements RobustAggregator.
func (k MultiKrum) MinClients() int { return max(2*k.F+3, k.M) }

// Aggregate implements RobustAggregator.
func (k MultiKrum) Aggregate(dst []float64, deltas [][]float32) error {
	return k.aggregate(k.Name(), dst, deltas)
}

func (k MultiKrum) aggregate(name string, dst []float64, deltas [][]float32) error {
	if k.F < 0 || k.M < 1 {
		return fmt.Errorf("%s: %w: need f >= 0 and m >= 1", name, ErrConfig)
	}
	n := len(deltas)
	if n < 2*k.F+3 {
		return tooFew(name, "2f+3", 2*k.F+3, n)
	}
	if n < k.M {
		return tooFew(name, "m", k.M, n)
	}
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	scores := krumScores(pairwiseSq(deltas), all, n-k.F-2)
	order := slices.Clone(all)
	slices.SortStableFunc(order, func(a, b int) int { return cmpFloat(scores[a], scores[b]) })
	meanOf(dst, deltas, order[:k.M])
	return nil
}

// pairwiseSq returns the matrix of squared Euclidean distances.
func pairwiseSq(deltas [][]float32) [][]float64 {
	n := len(deltas)
	d := make([][]float64, n)
	for i := range d {
		d[i] = make([]float64, n)
	}
	for i := range n {
		for j := i + 1; j < n; j++ {
			var s float64
			a, b := deltas[i], deltas[j]
			for t := range a {
				x := float64(a[t]) - float64(b[t])
				s += x * x
			}
			d[i][j], d[j][i] = s, s
		}
	}
	return d
}

// krumScores returns, for each index of set, the sum of squared distances
// to its `neighbours` nearest other members of set (score index = position
// in the full matrix).
func krumScores(dist [][]float64, set []int, neighbours int) map[int]float64 {
	scores := make(map[int]float64, len(set))
	buf := make([]float64, 0, len(set))
	for _, i := range set {
		buf = buf[:0]
		for _, j := range set {
			if j != i {
				buf = append(buf, dist[i][j])
			}
		}
		slices.Sort(buf)
		var s float64
		for _, v := range buf[:min(neighbours, len(buf))] {
			s += v
		}
		scores[i] = s
	}
	return scores
}

func meanOf(dst []float64, deltas [][]float32, idx []int) {
	clear(dst)
	for _, i := range idx {
		for j, v := range deltas[i] {
			dst[j] += float64(v)
		}
	}
	for j := range dst {
		dst[j] /= float64(len(idx))
	}
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
