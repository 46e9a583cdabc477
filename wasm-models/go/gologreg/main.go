//go:build wasip1

// Command gologreg is the softmax-regression model of ABI.md written in Go,
// to show that the fedge model ABI does not depend on C. Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o gologreg.wasm ./go/gologreg
//
// The host calls _initialize (the Go runtime) and then the fedge_* exports.
// Buffers are Go slices kept alive by package variables; Go's collector does
// not move objects, so their addresses are stable between fedge_setup calls.
package main

import (
	"math"
	"strconv"
	"unsafe"
)

const (
	statusOK        = 0
	statusInvalid   = -1
	statusLabel     = -2
	statusState     = -3
	statusNonFinite = -5
)

var (
	ready                 bool
	maxBatch, dim, nclass int
	params, grads, global []float32
	inputs, scores        []float32
	labels                []int32
	result                [2]float32
	meta                  []byte
)

func main() {}

func addr[T any](s []T) int32 {
	if len(s) == 0 {
		return 0
	}
	return int32(uintptr(unsafe.Pointer(&s[0])))
}

//go:wasmexport fedge_abi_version
func abiVersion() int32 { return 1 }

//go:wasmexport fedge_setup
func setup(mb, inputLen, classes int32) int32 {
	ready = false
	if inputLen == 0 {
		inputLen = 784
	}
	if classes == 0 {
		classes = 10
	}
	if mb < 1 || mb > 65536 || inputLen < 1 || inputLen > 1<<20 || classes < 2 || classes > 4096 {
		return statusInvalid
	}
	maxBatch, dim, nclass = int(mb), int(inputLen), int(classes)
	np := dim*nclass + nclass
	params = make([]float32, np)
	grads = make([]float32, np)
	global = make([]float32, np)
	inputs = make([]float32, maxBatch*dim)
	scores = make([]float32, maxBatch*nclass)
	labels = make([]int32, maxBatch)
	shape := strconv.Itoa(dim) + " 1 1"
	if dim == 784 {
		shape = "28 28 1"
	}
	meta = []byte("fedge-model 1\nname logreg-go\ninput " + shape +
		"\nclasses " + strconv.Itoa(nclass) + "\nparams " + strconv.Itoa(np) +
		"\nmax_batch " + strconv.Itoa(maxBatch) +
		"\ntensor w 0 " + strconv.Itoa(dim) + " " + strconv.Itoa(nclass) +
		"\ntensor b " + strconv.Itoa(dim*nclass) + " " + strconv.Itoa(nclass) + "\n")
	ready = true
	return statusOK
}

//go:wasmexport fedge_meta_ptr
func metaPtr() int32 { return addr(meta) }

//go:wasmexport fedge_meta_len
func metaLen() int32 { return int32(len(meta)) }

//go:wasmexport fedge_param_count
func paramCount() int32 { return int32(len(params)) }

//go:wasmexport fedge_params
func paramsPtr() int32 { return addr(params) }

//go:wasmexport fedge_global
func globalPtr() int32 { return addr(global) }

//go:wasmexport fedge_inputs
func inputsPtr() int32 { return addr(inputs) }

//go:wasmexport fedge_labels
func labelsPtr() int32 { return addr(labels) }

//go:wasmexport fedge_scores
func scoresPtr() int32 { return addr(scores) }

//go:wasmexport fedge_result
func resultPtr() int32 { return int32(uintptr(unsafe.Pointer(&result[0]))) }

//go:wasmexport fedge_init
func initParams(seed int64) int32 {
	if !ready {
		return statusState
	}
	s := uint64(seed)
	limit := float32(math.Sqrt(6 / float64(dim+nclass)))
	w := params[:dim*nclass]
	for i := range w {
		s += 0x9e3779b97f4a7c15
		z := s
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		u := float32(z>>40) / (1 << 24)
		w[i] = (2*u - 1) * limit
	}
	clear(params[dim*nclass:])
	return statusOK
}

func checkBatch(n int32) int32 {
	if !ready {
		return statusState
	}
	if n < 1 || int(n) > maxBatch {
		return statusInvalid
	}
	for _, y := range labels[:n] {
		if y < 0 || int(y) >= nclass {
			return statusLabel
		}
	}
	return statusOK
}

// forward writes softmax probabilities of n samples to scores and, when
// withLabels, the summed loss and correct count to result.
func forward(n int, withLabels bool) {
	w, b := params[:dim*nclass], params[dim*nclass:]
	var loss, correct float32
	for i := 0; i < n; i++ {
		x, p := inputs[i*dim:(i+1)*dim], scores[i*nclass:(i+1)*nclass]
		copy(p, b)
		for f, xv := range x {
			if xv == 0 {
				continue
			}
			row := w[f*nclass : (f+1)*nclass]
			for j := range p {
				p[j] += xv * row[j]
			}
		}
		arg, mx := 0, p[0]
		for j, v := range p {
			if v > mx {
				arg, mx = j, v
			}
		}
		zy := float32(0)
		if withLabels {
			zy = p[labels[i]]
		}
		var sum float32
		for j, v := range p {
			p[j] = float32(math.Exp(float64(v - mx)))
			sum += p[j]
		}
		for j := range p {
			p[j] /= sum
		}
		if withLabels {
			loss += float32(math.Log(float64(sum))) - (zy - mx)
			if arg == int(labels[i]) {
				correct++
			}
		}
	}
	result = [2]float32{loss, correct}
}

//go:wasmexport fedge_train
func train(n int32, lr, mu float32) int32 {
	if rc := checkBatch(n); rc != statusOK {
		return rc
	}
	if lr != lr || mu != mu || mu < 0 {
		return statusInvalid
	}
	forward(int(n), true)
	if l := float64(result[0]); math.IsNaN(l) || math.IsInf(l, 0) {
		return statusNonFinite
	}
	clear(grads)
	gw, gb := grads[:dim*nclass], grads[dim*nclass:]
	scale := 1 / float32(n)
	for i := 0; i < int(n); i++ {
		p := scores[i*nclass : (i+1)*nclass]
		p[labels[i]] -= 1
		x := inputs[i*dim : (i+1)*dim]
		for j := range p {
			d := p[j] * scale
			gb[j] += d
			p[j] = d
		}
		for f, xv := range x {
			if xv == 0 {
				continue
			}
			row := gw[f*nclass : (f+1)*nclass]
			for j, d := range p {
				row[j] += xv * d
			}
		}
	}
	for i := range params {
		g := grads[i]
		if mu > 0 {
			g += mu * (params[i] - global[i])
		}
		params[i] -= lr * g
	}
	return statusOK
}

//go:wasmexport fedge_evaluate
func evaluate(n int32) int32 {
	if rc := checkBatch(n); rc != statusOK {
		return rc
	}
	forward(int(n), true)
	return statusOK
}

//go:wasmexport fedge_predict
func predict(n int32) int32 {
	if !ready {
		return statusState
	}
	if n < 1 || int(n) > maxBatch {
		return statusInvalid
	}
	forward(int(n), false)
	return statusOK
}
