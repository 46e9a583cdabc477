package dp

import (
	"errors"
	"math"
	"testing"
)

// TensorFlow Privacy, tutorials/README.md (github.com/tensorflow/privacy,
// "Expected Output" and "Select Parameters"), MNIST DP-SGD with 60,000
// training examples, batch 256, δ = 1e-5, RDP accountant with the classic
// conversion ε = min_α RDP(α) - log δ/(α-1):
//
//	noise 1.12, 60 epochs -> ε 2.92 (the tutorial's default; after 1 epoch
//	1.00, after 2 epochs 1.04)
//	noise 0.6,  30 epochs -> ε 9.74
//	noise 1.2,  10 epochs -> ε 1.20
//
// Steps are ceil(epochs·60000/256) as in compute_dp_sgd_privacy.
func TestAccountantReproducesTFPrivacyMNIST(t *testing.T) {
	cases := []struct {
		noise  float64
		epochs int
		eps    float64
	}{
		{1.12, 60, 2.92},
		{1.12, 1, 1.00},
		{1.12, 2, 1.04},
		{0.6, 30, 9.74},
		{1.2, 10, 1.20},
	}
	for _, tc := range cases {
		a, err := NewAccountant(nil)
		if err != nil {
			t.Fatal(err)
		}
		steps := (tc.epochs*60000 + 255) / 256
		if err := a.Compose(256.0/60000, tc.noise, steps); err != nil {
			t.Fatal(err)
		}
		eps, order, err := a.Epsilon(1e-5)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("noise %.2f, %d epochs (%d steps): eps %.4f at order %v (published %.2f)", tc.noise, tc.epochs, steps, eps, order, tc.eps)
		if math.Abs(eps-tc.eps)/tc.eps > 0.02 {
			t.Errorf("noise %.2f %d epochs: eps %.4f, published %.2f (more than 2%% off)", tc.noise, tc.epochs, eps, tc.eps)
		}
	}
}

func TestSampledGaussianRDPClosedForms(t *testing.T) {
	// q = 1 is the plain Gaussian mechanism: α/(2σ²).
	if got := SampledGaussianRDP(1, 2, 5); math.Abs(got-5.0/8) > 1e-15 {
		t.Fatalf("q=1: %v", got)
	}
	if SampledGaussianRDP(0, 1, 5) != 0 {
		t.Fatal("q=0 must cost nothing")
	}
	// α = 2: A_2 = 1 + q²(e^{1/σ²} - 1).
	for _, c := range []struct{ q, sigma float64 }{{0.01, 1}, {0.3, 0.7}, {0.004, 1.1}} {
		want := math.Log(1 + c.q*c.q*(math.Exp(1/(c.sigma*c.sigma))-1))
		if got := SampledGaussianRDP(c.q, c.sigma, 2); math.Abs(got-want) > 1e-12*math.Max(1, want) {
			t.Fatalf("q=%v σ=%v α=2: %v want %v", c.q, c.sigma, got, want)
		}
	}
	// RDP is non-decreasing in α and continuous across integer orders, so
	// the fractional series and the integer sum agree.
	prev := 0.0
	for a := 1.1; a < 40; a += 0.1 {
		v := SampledGaussianRDP(0.01, 1.1, a)
		if v < prev*(1-1e-9) {
			t.Fatalf("RDP decreased at α=%v: %v < %v", a, v, prev)
		}
		prev = v
	}
	for _, a := range []float64{2, 3, 8, 20} {
		lo := SampledGaussianRDP(0.01, 1.1, a-1e-7)
		mid := SampledGaussianRDP(0.01, 1.1, a)
		hi := SampledGaussianRDP(0.01, 1.1, a+1e-7)
		if math.Abs(lo-mid) > 1e-5*mid || math.Abs(hi-mid) > 1e-5*mid {
			t.Fatalf("discontinuity at α=%v: %v %v %v", a, lo, mid, hi)
		}
	}
	// Subsampling amplifies privacy.
	if SampledGaussianRDP(0.01, 1, 8) >= SampledGaussianRDP(1, 1, 8) {
		t.Fatal("subsampled RDP not below the full-batch RDP")
	}
}

func TestAccountantComposesAndRestores(t *testing.T) {
	a, _ := NewAccountant(nil)
	b, _ := NewAccountant(nil)
	_ = a.Compose(0.01, 1.0, 20)
	_ = b.Compose(0.02, 1.0, 0) // a different mechanism, zero steps
	for range 20 {
		_ = b.Compose(0.01, 1.0, 1)
	}
	ea, _, _ := a.Epsilon(1e-5)
	eb, _, _ := b.Epsilon(1e-5)
	if math.Abs(ea-eb) > 1e-9*ea {
		t.Fatalf("100 steps at once %v vs one by one %v", ea, eb)
	}
	c, _ := NewAccountant(nil)
	if err := c.Restore(a.RDP()); err != nil {
		t.Fatal(err)
	}
	if ec, _, _ := c.Epsilon(1e-5); ec != ea {
		t.Fatalf("restored %v vs %v", ec, ea)
	}
	bad := []error{
		a.Compose(1.5, 1, 1),
		a.Compose(0.1, 0, 1),
		a.Compose(0.1, 1, -1),
		c.Restore([]float64{1}),
	}
	for i, err := range bad {
		if !errors.Is(err, ErrAccountant) {
			t.Fatalf("case %d: %v", i, err)
		}
	}
	if _, _, err := a.Epsilon(0); !errors.Is(err, ErrAccountant) {
		t.Fatal(err)
	}
	if _, err := NewAccountant([]float64{1}); !errors.Is(err, ErrAccountant) {
		t.Fatal(err)
	}
}

// quadRDP is a float64 numerical-integration reference for the sampled
// Gaussian mechanism (Mironov et al. 2019, Definition of A_α):
// A_α = ∫ μ0(z)·((1-q) + q·μ1(z)/μ0(z))^α dz with μ0 = N(0, σ²),
// μ1 = N(1, σ²); RDP = log(A_α)/(α-1).
func quadRDP(q, sigma, alpha float64) float64 {
	var s float64
	const h = 1e-2 // the integrand is smooth and decays fast: the Riemann sum converges quickly
	for z := -40.0; z < 40+alpha; z += h {
		m0 := math.Exp(-z * z / (2 * sigma * sigma))
		r := (1 - q) + q*math.Exp((2*z-1)/(2*sigma*sigma))
		s += m0 * math.Pow(r, alpha) * h
	}
	return math.Log(s/(sigma*math.Sqrt(2*math.Pi))) / (alpha - 1)
}

func TestSampledGaussianRDPMatchesQuadrature(t *testing.T) {
	for _, q := range []float64{0.001, 0.01, 0.1} {
		for _, sigma := range []float64{0.8, 1.1, 2} {
			for _, alpha := range []float64{1.1, 1.25, 1.5, 2, 2.7, 4, 7.5, 12} {
				got := SampledGaussianRDP(q, sigma, alpha)
				want := quadRDP(q, sigma, alpha)
				if math.Abs(got-want) > 1e-6*want+1e-12 {
					t.Errorf("q=%v σ=%v α=%v: %v, quadrature %v", q, sigma, alpha, got, want)
				}
			}
		}
	}
}
