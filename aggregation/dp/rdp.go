package dp

import (
	"errors"
	"fmt"
	"math"
)

// DefaultOrders are the Rényi orders TensorFlow Privacy's
// compute_dp_sgd_privacy evaluates: 1.1, 1.2, ..., 10.9 and 12..63.
var DefaultOrders = func() []float64 {
	var o []float64
	for x := 1; x < 100; x++ {
		o = append(o, 1+float64(x)/10)
	}
	for a := 12; a < 64; a++ {
		o = append(o, float64(a))
	}
	return o
}()

// ErrAccountant reports invalid accountant input.
var ErrAccountant = errors.New("invalid accountant input")

// Accountant tracks the Rényi DP of a sequence of sampled Gaussian
// mechanisms (Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of
// the Sampled Gaussian Mechanism") and converts it to (ε, δ)-DP with the
// classic bound ε = min_α RDP(α) + log(1/δ)/(α-1) (Mironov 2017, Prop. 3).
type Accountant struct {
	orders []float64
	rdp    []float64
	// One-entry cache of the per-step RDP: rounds repeat the same (q, σ).
	lastQ, lastSigma float64
	lastStep         []float64
}

// NewAccountant returns an accountant over the given orders (all > 1);
// nil means DefaultOrders.
func NewAccountant(orders []float64) (*Accountant, error) {
	if orders == nil {
		orders = DefaultOrders
	}
	if len(orders) == 0 {
		return nil, fmt.Errorf("new accountant: %w: no orders", ErrAccountant)
	}
	for _, a := range orders {
		if !(a > 1) || math.IsInf(a, 0) {
			return nil, fmt.Errorf("new accountant: %w: order %v must be finite and > 1", ErrAccountant, a)
		}
	}
	return &Accountant{orders: append([]float64(nil), orders...), rdp: make([]float64, len(orders))}, nil
}

// Compose records steps applications of the Gaussian mechanism with noise
// multiplier sigma (noise std / sensitivity) on a Poisson sample of rate q.
func (a *Accountant) Compose(q, sigma float64, steps int) error {
	if math.IsNaN(q) || q < 0 || q > 1 || !(sigma > 0) || math.IsInf(sigma, 0) || steps < 0 {
		return fmt.Errorf("compose: %w: q=%v sigma=%v steps=%d", ErrAccountant, q, sigma, steps)
	}
	if a.lastStep == nil || a.lastQ != q || a.lastSigma != sigma {
		step := make([]float64, len(a.orders))
		for i, alpha := range a.orders {
			step[i] = SampledGaussianRDP(q, sigma, alpha)
		}
		a.lastQ, a.lastSigma, a.lastStep = q, sigma, step
	}
	for i, r := range a.lastStep {
		a.rdp[i] += float64(steps) * r
	}
	return nil
}

// RDP returns a copy of the accumulated RDP per order (for persistence).
func (a *Accountant) RDP() []float64 { return append([]float64(nil), a.rdp...) }

// Orders returns a copy of the orders.
func (a *Accountant) Orders() []float64 { return append([]float64(nil), a.orders...) }

// Restore replaces the accumulated RDP with values saved by RDP.
func (a *Accountant) Restore(rdp []float64) error {
	if len(rdp) != len(a.rdp) {
		return fmt.Errorf("restore accountant: %w: %d values for %d orders", ErrAccountant, len(rdp), len(a.orders))
	}
	for _, v := range rdp {
		if math.IsNaN(v) || v < 0 {
			return fmt.Errorf("restore accountant: %w: rdp %v", ErrAccountant, v)
		}
	}
	copy(a.rdp, rdp)
	return nil
}

// Epsilon returns the smallest ε over the orders at the given δ, and the
// order achieving it.
func (a *Accountant) Epsilon(delta float64) (eps, order float64, err error) {
	if !(delta > 0 && delta < 1) {
		return 0, 0, fmt.Errorf("epsilon: %w: delta %v not in (0, 1)", ErrAccountant, delta)
	}
	eps = math.Inf(1)
	for i, alpha := range a.orders {
		e := a.rdp[i] - math.Log(delta)/(alpha-1)
		if e < eps {
			eps, order = e, alpha
		}
	}
	return max(eps, 0), order, nil
}

