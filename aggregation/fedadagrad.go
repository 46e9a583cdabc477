package aggregation

// NewFedAdagrad returns FedAdagrad (Reddi et al. 2021, Algorithm 2):
//
//	v_t = v_{t-1} + Δ_t²
//
// Beta2 is ignored.
func NewFedAdagrad(c AdaptiveConfig) (*SumStrategy, error) {
	return newAdaptive("fedadagrad", c, func(v, d2, _ float64) float64 {
		return v + d2
	})
}
