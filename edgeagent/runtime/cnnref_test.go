package runtime

import (
	"context"
	"math"
	"testing"
)

// cnnRef is a float64 reference of the cnn model's maths (c/cnn.c): conv
// 5x5x32 'same' + ReLU, 2x2 max-pool (first maximum wins), conv 5x5x64 +
// ReLU, max-pool, FC 3136->512 + ReLU, FC 512->10, mean softmax
// cross-entropy. It returns the summed loss and the gradient of the mean
// loss, written with plain loops so that it shares nothing with the
// kernels it checks.
func cnnRef(w []float64, x []float32, y []int) (float64, []float64) {
	const (
		s1, c1, s2, c2, s3, h, out, k = 28, 32, 14, 64, 7, 512, 10, 5
		f                             = s3 * s3 * c2
	)
	off := []int{0}
	for _, n := range []int{k * k * c1, c1, k * k * c1 * c2, c2, f * h, h, h * out, out} {
		off = append(off, off[len(off)-1]+n)
	}
	w1, b1, w2, b2, w3, b3, w4, b4 := w[off[0]:], w[off[1]:], w[off[2]:], w[off[3]:], w[off[4]:], w[off[5]:], w[off[6]:], w[off[7]:]
	g := make([]float64, len(w))
	g1, gb1, g2, gb2, g3, gb3, g4, gb4 := g[off[0]:], g[off[1]:], g[off[2]:], g[off[3]:], g[off[4]:], g[off[5]:], g[off[6]:], g[off[7]:]
	n := len(y)
	conv := func(in []float64, s, ci, co int, wt, b []float64) []float64 {
		o := make([]float64, s*s*co)
		for oy := 0; oy < s; oy++ {
			for ox := 0; ox < s; ox++ {
				for c := 0; c < co; c++ {
					v := b[c]
					for ky := 0; ky < k; ky++ {
						for kx := 0; kx < k; kx++ {
							iy, ix := oy+ky-2, ox+kx-2
							if iy < 0 || iy >= s || ix < 0 || ix >= s {
								continue
							}
							for q := 0; q < ci; q++ {
								v += in[(iy*s+ix)*ci+q] * wt[((ky*k+kx)*ci+q)*co+c]
							}
						}
					}
					o[(oy*s+ox)*co+c] = math.Max(v, 0)
				}
			}
		}
		return o
	}
	// convBack takes the gradient d at the ReLU output o and accumulates
	// the weight and bias gradients; it returns the input gradient.
	convBack := func(in, o, d []float64, s, ci, co int, wt, gw, gb []float64) []float64 {
		di := make([]float64, s*s*ci)
		for oy := 0; oy < s; oy++ {
			for ox := 0; ox < s; ox++ {
				for c := 0; c < co; c++ {
					dv := d[(oy*s+ox)*co+c]
					if o[(oy*s+ox)*co+c] <= 0 || dv == 0 {
						continue
					}
					gb[c] += dv
					for ky := 0; ky < k; ky++ {
						for kx := 0; kx < k; kx++ {
							iy, ix := oy+ky-2, ox+kx-2
							if iy < 0 || iy >= s || ix < 0 || ix >= s {
								continue
							}
							for q := 0; q < ci; q++ {
								wi := ((ky*k+kx)*ci+q)*co + c
								gw[wi] += dv * in[(iy*s+ix)*ci+q]
								di[(iy*s+ix)*ci+q] += dv * wt[wi]
							}
						}
					}
				}
			}
		}
		return di
	}
	pool := func(a []float64, s, c int) ([]float64, []int) {
		hs := s / 2
		p, idx := make([]float64, hs*hs*c), make([]int, hs*hs*c)
		for py := 0; py < hs; py++ {
			for px := 0; px < hs; px++ {
				for q := 0; q < c; q++ {
					best := ((2*py)*s+2*px)*c + q
					for _, j := range []int{best, best + c, best + s*c, best + s*c + c} {
						if a[j] > a[best] {
							best = j
						}
					}
					p[(py*hs+px)*c+q], idx[(py*hs+px)*c+q] = a[best], best
				}
			}
		}
		return p, idx
	}
	var loss float64
	for i := 0; i < n; i++ {
		in := make([]float64, s1*s1)
		for j := range in {
			in[j] = float64(x[i*s1*s1+j])
		}
		a1 := conv(in, s1, 1, c1, w1, b1)
		p1, i1 := pool(a1, s1, c1)
		a2 := conv(p1, s2, c1, c2, w2, b2)
		p2, i2 := pool(a2, s2, c2)
		hid := make([]float64, h)
		for j := 0; j < h; j++ {
			v := b3[j]
			for q := 0; q < f; q++ {
				v += p2[q] * w3[q*h+j]
			}
			hid[j] = math.Max(v, 0)
		}
		z := make([]float64, out)
		mx := math.Inf(-1)
		for j := 0; j < out; j++ {
			z[j] = b4[j]
			for q := 0; q < h; q++ {
				z[j] += hid[q] * w4[q*out+j]
			}
			mx = math.Max(mx, z[j])
		}
		var sum float64
		for j := range z {
			sum += math.Exp(z[j] - mx)
		}
		loss += math.Log(sum) - (z[y[i]] - mx)
		dz := make([]float64, out)
		for j := range z {
			dz[j] = math.Exp(z[j]-mx) / sum / float64(n)
		}
		dz[y[i]] -= 1 / float64(n)
		dh := make([]float64, h)
		for j := 0; j < out; j++ {
			gb4[j] += dz[j]
			for q := 0; q < h; q++ {
				g4[q*out+j] += hid[q] * dz[j]
				dh[q] += w4[q*out+j] * dz[j]
			}
		}
		dp2 := make([]float64, f)
		for j := 0; j < h; j++ {
			if hid[j] <= 0 {
				continue
			}
			gb3[j] += dh[j]
			for q := 0; q < f; q++ {
				g3[q*h+j] += p2[q] * dh[j]
				dp2[q] += w3[q*h+j] * dh[j]
			}
		}
		da2 := make([]float64, len(a2))
		for j, src := range i2 {
			da2[src] += dp2[j]
		}
		dp1 := convBack(p1, a2, da2, s2, c1, c2, w2, g2, gb2)
		da1 := make([]float64, len(a1))
		for j, src := range i1 {
			da1[src] += dp1[j]
		}
		convBack(in, a1, da1, s1, 1, c1, w1, g1, gb1)
	}
	return loss, g
}

