package aggregation

import "fmt"

// FedAvgConfig configures FedAvg (McMahan et al. 2017): the new global
// model is x + η·Σ n_i Δ_i / Σ n_i with n_i the (capped) sample counts.
type FedAvgConfig struct {
	Common
	// ServerLR is η; zero means 1 (plain FedAvg).
	ServerLR float64
}

// NewFedAvg returns streaming, sample-weighted FedAvg.
func NewFedAvg(c FedAvgConfig) (*SumStrategy, error) {
	return newFedAvg("fedavg", c)
}

func newFedAvg(name string, c FedAvgConfig) (*SumStrategy, error) {
	lr := c.ServerLR
	if lr == 0 {
		lr = 1
	}
	if err := checkPositive("server learning rate", lr); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return newSumStrategy(name, c.Common, &serverSGD{name: name, eta: lr})
}

// serverSGD is x ← x + η·Δ.
type serverSGD struct {
	name  string
	eta   float64
	steps uint64
}

func (o *serverSGD) Name() string { return o.name }

func (o *serverSGD) Step(global []float32, delta []float64) error {
	if err := checkStep(global, delta); err != nil {
		return err
	}
	next := make([]float64, len(global))
	for i, d := range delta {
		next[i] = float64(global[i]) + o.eta*d
	}
	if err := commit(global, next); err != nil {
		return err
	}
	o.steps++
	return nil
}

func (o *serverSGD) State() OptimizerState { return OptimizerState{Steps: o.steps} }

func (o *serverSGD) SetState(s OptimizerState) error {
	if len(s.M) != 0 || len(s.V) != 0 {
		return fmt.Errorf("%s: %w: plain server SGD has no moments", o.name, ErrConfig)
	}
	o.steps = s.Steps
	return nil
}
