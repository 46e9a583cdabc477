package aggregation

// NewFedYogi returns FedYogi (Reddi et al. 2021, Algorithm 2, after
// Zaheer et al. 2018):
//
//	v_t = v_{t-1} - (1-β2)·Δ_t²·sign(v_{t-1} - Δ_t²)
func NewFedYogi(c AdaptiveConfig) (*SumStrategy, error) {
	return newAdaptive("fedyogi", c, func(v, d2, beta2 float64) float64 {
		var sign float64
		switch {
		case v > d2:
			sign = 1
		case v < d2:
			sign = -1
		}
		return v - (1-beta2)*d2*sign
	})
}