// SampledGaussianRDP is the RDP at order alpha of one application of the
// sampled Gaussian mechanism with rate q and noise multiplier sigma:
// log(A_α)/(α-1), with A_α computed exactly for integer α (Mironov et al.
// 2019, Section 3.3) and by the convergent two-sided series for fractional
// α (Section 3.4).
func SampledGaussianRDP(q, sigma, alpha float64) float64 {
	switch {
	case q == 0:
		return 0
	case q == 1:
		return alpha / (2 * sigma * sigma)
	case math.IsInf(alpha, 1):
		return math.Inf(1)
	}
	var logA float64
	if alpha == math.Trunc(alpha) {
		logA = logAInt(q, sigma, int(alpha))
	} else {
		logA = logAFrac(q, sigma, alpha)
	}
	return logA / (alpha - 1)
}

// logAInt: A_α = Σ_{k=0}^{α} C(α,k) q^k (1-q)^{α-k} exp((k²-k)/(2σ²)).
func logAInt(q, sigma float64, alpha int) float64 {
	logA := math.Inf(-1)
	for k := 0; k <= alpha; k++ {
		kf := float64(k)
		t := logBinom(float64(alpha), kf) + kf*math.Log(q) + float64(alpha-k)*math.Log1p(-q) +
			(kf*kf-kf)/(2*sigma*sigma)
		logA = logAdd(logA, t)
	}
	return logA
}

// logAFrac evaluates A_α = A_0 + A_1 for fractional α by summing both
// series until their terms drop below e^-30.
func logAFrac(q, sigma, alpha float64) float64 {
	a0, a1 := math.Inf(-1), math.Inf(-1)
	z0 := sigma*sigma*math.Log(1/q-1) + 0.5
	for i := 0; ; i++ {
		fi := float64(i)
		lc, sign := logAbsBinom(alpha, fi)
		j := alpha - fi
		t0 := lc + fi*math.Log(q) + j*math.Log1p(-q)
		t1 := lc + j*math.Log(q) + fi*math.Log1p(-q)
		e0 := math.Log(0.5) + logErfc((fi-z0)/(math.Sqrt2*sigma))
		e1 := math.Log(0.5) + logErfc((z0-j)/(math.Sqrt2*sigma))
		s0 := t0 + (fi*fi-fi)/(2*sigma*sigma) + e0
		s1 := t1 + (j*j-j)/(2*sigma*sigma) + e1
		if sign > 0 {
			a0 = logAdd(a0, s0)
			a1 = logAdd(a1, s1)
		} else {
			a0 = logSub(a0, s0)
			a1 = logSub(a1, s1)
		}
		if max(s0, s1) < -30 || i > 10000 {
			break
		}
	}
	return logAdd(a0, a1)
}

func logBinom(n, k float64) float64 {
	l, _ := logAbsBinom(n, k)
	return l
}

// logAbsBinom returns log|C(n,k)| and its sign for real n, integer k >= 0.
func logAbsBinom(n, k float64) (float64, int) {
	a, sa := math.Lgamma(n + 1)
	b, sb := math.Lgamma(k + 1)
	c, sc := math.Lgamma(n - k + 1)
	return a - b - c, sa * sb * sc
}

func logAdd(x, y float64) float64 {
	a, b := min(x, y), max(x, y)
	if math.IsInf(a, -1) {
		return b
	}
	return math.Log1p(math.Exp(a-b)) + b
}

// logSub is log(e^x - e^y) for x >= y, clamped at -Inf.
func logSub(x, y float64) float64 {
	switch {
	case math.IsInf(y, -1):
		return x
	case x <= y:
		return math.Inf(-1)
	}
	return math.Log(math.Expm1(x-y)) + y
}

// logErfc is log(erfc(x)). Above x = 20 it uses the asymptotic expansion
// erfc(x) ~ e^{-x²}/(x√π)·(1 - 1/(2x²) + 3/(4x⁴) - ...), whose truncation
// error there is below 1e-13; math.Erfc would return inaccurate subnormals
// or zero.
func logErfc(x float64) float64 {
	if x <= 20 {
		return math.Log(math.Erfc(x))
	}
	x2 := x * x
	return -math.Log(math.Pi)/2 - math.Log(x) - x2 - 0.5/x2 + 0.625/(x2*x2) -
		37.0/24.0/(x2*x2*x2) + 353.0/64.0/(x2*x2*x2*x2)
}
