package native

import (
	"math"
	"math/rand/v2"
	"testing"
)

// naive is a float64, loop-only implementation of the same network: the
// reference the gonum version is checked against.
type naive struct {
	sizes  []int
	params []float64
}

func (m *naive) layer(l int, p []float64) (w, b []float64) {
	o := 0
	for k := 0; k < l; k++ {
		o += m.sizes[k]*m.sizes[k+1] + m.sizes[k+1]
	}
	in, out := m.sizes[l], m.sizes[l+1]
	return p[o : o+in*out], p[o+in*out : o+in*out+out]
}

// lossGrad returns the mean cross-entropy over the batch and its gradient.
func (m *naive) lossGrad(x []float32, y []int, n int) (float64, []float64) {
	L := len(m.sizes) - 1
	grad := make([]float64, len(m.params))
	var total float64
	for s := 0; s < n; s++ {
		acts := [][]float64{make([]float64, m.sizes[0])}
		for i := range acts[0] {
			acts[0][i] = float64(x[s*m.sizes[0]+i])
		}
		for l := 0; l < L; l++ {
			w, b := m.layer(l, m.params)
			in, out := m.sizes[l], m.sizes[l+1]
			a := make([]float64, out)
			for j := 0; j < out; j++ {
				a[j] = b[j]
				for i := 0; i < in; i++ {
					a[j] += acts[l][i] * w[i*out+j]
				}
				if l+1 < L && a[j] < 0 {
					a[j] = 0
				}
			}
			acts = append(acts, a)
		}
		z := acts[L]
		mx := z[0]
		for _, v := range z {
			mx = math.Max(mx, v)
		}
		var sum float64
		for _, v := range z {
			sum += math.Exp(v - mx)
		}
		total += math.Log(sum) - (z[y[s]] - mx)
		d := make([]float64, len(z))
		for j, v := range z {
			d[j] = math.Exp(v-mx) / sum / float64(n)
		}
		d[y[s]] -= 1 / float64(n)
		for l := L - 1; l >= 0; l-- {
			w, _ := m.layer(l, m.params)
			gw, gb := m.layer(l, grad)
			in, out := m.sizes[l], m.sizes[l+1]
			prev := make([]float64, in)
			for i := 0; i < in; i++ {
				for j := 0; j < out; j++ {
					gw[i*out+j] += acts[l][i] * d[j]
					prev[i] += w[i*out+j] * d[j]
				}
				if l > 0 && acts[l][i] <= 0 {
					prev[i] = 0
				}
			}
			for j := 0; j < out; j++ {
				gb[j] += d[j]
			}
			d = prev
		}
	}
	return total / float64(n), grad
}

func randomProblem(sizes []int, n int, seed uint64) (*MLP, *naive, []float32, []int) {
	r := rand.New(rand.NewPCG(seed, 0))
	m := NewMLP(sizes...)
	ref := &naive{sizes: sizes, params: make([]float64, m.NumParams())}
	for i := range m.params {
		m.params[i] = float32(r.NormFloat64() * 0.3)
		ref.params[i] = float64(m.params[i])
	}
	x := make([]float32, n*sizes[0])
	for i := range x {
		x[i] = r.Float32()
	}
	y := make([]int, n)
	for i := range y {
		y[i] = r.IntN(sizes[len(sizes)-1])
	}
	return m, ref, x, y
}

// TestGradientMatchesNaive compares the gonum gradient with the float64
// loop reference on several shapes and batch sizes.
func TestGradientMatchesNaive(t *testing.T) {
	cases := []struct {
		sizes []int
		n     int
	}{
		{[]int{5, 3}, 1},
		{[]int{7, 4}, 6},
		{[]int{6, 5, 4, 3}, 3},
		{[]int{20, 16, 16, 10}, 10},
		{[]int{784, 200, 200, 10}, 2},
	}
	for i, tc := range cases {
		m, ref, x, y := randomProblem(tc.sizes, tc.n, uint64(i))
		loss, _ := m.Gradient(x, y, tc.n)
		wantLoss, want := ref.lossGrad(x, y, tc.n)
		if d := math.Abs(loss/float64(tc.n) - wantLoss); d > 1e-4*math.Max(1, wantLoss) {
			t.Fatalf("%v: loss %v, naive %v", tc.sizes, loss/float64(tc.n), wantLoss)
		}
		for j, g := range m.Grads() {
			if d := math.Abs(float64(g) - want[j]); d > 1e-4+1e-3*math.Abs(want[j]) {
				t.Fatalf("%v n=%d: gradient %d = %v, naive %v", tc.sizes, tc.n, j, g, want[j])
			}
		}
	}
}

// TestGradientFiniteDifference checks the reference gradient coordinate by
// coordinate against central differences of the float64 loss, and the
// gonum gradient against central differences of its own float32 loss.
func TestGradientFiniteDifference(t *testing.T) {
	sizes := []int{6, 5, 4, 3}
	m, ref, x, y := randomProblem(sizes, 4, 42)
	_, g := ref.lossGrad(x, y, 4)
	m.Gradient(x, y, 4)
	gn := append([]float32(nil), m.Grads()...)
	for i := range ref.params {
		orig := ref.params[i]
		const h = 1e-6
		ref.params[i] = orig + h
		lp, _ := ref.lossGrad(x, y, 4)
		ref.params[i] = orig - h
		lm, _ := ref.lossGrad(x, y, 4)
		ref.params[i] = orig
		fd := (lp - lm) / (2 * h)
		if math.Abs(fd-g[i]) > 1e-6+1e-5*math.Abs(fd) {
			t.Fatalf("naive parameter %d: gradient %v, finite difference %v", i, g[i], fd)
		}
		// float32 network: larger step, looser tolerance.
		w := m.params[i]
		const h32 = 1e-3
		m.params[i] = w + h32
		lp32, _ := m.Evaluate(x, y, 4)
		m.params[i] = w - h32
		lm32, _ := m.Evaluate(x, y, 4)
		m.params[i] = w
		fd32 := (lp32 - lm32) / 4 / (2 * h32)
		if math.Abs(fd32-float64(gn[i])) > 2e-3+2e-2*math.Abs(fd32) {
			t.Fatalf("gonum parameter %d: gradient %v, finite difference %v", i, gn[i], fd32)
		}
	}
}

// TestTrainStepFedProx checks the update rule, with and without the
// proximal term, against the gradient.
func TestTrainStepFedProx(t *testing.T) {
	for _, mu := range []float32{0, 0.5} {
		m, _, x, y := randomProblem([]int{6, 5, 3}, 3, 7)
		w0 := append([]float32(nil), m.Params()...)
		global := make([]float32, len(w0))
		for i := range global {
			global[i] = w0[i] + 0.1
		}
		m.TrainStep(x, y, 3, 0.1, mu, global)
		for i, g := range m.Grads() {
			want := w0[i] - 0.1*(g+mu*(w0[i]-global[i]))
			if math.Abs(float64(m.Params()[i]-want)) > 1e-6 {
				t.Fatalf("mu=%v param %d: %v, want %v", mu, i, m.Params()[i], want)
			}
		}
	}
	if err := NewMLP(2, 2).SetParams(make([]float32, 5)); err == nil {
		t.Fatal("SetParams accepted the wrong length")
	}
}
