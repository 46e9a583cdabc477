package aggregation

import "fmt"

// FedAvgMConfig configures FedAvgM, server momentum (Hsu et al. 2019;
// the SGD-with-momentum server of Reddi et al. 2021):
//
//	m_t = β·m_{t-1} + Δ_t,  x_{t+1} = x_t + η·m_t,  m_{-1} = 0.
type FedAvgMConfig struct {
	Common
	ServerLR float64 // η > 0
	Momentum float64 // β in [0, 1)
}

// NewFedAvgM returns FedAvg with server momentum.
func NewFedAvgM(c FedAvgMConfig) (*SumStrategy, error) {
	if err := checkPositive("server learning rate", c.ServerLR); err != nil {
		return nil, fmt.Errorf("fedavgm: %w", err)
	}
	if err := checkUnit("momentum", c.Momentum, false); err != nil {
		return nil, fmt.Errorf("fedavgm: %w", err)
	}
	return newSumStrategy("fedavgm", c.Common, &momentum{eta: c.ServerLR, beta: c.Momentum})
}

type momentum struct {
	eta, beta float64
	steps     uint64
	m         []float64
}

func (o *momentum) Name() string { return "fedavgm" }

func (o *momentum) Step(global []float32, delta []float64) error {
	if err := checkStep(global, delta); err != nil {
		return err
	}
	if o.m == nil {
		o.m = make([]float64, len(global))
	}
	if len(o.m) != len(global) {
		return fmt.Errorf("%w: momentum has %d parameters, model %d", ErrDimension, len(o.m), len(global))
	}
	m := make([]float64, len(global))
	next := make([]float64, len(global))
	for i, d := range delta {
		m[i] = o.beta*o.m[i] + d
		next[i] = float64(global[i]) + o.eta*m[i]
	}
	if err := commit(global, next); err != nil {
		return err
	}
	o.m = m
	o.steps++
	return nil
}

func (o *momentum) State() OptimizerState {
	return OptimizerState{Steps: o.steps, M: append([]float64(nil), o.m...)}
}

func (o *momentum) SetState(s OptimizerState) error {
	if len(s.V) != 0 || allFinite64(s.M) >= 0 {
		return fmt.Errorf("fedavgm: %w: bad optimizer state", ErrConfig)
	}
	o.steps = s.Steps
	o.m = append([]float64(nil), s.M...)
	if len(o.m) == 0 {
		o.m = nil
	}
	return nil
}