// TestCNNAgainstFloat64Reference recovers the cnn's gradient from one SGD
// step (w1 = w0 - lr*g) and compares it, tensor by tensor, and the batch
// loss with the float64 reference of the same maths.
func TestCNNAgainstFloat64Reference(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, Config{})
	const n = 11 // more than one conv2 chunk of 8, and an odd tail
	ds := synthetic(t, n, 784, 10, 21)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	in := instance(t, h, "cnn", Options{MaxBatch: 16})
	if err := in.Init(ctx, 9); err != nil {
		t.Fatal(err)
	}
	w0, err := in.Params(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const lr = 1
	r, err := in.TrainBatch(ctx, ds, idx, lr, 0)
	if err != nil {
		t.Fatal(err)
	}
	w1, err := in.Params(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := make([]float64, len(w0))
	for i := range w {
		w[i] = float64(w0[i])
	}
	loss, g := cnnRef(w, ds.X[:n*784], ds.Y[:n])
	if d := math.Abs(r.LossSum-loss) / loss; d > 1e-5 {
		t.Fatalf("batch loss %.7f, reference %.7f (relative difference %.2g)", r.LossSum, loss, d)
	}
	md := in.Metadata()
	for _, tn := range md.Tensors {
		var maxRef, maxDiff float64
		for i := tn.Offset; i < tn.Offset+tn.Size(); i++ {
			gw := float64(w0[i]-w1[i]) / lr
			maxRef = math.Max(maxRef, math.Abs(g[i]))
			maxDiff = math.Max(maxDiff, math.Abs(gw-g[i]))
		}
		t.Logf("%s: max |g| %.3g, max |g - reference| %.3g", tn.Name, maxRef, maxDiff)
		if maxRef == 0 || maxDiff > 1e-3*maxRef {
			t.Errorf("%s: gradient differs from the float64 reference by %.3g (max |g| %.3g)", tn.Name, maxDiff, maxRef)
		}
	}
}
