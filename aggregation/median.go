package aggregation

import "slices"

// Median is the coordinate-wise median (Yin et al. 2018): each coordinate
// of the aggregate is the median of that coordinate over the clients (the
// mean of the two middle values for an even cohort). It tolerates any
// minority of Byzantine clients per coordinate and needs one client.
type Median struct{}

// Name implements RobustAggregator.
func (Median) Name() string { return "median" }

// MinClients implements RobustAggregator.
func (Median) MinClients() int { return 1 }

// Aggregate implements RobustAggregator.
func (m Median) Aggregate(dst []float64, deltas [][]float32) error {
	n := len(deltas)
	if n < 1 {
		return tooFew("median", "1", 1, n)
	}
	buf := make([]float64, 0, n)
	for j := range dst {
		col := column(buf, deltas, j)
		slices.Sort(col)
		if n%2 == 1 {
			dst[j] = col[n/2]
		} else {
			dst[j] = (col[n/2-1] + col[n/2]) / 2
		}
	}
	return nil
}
