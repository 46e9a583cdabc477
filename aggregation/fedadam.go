package aggregation

// NewFedAdam returns FedAdam (Reddi et al. 2021, Algorithm 2):
//
//	v_t = β2·v_{t-1} + (1-β2)·Δ_t²
func NewFedAdam(c AdaptiveConfig) (*SumStrategy, error) {
	return newAdaptive("fedadam", c, func(v, d2, beta2 float64) float64 {
		return beta2*v + (1-beta2)*d2
	})
}
