// Package native holds reference implementations, in Go on gonum's BLAS,
// of the WASM reference models logreg and mlp (wasm-models/c). They use the
// same parameter layout as the modules (per layer: weights [in x out]
// row-major, then bias [out]), so weights move freely between the two; tests
// use them to check the WASM models and benchmarks use them as the native
// speed baseline.
package native

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// MLP is a fully connected network with ReLU hidden layers and a softmax
// output trained with cross-entropy. NewMLP(784, 10) is softmax regression
// (the logreg model); NewMLP(784, 200, 200, 10) is the mlp model.
type MLP struct {
	sizes    []int
	offsets  []int // offset of each layer's weights; bias follows
	params   []float32
	grads    []float32
	maxBatch int
	acts     [][]float32 // acts[0] is the input batch, acts[L] the logits
	deltas   [][]float32
}

// NewMLP returns a zero-initialised network with the given layer sizes
// (input first, classes last). It panics on fewer than two sizes or a
// non-positive size, which are programming errors.
func NewMLP(sizes ...int) *MLP {
	if len(sizes) < 2 {
		panic("native: an MLP needs at least an input and an output size")
	}
	m := &MLP{sizes: append([]int(nil), sizes...)}
	n := 0
	for l := 0; l+1 < len(sizes); l++ {
		if sizes[l] <= 0 || sizes[l+1] <= 0 {
			panic(fmt.Sprintf("native: layer size %v", sizes))
		}
		m.offsets = append(m.offsets, n)
		n += sizes[l]*sizes[l+1] + sizes[l+1]
	}
	m.params = make([]float32, n)
	m.grads = make([]float32, n)
	return m
}

// NumParams returns the number of parameters.
func (m *MLP) NumParams() int { return len(m.params) }

// Params returns the parameter vector itself (not a copy).
func (m *MLP) Params() []float32 { return m.params }

// Grads returns the gradient of the last TrainStep or Gradient call.
func (m *MLP) Grads() []float32 { return m.grads }

// SetParams copies p into the parameters.
func (m *MLP) SetParams(p []float32) error {
	if len(p) != len(m.params) {
		return fmt.Errorf("native: set params: %d values, model has %d", len(p), len(m.params))
	}
	copy(m.params, p)
	return nil
}

func (m *MLP) layers() int { return len(m.sizes) - 1 }

func (m *MLP) weights(l int, v []float32) (w blas32.General, b []float32) {
	in, out := m.sizes[l], m.sizes[l+1]
	o := m.offsets[l]
	return blas32.General{Rows: in, Cols: out, Stride: out, Data: v[o : o+in*out]}, v[o+in*out : o+in*out+out]
}

func (m *MLP) ensure(n int) {
	if n <= m.maxBatch {
		return
	}
	m.maxBatch = n
	m.acts = make([][]float32, len(m.sizes))
	m.deltas = make([][]float32, len(m.sizes))
	for l, s := range m.sizes {
		if l > 0 {
			m.acts[l] = make([]float32, n*s)
		}
		m.deltas[l] = make([]float32, n*s)
	}
}

func mat(rows, cols int, d []float32) blas32.General {
	return blas32.General{Rows: rows, Cols: cols, Stride: cols, Data: d[:rows*cols]}
}

// forward computes the logits of the n samples in x into acts[L].
func (m *MLP) forward(x []float32, n int) {
	m.ensure(n)
	m.acts[0] = x[:n*m.sizes[0]]
	for l := 0; l < m.layers(); l++ {
		w, b := m.weights(l, m.params)
		out := m.sizes[l+1]
		y := m.acts[l+1][:n*out]
		for i := 0; i < n; i++ {
			copy(y[i*out:(i+1)*out], b)
		}
		blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, mat(n, m.sizes[l], m.acts[l]), w, 1, mat(n, out, y))
		if l+1 < m.layers() {
			for i, v := range y {
				if v < 0 {
					y[i] = 0
				}
			}
		}
	}
}

// softmax turns logits of n samples into probabilities in place and returns
// the summed cross-entropy and the number of correct argmax predictions.
func softmax(z []float32, y []int, n, k int) (float64, int) {
	var loss float64
	correct := 0
	for i := 0; i < n; i++ {
		row := z[i*k : (i+1)*k]
		arg := 0
		for j, v := range row {
			if v > row[arg] {
				arg = j
			}
		}
		mx := row[arg]
		zy := row[y[i]]
		var sum float32
		for j, v := range row {
			row[j] = float32(math.Exp(float64(v - mx)))
			sum += row[j]
		}
		for j := range row {
			row[j] /= sum
		}
		loss += math.Log(float64(sum)) - float64(zy-mx)
		if arg == y[i] {
			correct++
		}
	}
	return loss, correct
}

// Evaluate returns the summed loss and correct count of n samples.
func (m *MLP) Evaluate(x []float32, y []int, n int) (float64, int) {
	m.forward(x, n)
	return softmax(m.acts[m.layers()], y, n, m.sizes[len(m.sizes)-1])
}

// Gradient computes the gradient of the mean loss over the n samples into
// Grads and returns the summed loss and correct count.
func (m *MLP) Gradient(x []float32, y []int, n int) (float64, int) {
	L := m.layers()
	loss, correct := m.Evaluate(x, y, n)
	k := m.sizes[L]
	d := m.deltas[L][:n*k]
	copy(d, m.acts[L][:n*k])
	scale := 1 / float32(n)
	for i := 0; i < n; i++ {
		d[i*k+y[i]] -= 1
	}
	for i := range d {
		d[i] *= scale
	}
	for l := L - 1; l >= 0; l-- {
		in, out := m.sizes[l], m.sizes[l+1]
		w, _ := m.weights(l, m.params)
		gw, gb := m.weights(l, m.grads)
		dl := mat(n, out, m.deltas[l+1])
		blas32.Gemm(blas.Trans, blas.NoTrans, 1, mat(n, in, m.acts[l]), dl, 0, gw)
		clear(gb)
		for i := 0; i < n; i++ {
			for j := 0; j < out; j++ {
				gb[j] += dl.Data[i*out+j]
			}
		}
		if l == 0 {
			break
		}
		dprev := mat(n, in, m.deltas[l])
		blas32.Gemm(blas.NoTrans, blas.Trans, 1, dl, w, 0, dprev)
		a := m.acts[l][:n*in]
		for i, v := range a {
			if v <= 0 {
				dprev.Data[i] = 0
			}
		}
	}
	return loss, correct
}

// TrainStep runs one SGD step on n samples: w -= lr*(grad + mu*(w-global)).
// global may be nil when mu is 0. It returns the loss sum and correct count
// before the step.
func (m *MLP) TrainStep(x []float32, y []int, n int, lr, mu float32, global []float32) (float64, int) {
	loss, correct := m.Gradient(x, y, n)
	if mu > 0 {
		for i, g := range m.grads {
			m.params[i] -= lr * (g + mu*(m.params[i]-global[i]))
		}
	} else {
		blas32.Axpy(-lr, blas32.Vector{N: len(m.grads), Inc: 1, Data: m.grads},
			blas32.Vector{N: len(m.params), Inc: 1, Data: m.params})
	}
	return loss, correct
}
