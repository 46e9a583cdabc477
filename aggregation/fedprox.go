package aggregation

import (
	"fmt"
	"math"
)

// NewFedProx returns FedAvg whose round configuration carries FedProx's
// proximal coefficient μ (Li et al. 2020, "Federated Optimization in
// Heterogeneous Networks"): clients minimise F_k(w) + μ/2·||w - w_t||².
// Server-side aggregation is FedAvg's.
func NewFedProx(c FedAvgConfig, mu float64) (*SumStrategy, error) {
	if !(mu > 0) || math.IsInf(mu, 0) {
		return nil, fmt.Errorf("fedprox: %w: mu %v must be positive and finite", ErrConfig, mu)
	}
	c.Train.ProximalMu = mu
	return newFedAvg("fedprox", c)
}
